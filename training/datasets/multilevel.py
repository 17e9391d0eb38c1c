"""Multi-level crops for training, cut by the same code as the runtime (ros_fer.crops): face, body and
context (the whole image). Boxes come from annotations or from the pipeline's detector, computed once and
cached beside the data with the detector's identity, so epochs never re-detect."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ros_fer.crops import FACE_MARGIN, Person, associate, crop_batch, derive_body
from ros_fer.detection import Detections, create_detector
from ros_fer.image_conv import END_MARKERS

from .base import DataError, Sample, Split

BOX_CACHE_VERSION = 2  # bump when the rule that turns detections into boxes changes


def read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DataError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def image_face(w: int, h: int) -> list[float]:
    """The face box of a pre-cropped face image: its central 1/FACE_MARGIN, so that the face crop (the box
    grown by FACE_MARGIN, squared) is exactly the image."""
    mw, mh = w * (1 - 1 / FACE_MARGIN) / 2, h * (1 - 1 / FACE_MARGIN) / 2
    return [mw, mh, w - mw, h - mh]


_BOX_DETECTORS: dict[tuple[str, str], object] = {}


def box_detector(data: dict | None = None, log=None):
    """The detector that fills a data set's boxes: the runtime's default (`detector: auto`: the YOLO pose
    model where its weights can be had, OpenCV's Haar faces otherwise), or as `data.detector` /
    `data.person_weights` say. Made once per process and choice (train and val splits, evaluation share it),
    its fall-back warnings said once, through `log` (default: standard error)."""
    data = data or {}
    key = (str(data.get("detector", "auto")), str(data.get("person_weights", "yolo11n-pose.pt")))
    if key not in _BOX_DETECTORS:
        detector = _BOX_DETECTORS[key] = create_detector(key[0], "cpu", key[1])
        for line in getattr(detector, "warnings", ()):
            (log or (lambda m: print(m, file=sys.stderr)))(f"boxes: {line}")
    return _BOX_DETECTORS[key]


def _identity(detector) -> str:
    weights = getattr(detector, "weights_id", "")
    return f"{detector.name}{':' + weights if weights else ''}/boxes-v{BOX_CACHE_VERSION}"


def _write_json(path: Path, data) -> None:
    """A cache file beside the data, written whole or not at all (a killed run never leaves half a file)."""
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


class TruncatedImage(DataError):
    """An image file cut short (no end-of-image marker)."""


def probe_image(path: Path) -> tuple[int, int]:
    """(width, height) from the image's header, without decoding it. A file that is no image, or a JPEG or
    PNG cut short (no end-of-image marker in its last kilobyte: a truncated download or copy), raises
    DataError naming the file and why."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            (w, h), kind = im.size, im.format
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - 1024))
            tail = fh.read()
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, ImportError) as exc:
        # ImportError: ultralytics patches Image.open to look for a HEIF plugin when PIL knows no format
        raise DataError(f"{path}: not a readable image ({type(exc).__name__})") from None
    end = END_MARKERS.get(str(kind).lower())  # the node's check of compressed frames, on files
    if end is not None and end not in tail:
        raise TruncatedImage(f"{path}: truncated {kind} (no end-of-image marker; re-copy the file)")
    return w, h


def _probe_all(samples: list[Sample], root: Path) -> dict[int, tuple[int, int] | str]:
    """probe_image for each sample: id(sample) -> (w, h), or why it is unusable. Cached in
    <root>/.ros_fer_boxes/images.json by path, size and modification time, so later runs stat, not read."""
    cache_file = root / ".ros_fer_boxes" / "images.json"
    try:
        cache = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    except ValueError:
        cache = {}
    out, dirty = {}, False
    for s in samples:
        key = os.path.relpath(s.path, root)
        try:
            st = s.path.stat()
        except OSError:
            out[id(s)] = "missing image"
            continue
        entry = cache.get(key)
        if not (isinstance(entry, list) and entry[:2] == [st.st_size, st.st_mtime_ns]):
            try:
                entry = [st.st_size, st.st_mtime_ns, *probe_image(s.path)]
            except DataError as exc:
                why = "truncated image" if isinstance(exc, TruncatedImage) else "unreadable image"
                entry = [st.st_size, st.st_mtime_ns, why]
            cache[key], dirty = entry, True
        out[id(s)] = tuple(entry[2:]) if len(entry) == 4 else entry[2]
    if dirty:
        _write_json(cache_file, cache)
    return out


