"""Face/body/context geometry: who is who (faces matched to bodies), and the batch of crops per frame."""

from __future__ import annotations

import json
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from .detection.base import Detections
from .detection.keypoints import face_from_keypoints
from .errors import ConfigError

FACE_MARGIN = 1.3  # FER data sets crop faces with some forehead and chin
BODY_MARGIN = 1.05


FACE_SOURCES = ("detector", "keypoints", "estimated")  # a face model, the pose model's head keypoints, the body


@dataclass
class Person:
    face: np.ndarray | None  # [5] x1 y1 x2 y2 score, as detected or from keypoints; None: not found
    body: np.ndarray  # [5], detected or derived
    face_detected: bool = True
    body_detected: bool = True
    notes: list[str] = field(default_factory=list)
    keypoints: np.ndarray | None = None  # [17, 3] COCO x, y, score (pose detectors only)
    face_source: str = "detector"

    @property
    def priority(self) -> float:
        """Bigger (closer) and surer people first when the per-frame cap bites: the face's area times its
        score (a face estimated from the body where none was found, so faces are compared with faces)."""
        box = self.face if self.face is not None else estimate_face(self.body)
        return float((box[2] - box[0]) * (box[3] - box[1]) * box[4])


def derive_body(face: np.ndarray, height: int, width: int) -> np.ndarray:
    """A body box from a face: ~3 face widths wide, from above the head to ~7 face heights down."""
    x1, y1, x2, y2, s = face
    w, h, cx = x2 - x1, y2 - y1, (x1 + x2) / 2
    box = [cx - 1.5 * w, y1 - 0.3 * h, cx + 1.5 * w, y1 + 7.0 * h]
    return np.array([max(0, box[0]), max(0, box[1]), min(width, box[2]), min(height, box[3]), s], np.float32)


def estimate_face(body: np.ndarray) -> np.ndarray:
    """Where the head of an upright body box most likely is (used when no face was found)."""
    x1, y1, x2, y2, s = body
    side = min(0.5 * (x2 - x1), 0.2 * (y2 - y1))
    cx = (x1 + x2) / 2
    return np.array([cx - side / 2, y1 + 0.02 * (y2 - y1), cx + side / 2, y1 + 0.02 * (y2 - y1) + side, s], np.float32)