def box_problem(box, w: int, h: int) -> str | None:
    """Why a given (annotated) box cannot be this image's: under 2 px (fractions instead of pixels?), or less
    than half of it inside the image. None when it is usable; boxes may cross the border a little."""
    if box is None:
        return None
    x1, y1, x2, y2 = (float(v) for v in box)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return "box under 2 px (boxes are in pixels, not fractions)"
    inside = max(0.0, min(x2, w) - max(x1, 0)) * max(0.0, min(y2, h) - max(y1, 0))
    return "box outside the image" if inside < 0.5 * (x2 - x1) * (y2 - y1) else None


def fill_boxes(split: Split, root: Path, progress=None, data: dict | None = None, log=None) -> dict[str, int]:
    """Give every sample its face and body box, as the runtime would find them. First every image's header
    is read (cached): an unreadable or truncated image, and a given box that is not this image's (outside it,
    or in fractions), are dropped from the split and counted in `split.skipped`, never a crash mid-epoch or a
    silent wrong crop. Then, in order: annotations; the whole image as the face (`data.image_is_face`,
    pre-cropped face sets such as RAF-DB aligned or FERPlus); the detector's boxes, cached in
    <root>/.ros_fer_boxes/<detector identity>.json so epochs and later runs never re-detect. An annotated face
    (AffectNet) gets the detected body that holds it, else a body derived from it, never another person's. No
    face found: the face stays None and the crops estimate it from the body, as the node does
    (`crops.estimate_face`); nobody found: the whole image is the body."""
    data = data or {}
    counts = {"annotated": 0, "image is the face": 0, "cached": 0, "detected": 0, "no face": 0}
    sizes, kept = _probe_all(split.samples, root), []
    for s in split.samples:
        size = sizes[id(s)]
        why = size if isinstance(size, str) else box_problem(s.face, *size) or box_problem(s.body, *size)
        if why:
            split.skipped[why] += 1
        else:
            kept.append(s)
    split.samples = kept
    if data.get("image_is_face"):
        for s in split.samples:
            w, h = sizes[id(s)]
            s.face = s.face or image_face(w, h)
            s.body = s.body or [0.0, 0.0, float(w), float(h)]
            counts["image is the face"] += 1
        return counts
    todo = [s for s in split.samples if s.face is None or s.body is None]
    counts["annotated"] = len(split.samples) - len(todo)
    if not todo:
        return counts
    detector = box_detector(data, log)
    ident = _identity(detector)
    cache_file = root / ".ros_fer_boxes" / (hashlib.sha1(ident.encode()).hexdigest()[:12] + ".json")
    cache = json.loads(cache_file.read_text())["boxes"] if cache_file.is_file() else {}
    dirty, undecodable = False, set()
    for s in progress(todo) if progress else todo:
        key = os.path.relpath(s.path, root) + ("#face=" + ",".join(f"{v:.1f}" for v in s.face) if s.face else "")
        if key in cache:
            counts["cached"] += 1
        else:
            try:
                rgb = read_rgb(s.path)
            except DataError:  # a header PIL reads but OpenCV cannot decode
                undecodable.add(id(s))
                split.skipped["unreadable image"] += 1
                continue
            h, w = rgb.shape[:2]
            det = detector.detect(rgb)
            if s.face is not None:  # annotated face: only the body is wanted, the one that holds this face
                det = Detections(
                    faces=np.array([[*s.face, 1.0]], np.float32),
                    bodies=det.bodies,
                    bodies_detected=det.bodies_detected,
                    keypoints=det.keypoints,
                )
            people = associate(det, h, w, 1)
            person = people[0] if people else None
            face = None if person is None or person.face is None else person.face[:4].tolist()
            cache[key] = {"face": face, "body": None if person is None else person.body[:4].tolist(), "size": [w, h]}
            counts["detected"] += 1
            dirty = True
        entry = cache[key]
        s.face = s.face or entry["face"]
        s.body = s.body or entry["body"]
        if s.face is None:
            counts["no face"] += 1
    if undecodable:
        split.samples = [s for s in split.samples if id(s) not in undecodable]
    if dirty:
        _write_json(cache_file, {"detector": ident, "boxes": cache})
    return counts