def associate(det: Detections, height: int, width: int, max_persons: int, keypoint_score: float = 0.5) -> list[Person]:
    """Each face joins the tightest unused body whose upper half holds the face centre; leftover faces
    get a derived body. A leftover body with pose keypoints gets its face from the head keypoints
    (`detection.keypoints`), else an estimated face. At most `max_persons`, closest first."""
    persons: list[Person] = []
    used = np.zeros(len(det.bodies), bool)
    kps = det.keypoints
    for face in det.faces[np.argsort(-det.faces[:, 4])]:
        cx, cy = (face[0] + face[2]) / 2, (face[1] + face[3]) / 2
        b = det.bodies
        inside = (b[:, 0] <= cx) & (cx <= b[:, 2]) & (b[:, 1] <= cy) & (cy <= b[:, 1] + 0.5 * (b[:, 3] - b[:, 1]))
        candidates = np.flatnonzero(inside & ~used)
        if len(candidates):
            best = candidates[np.argmin(((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[candidates])]
            used[best] = True
            persons.append(Person(face=face, body=b[best], keypoints=None if kps is None else kps[best]))
        else:
            note = "body derived from face" + ("" if det.bodies_detected else " (no body detector)")
            persons.append(Person(face=face, body=derive_body(face, height, width), body_detected=False, notes=[note]))
    for i in np.flatnonzero(~used):
        body, kp = det.bodies[i], None if kps is None else kps[i]
        why = "no face found"
        if kp is not None:
            face, why = face_from_keypoints(kp, body, height, width, keypoint_score)
            if face is not None:
                persons.append(Person(face=face, body=body, keypoints=kp, face_source="keypoints"))
                continue
        persons.append(
            Person(
                face=None,
                body=body,
                face_detected=False,
                notes=[f"{why}: face estimated from body"],
                keypoints=kp,
                face_source="estimated",
            )
        )
    persons.sort(key=lambda p: -p.priority)
    return persons[:max_persons]


def square(box: np.ndarray, scale: float) -> np.ndarray:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = max(box[2] - box[0], box[3] - box[1]) * scale / 2
    return np.array([cx - half, cy - half, cx + half, cy + half], np.float32)


def letterbox_box(height: int, width: int) -> np.ndarray:
    """The square around the whole frame, centred: the context crop (nothing of the situation cut away)."""
    side = max(height, width)
    return np.array([(width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2], np.float32)


# Box coordinates are continuous: pixel (i, j) covers [j, j+1) x [i, i+1), its centre at (j + 0.5, i + 0.5).
# Host crops (OpenCV) and device crops (torchvision roi_align) share this convention and the boxes below.


def pyramid_level(side: float, size: int) -> int:
    """The level of the frame's image pyramid (level L: 2^L x 2^L means) a square of `side` pixels is cut
    from: the deepest where it still spans at least `size` pixels, so the last step shrinks less than 2x."""
    return max(0, int(math.floor(math.log2(max(side, 1e-3) / size))))


class Pyramid:
    """A frame's 2x2-mean pyramid, levels made as crops ask for them (one frame, many crops): level L+1 is
    level L's 2x2 means (rounded as OpenCV's INTER_AREA rounds: (sum + 2) // 4), an odd last row or column
    dropped. `crop_tensor` builds the same levels on the device."""

    def __init__(self, rgb: np.ndarray):
        self.levels = [np.ascontiguousarray(rgb)]  # a view (reversed channels) would be copied per crop
        self.lock = threading.Lock()  # crops cut by several threads: each level made once

    def __getitem__(self, level: int) -> np.ndarray:
        if level < len(self.levels):
            return self.levels[level]
        with self.lock:
            while len(self.levels) <= level:
                top = self.levels[-1]
                h, w = top.shape[0] // 2, top.shape[1] // 2
                if h == 0 or w == 0:
                    return top
                self.levels.append(cv2.resize(top[: 2 * h, : 2 * w], (w, h), interpolation=cv2.INTER_AREA))
            return self.levels[level]


def crop_square(rgb: np.ndarray | Pyramid, box: np.ndarray, size: int, out: np.ndarray | None = None) -> np.ndarray:
    """The square `box` (may reach outside the frame: zero-padded) resized to size x size: cut bilinearly
    from the pyramid level where the box spans between 1 and 2 crop sizes (`pyramid_level`), so shrinking
    averages every source pixel (no aliasing) at the cost of one small warp. Pass a `Pyramid` to share
    its levels between the crops of a frame, and `out` (uint8 [size, size, 3], contiguous) to have the crop
    written there."""
    pyramid = rgb if isinstance(rgb, Pyramid) else Pyramid(rgb)
    x1, y1, x2, _ = (float(v) for v in box[:4])
    level = pyramid_level(x2 - x1, size)
    image, scale = pyramid[level], 2.0**level
    x1, y1, side = x1 / scale, y1 / scale, max(x2 - x1, 1e-3) / scale
    # Crop pixel u samples x1 + (u + 0.5) * s in continuous coordinates (pixel centre j + 0.5), i.e. source
    # pixel index x1 + (u + 0.5) * s - 0.5; OpenCV's map is the inverse of that.
    s = side / size
    m = np.array([[1 / s, 0, (0.5 - x1) / s - 0.5], [0, 1 / s, (0.5 - y1) / s - 0.5]], np.float32)
    return cv2.warpAffine(
        image,
        m,
        (size, size),
        dst=out,
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )


def context_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """The whole frame, letterboxed to a square so nothing of the situation is cut away."""
    return crop_square(rgb, letterbox_box(*rgb.shape[:2]), size)


def crop_boxes(
    persons: list[Person], levels: tuple[str, ...], height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """The geometry of a frame's crops, shared by the host and the device crops: each distinct square box
    once (float32 [N, 4]) and per person the box of each level (int64 [P, L]). The context box is the same
    for every person of a frame, so it appears (and is later encoded) once: P persons need 2P + 1 crops."""
    boxes: list[np.ndarray] = []
    index = np.empty((len(persons), len(levels)), np.int64)
    context = None
    for i, person in enumerate(persons):
        for j, level in enumerate(levels):
            if level == "context":
                if context is None:
                    context = len(boxes)
                    boxes.append(letterbox_box(height, width))
                index[i, j] = context
                continue
            if level == "face":
                face = person.face if person.face is not None else estimate_face(person.body)
                boxes.append(square(face, FACE_MARGIN))
            else:
                boxes.append(square(person.body, BODY_MARGIN))
            index[i, j] = len(boxes) - 1
    return (np.stack(boxes) if boxes else np.zeros((0, 4), np.float32)), index


@dataclass
class CropBatch:
    """A frame's crops for the encoder: each distinct crop once, and per person the crop of each level.
    `images` is a numpy array for host crops, a torch tensor on the backend's device for device crops."""

    images: np.ndarray  # uint8 [N, size, size, 3] RGB
    index: np.ndarray  # int64 [P, L]: person p's level l is images[index[p, l]]

    def dense(self) -> np.ndarray:
        """[P, L, size, size, 3], as training and the paper's per-person view see them."""
        return self.images[self.index]


class _CropWorkers:
    """The threads that share a frame's host crops. OpenCV's own threading is off once ultralytics is
    imported (`cv2.setNumThreads(0)`), so 17 warps of 8 persons ran one after another on one core; they
    release the GIL, so plain threads share them out. One pool per process: a DataLoader worker forked
    from a process that had one gets its own (a forked pool has no threads and would wait for ever)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.pool: ThreadPoolExecutor | None = None
        self.size = 0
        self.pid = 0

    def get(self, workers: int) -> ThreadPoolExecutor:
        with self.lock:
            if self.pool is None or self.size != workers or self.pid != os.getpid():
                if self.pool is not None and self.pid == os.getpid():
                    self.pool.shutdown(wait=False)
                self.pool = ThreadPoolExecutor(workers, thread_name_prefix="ros_fer-crops")
                self.size, self.pid = workers, os.getpid()
            return self.pool


_WORKERS = _CropWorkers()


def crop_workers() -> int:
    """How many threads cut a frame's host crops: torch's intra-op threads, the CPU budget the encoder
    uses too (`OMP_NUM_THREADS`; 1 in a DataLoader worker), which waits for the crops meanwhile."""
    return max(1, torch.get_num_threads())


def crop_batch(
    rgb: np.ndarray, persons: list[Person], levels: tuple[str, ...], size: int, workers: int | None = None
) -> CropBatch:
    """Per person the crops of the requested levels, in level order, cut on the host (OpenCV), shared out
    over `workers` threads (default `crop_workers()`)."""
    boxes, index = crop_boxes(persons, levels, *rgb.shape[:2])
    pyramid = Pyramid(rgb)  # shared: the context and large body crops come from its first levels
    if len(boxes):  # the levels made before the threads read them (they would wait for the lock)
        pyramid[max(pyramid_level(float(b[2]) - float(b[0]), size) for b in boxes)]
    images = np.empty((len(boxes), size, size, 3), np.uint8)

    def cut(rows: range) -> None:
        for i in rows:
            crop_square(pyramid, boxes[i], size, images[i])  # each warp writes its row: no stacking copy

    workers = min(crop_workers() if workers is None else max(1, workers), len(boxes))
    if workers <= 1:
        cut(range(len(boxes)))
        return CropBatch(images, index)
    parts = [range(k, len(boxes), workers) for k in range(workers)]  # interleaved: faces and bodies mixed
    futures = [_WORKERS.get(workers - 1).submit(cut, rows) for rows in parts[1:]]
    cut(parts[0])  # this thread takes a share too
    for future in futures:
        future.result()
    return CropBatch(images, index)


def pyramid_tensor(frame: torch.Tensor, levels: int) -> torch.Tensor:
    """The `Pyramid` of a uint8 RGB frame tensor [H, W, 3], levels 0..`levels`, as one float32 batch
    [levels + 1, 3, H + 2, W + 2]: level L's image at [L, :, 1 : 1 + h_L, 1 : 1 + w_L], zeros around it. One
    pixel of zeros at least around every level: roi_align clamps samples within a pixel of the border to the
    border pixel, OpenCV blends them with the black border; the zeros make both blend with black."""
    h, w = frame.shape[:2]
    canvas = torch.zeros((levels + 1, 3, h + 2, w + 2), dtype=torch.float32, device=frame.device)
    image = frame.permute(2, 0, 1).float()[None]
    for level in range(levels + 1):
        if level and image.shape[2] // 2 and image.shape[3] // 2:  # 2x2 means rounded as INTER_AREA
            image = torch.floor((torch.nn.functional.avg_pool2d(image, 2) * 4 + 2) / 4)
        canvas[level, :, 1 : 1 + image.shape[2], 1 : 1 + image.shape[3]] = image[0]
    return canvas


def cut_crops(frame: torch.Tensor, rois: torch.Tensor, size: int, levels: int) -> tuple[torch.Tensor]:
    """uint8 [N, size, size, 3] crops of `frame` at `rois` [N, 5] (pyramid level, then x1 y1 x2 y2 in that
    level's padded pixels): one `roi_align` over every level (`pyramid_tensor`), one bilinear sample per crop
    pixel. Fixed shapes throughout, so a CUDA graph can replay it (`crop_tensor`'s `graphs`)."""
    from torchvision.ops import roi_align

    cut = roi_align(
        pyramid_tensor(frame, levels), rois, (size, size), spatial_scale=1.0, sampling_ratio=1, aligned=True
    )
    return (cut.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous(),)


class CropGraphs:
    """The device crops on fixed buffers (`graphs.ShapeGraphs` of `cut_crops`), one set per pyramid depth:
    with `capture` (CUDA graphs) one graph per frame size, row count and depth, captured once and replayed.
    At most `limit` of them (each keeps a copy of its frame size's buffers): beyond, new shapes are cut
    eagerly, so a folder of photographs of many sizes does not fill the GPU with graphs."""

    def __init__(self, size: int, capture: bool, limit: int = 16):
        self.size, self.capture, self.limit, self.runners = size, capture, limit, {}

    def __call__(self, frame: torch.Tensor, rois: torch.Tensor, depth: int) -> torch.Tensor:
        from .backends.graphs import ShapeGraphs

        runner = self.runners.get(depth)
        known = runner is not None and ShapeGraphs.key((frame, rois)) in runner.entries
        if not known and sum(len(r.entries) for r in self.runners.values()) >= self.limit:
            return cut_crops(frame, rois, self.size, depth)[0]
        if runner is None:
            size = self.size
            runner = self.runners[depth] = ShapeGraphs(lambda f, r: cut_crops(f, r, size, depth), self.capture)
        return runner(frame, rois)[0]


def crop_tensor(
    frame: torch.Tensor, boxes: np.ndarray, size: int, upload=None, rows: int = 0, graphs: CropGraphs | None = None
) -> torch.Tensor:
    """uint8 [N, size, size, 3] crops of a frame tensor (uint8 [H, W, 3] RGB, on any device): the device twin
    of `crop_square`, same boxes, same pyramid levels (2x2 means, rounded alike), then
    `torchvision.ops.roi_align` with one bilinear sample per crop pixel, zero padding outside the frame
    (`cut_crops`). Matches the host crops to a fraction of a grey level (mean absolute difference; `test_crops`).
    The boxes cross to the device once, as one small array: `upload(array)` (the torch backend's pinned
    buffers on CUDA), else a plain copy. `rows`: the boxes padded (with copies of the first) to this many, so
    a few shapes serve every frame; `graphs`: run on fixed buffers, replayed from CUDA graphs (`CropGraphs`)."""
    if len(boxes) == 0:
        return torch.zeros((0, size, size, 3), dtype=torch.uint8, device=frame.device)
    boxes = np.asarray(boxes, np.float32)
    levels = np.array([pyramid_level(float(b[2] - b[0]), size) for b in boxes])
    rois = np.zeros((max(rows, len(boxes)), 5), np.float32)  # roi_align's (batch = level, x1, y1, x2, y2)
    rois[: len(boxes), 0] = levels
    rois[: len(boxes), 1:] = boxes[:, :4] / (2.0**levels)[:, None] + 1.0  # +1: the zeros around each level
    rois[len(boxes) :] = rois[0]
    rois_t = upload(rois) if upload is not None else torch.from_numpy(rois).to(frame.device)
    depth = int(levels.max())
    cut = cut_crops(frame, rois_t, size, depth)[0] if graphs is None else graphs(frame, rois_t, depth)
    return cut[: len(boxes)]


def crop_batch_tensor(
    frame: torch.Tensor,
    persons: list[Person],
    levels: tuple[str, ...],
    size: int,
    upload=None,
    graphs: CropGraphs | None = None,
) -> CropBatch:
    """`crop_batch` for a frame already on the device: the crops never leave it (`crop_tensor`). With
    `graphs`, the boxes are padded to the crop count of the persons' bucket (`graphs.crops_for`), the count
    the scorer's graphs run, so a frame size needs one crop graph per person bucket."""
    boxes, index = crop_boxes(persons, levels, frame.shape[0], frame.shape[1])
    rows = 0
    if graphs is not None:
        from .backends.graphs import bucket, crops_for

        rows = crops_for(bucket(len(persons)), len(levels), len(boxes))
    return CropBatch(crop_tensor(frame, boxes, size, upload, rows, graphs), index)


def make_crops(rgb: np.ndarray, persons: list[Person], levels: tuple[str, ...], size: int) -> np.ndarray:
    """uint8 [P, L, size, size, 3]: per person the crops of the requested levels, in level order."""
    return crop_batch(rgb, persons, levels, size).dense()


def read_boxes_json(path: Path, error: type[Exception] = ConfigError) -> dict[str, dict]:
    """<root>/boxes.json: a mapping from an image's path relative to the root (`train/happy/001.jpg`) to
    {"face": [x1, y1, x2, y2], "body": [x1, y1, x2, y2]} in pixels, either box optional. The same mapping
    wrapped as {"boxes": {...}} (what make_synthetic.py writes, with a "detector" note) is read too. Anything
    else is an error naming the file, the key and what was expected."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise error(f"{path}: not readable JSON ({exc})") from exc
    if isinstance(data, dict) and isinstance(data.get("boxes"), dict):
        data = data["boxes"]
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping from image path to {{face, body}} boxes, got {type(data).__name__}")
    out = {}
    for key, entry in data.items():
        if not isinstance(entry, dict) or not set(entry) <= {"face", "body", "size"}:
            raise error(f'{path}: {key!r}: expected {{"face": [x1, y1, x2, y2], "body": [...]}}, got {entry!r}')
        for which in ("face", "body"):
            box = entry.get(which)
            if box is None:
                continue
            ok = isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)
            if not ok or not (box[2] > box[0] and box[3] > box[1]):
                raise error(
                    f"{path}: {key!r} {which}: expected four numbers [x1, y1, x2, y2] with x2 > x1 and y2 > y1, "
                    f"got {box!r}"
                )
        out[key.replace("\\", "/")] = {k: entry.get(k) for k in ("face", "body")}
    return out


SAMPLE_FRAME = (640, 480)
TILE = (40, 720, 820, 1180)  # y1, y2, x1, x2 in zidane.jpg: Ancelotti, a frontal face the Haar detector finds
TILE_FACE = (102, 70, 250, 218)  # his face box inside the tile (x1, y1, x2, y2)


def sample_frame(persons: int) -> tuple[np.ndarray, Detections]:
    """A 640x480 BGR frame with `persons` real people (head-and-shoulders tiles of ultralytics' zidane.jpg),
    and where they are: the known face and body boxes. What `ros-fer bench` times and the runtime probe
    measures and checks parity on (`runtime.choose_runtime`)."""
    import ultralytics

    photo = cv2.imread(str(Path(ultralytics.__file__).parent / "assets" / "zidane.jpg"))
    person = photo[TILE[0] : TILE[1], TILE[2] : TILE[3]]
    cols = int(np.ceil(np.sqrt(persons)))
    rows = int(np.ceil(persons / cols))
    cell_w, cell_h = SAMPLE_FRAME[0] // cols, SAMPLE_FRAME[1] // rows
    frame = np.full((SAMPLE_FRAME[1], SAMPLE_FRAME[0], 3), 90, np.uint8)
    scale = min(cell_w / person.shape[1], cell_h / person.shape[0])
    tile = cv2.resize(person, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    faces, bodies = [], []
    for i in range(persons):
        r, c = divmod(i, cols)
        y, x = r * cell_h + (cell_h - tile.shape[0]) // 2, c * cell_w + (cell_w - tile.shape[1]) // 2
        frame[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
        bodies.append([x, y, x + tile.shape[1], y + tile.shape[0], 1.0])
        f = np.asarray(TILE_FACE, np.float32) * scale
        faces.append([x + f[0], y + f[1], x + f[2], y + f[3], 1.0])
    known = Detections(np.asarray(faces, np.float32).reshape(-1, 5), np.asarray(bodies, np.float32).reshape(-1, 5))
    return frame, known


def sample_crops(persons: int, levels, size: int) -> CropBatch:
    """The sample frame's crops (its `persons` real people, at these levels and size): what the runtime probe
    times and checks parity on, and what OpenVINO int8 is calibrated on."""
    bgr, known = sample_frame(persons)
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    return crop_batch(rgb, associate(known, *rgb.shape[:2], persons), tuple(levels), size)