def fill_split_boxes(split: Split, data: dict, progress=None, log=None) -> dict[str, int]:
    """`fill_boxes` for a split as `load_split` gave it: each part of a `combined` data set with its own root
    (box cache) and options, a plain data set with `data.root`. Returns the counts summed over the parts."""
    parts = split.parts or [data]
    total: dict[str, int] = {}
    kept: set[int] = set()
    for n, part in enumerate(parts):
        sub = Split(split.name, split.labels, [s for s in split.samples if s.part == n])
        counts = fill_boxes(sub, Path(part["root"]).expanduser(), progress, part, log)
        total = {k: total.get(k, 0) + v for k, v in counts.items()}
        kept |= {id(s) for s in sub.samples}
        prefix = f"{part['dataset']}[{n}] " if split.parts else ""
        split.skipped.update({prefix + why: k for why, k in sub.skipped.items()})
    split.samples = [s for s in split.samples if id(s) in kept]  # unreadable images and foreign boxes: dropped
    return total


class MultiLevelCrops(Dataset):
    """(crops float [L, 3, S, S] normalised, label). Augmentation is drawn from an RNG keyed by
    (seed, epoch, index), so a resumed or distributed run sees exactly the same images."""

    def __init__(
        self,
        samples: list[Sample],
        levels: tuple[str, ...],
        size: int,
        mean,
        std,
        augment: dict | None = None,
        seed: int = 0,
    ):
        self.samples, self.levels, self.size = samples, levels, size
        self.mean = np.asarray(mean, np.float32) * 255
        self.std = np.asarray(std, np.float32) * 255
        self.augment, self.seed, self.epoch = augment or {}, seed, 0

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _boxes(self, s: Sample, h: int, w: int) -> tuple[np.ndarray | None, np.ndarray]:
        """As the runtime's Person: a face, or None (the crop estimates it from the body); a body, derived
        from the face where only a face is known, the whole image where nobody was found."""
        face = np.array([*s.face, 1.0], np.float32) if s.face is not None else None
        if s.body is not None:
            body = np.array([*s.body, 1.0], np.float32)
        else:
            body = derive_body(face, h, w) if face is not None else np.array([0, 0, w, h, 1.0], np.float32)
        return face, body

    def __getitem__(self, index: int):
        s = self.samples[index]
        rgb = read_rgb(s.path)
        h, w = rgb.shape[:2]
        face, body = self._boxes(s, h, w)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        aug = self.augment
        if aug.get("hflip") and rng.random() < 0.5:
            rgb = np.ascontiguousarray(rgb[:, ::-1])
            body[[0, 2]] = w - body[[2, 0]]
            if face is not None:
                face[[0, 2]] = w - face[[2, 0]]
        if aug.get("color_jitter", 0) > 0:
            j = aug["color_jitter"]
            gain, bias = rng.uniform(1 - j, 1 + j), rng.uniform(-j, j) * 64
            grey = rgb.mean(axis=2, keepdims=True)
            sat = rng.uniform(1 - j, 1 + j)
            rgb = np.clip((grey + (rgb - grey) * sat) * gain + bias, 0, 255).astype(np.uint8)
        # the runtime's own crop function, on a Person built as the runtime builds it
        person = Person(face=face, body=body, face_detected=face is not None)
        crops = crop_batch(rgb, [person], self.levels, self.size).dense()[0]
        x = (crops.astype(np.float32) - self.mean) / self.std  # [L, S, S, 3]
        if aug.get("random_erasing", 0) > 0:
            for crop in x:
                if rng.random() < aug["random_erasing"]:
                    eh, ew = (int(self.size * rng.uniform(0.1, 0.4)) for _ in range(2))
                    y0, x0 = rng.integers(0, self.size - eh), rng.integers(0, self.size - ew)
                    crop[y0 : y0 + eh, x0 : x0 + ew] = rng.normal(0, 1, (eh, ew, 3))
        return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), s.label
