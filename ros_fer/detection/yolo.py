"""ultralytics YOLO: a pose model (people with 17 keypoints: faces come from the head keypoints) or a COCO
model's person class for bodies, plus an optional face model; on the GPU where there is one.

Weights: a path, or an ultralytics asset name such as `yolo11n-pose.pt`, looked up in ros_fer's cache
(~/.cache/ros_fer/yolo), ultralytics' weights folder and the working directory, and fetched once into
ros_fer's cache on a connected machine. On the CPU the model runs through torch, onnxruntime or OpenVINO
(ultralytics' own ONNX and OpenVINO exports, made once and cached in ros_fer's cache)."""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ..errors import ConfigError, WeightsUnavailableError
from ..paths import cache_dir, file_digest
from .base import Detections, empty_boxes

PERSON = 0  # COCO class id
MAX_GRAPHS = 4  # frame sizes a detector keeps CUDA graphs for
# The best-scoring anchors of a frame brought to the host in one copy for the score threshold and NMS there
# (a fixed shape, so it is part of the detector's CUDA graph); more above the threshold: decoded on the device.
CANDIDATES = 1024
RUNTIMES = ("auto", "torch", "onnx", "openvino")


def yolo_cache() -> Path:
    return cache_dir() / "yolo"


def _quiet_ultralytics() -> None:
    # Never pip-install at run time on a robot; ultralytics' settings file goes where its config dir says.
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")


def find_weights(weights: str) -> Path | None:
    """A local file for `weights` (a path, or a bare asset name in the usual places), else None."""
    path = Path(weights).expanduser()
    if path.is_file():
        return path
    if path.name != weights:  # a path that is not there
        return None
    _quiet_ultralytics()
    from ultralytics.utils import SETTINGS

    for folder in (yolo_cache(), Path(SETTINGS["weights_dir"]), Path.cwd()):
        if (folder / weights).is_file():
            return folder / weights
    return None


def fetch_weights(weights: str) -> Path:
    """Download an ultralytics asset once into ros_fer's cache. Raises WeightsUnavailableError offline."""
    _quiet_ultralytics()
    from ultralytics.utils import is_online
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES, attempt_download_asset

    name = Path(weights).name
    if name != weights or name not in GITHUB_ASSETS_NAMES:
        raise WeightsUnavailableError(f"YOLO weights {weights!r} not found, and it is no ultralytics asset to fetch")
    if not is_online():
        raise WeightsUnavailableError(f"YOLO weights {weights!r} are not cached and this machine is offline")
    target = yolo_cache() / name
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        attempt_download_asset(str(target))
    except Exception as exc:  # noqa: BLE001 - any network failure means: not available
        raise WeightsUnavailableError(f"YOLO weights {weights!r} could not be fetched: {exc}") from exc
    if not target.is_file():
        raise WeightsUnavailableError(f"YOLO weights {weights!r} could not be fetched into {target}")
    return target


def missing_weights_error(weights: str, reason: str) -> ConfigError:
    return ConfigError(
        f"{reason}. Fetch them once on a connected machine (`ros-fer infer` with detector: yolo fetches them into "
        f"{yolo_cache()}, or `yolo predict model={Path(weights).name}`), then copy the file there or give its path "
        "in person_weights/face_weights; or use detector: opencv."
    )


def resolve_weights(weights: str) -> str:
    """A loadable weights string: a local file, a *.yaml model definition (random weights, for tests), or
    the asset fetched now. Raises WeightsUnavailableError when it cannot be had."""
    if weights.endswith((".yaml", ".yml")):
        return weights
    local = find_weights(weights)
    if local is not None:
        return str(local)
    return str(fetch_weights(weights))


def weights_digest(weights: str) -> str:
    """What a weights file holds, for cache keys: its sha256 (16 hex digits), remembered by path, size and
    modification time (`paths.file_digest`: a start asks for it up to four times, and large weights take
    long to hash); `builtin` for a *.yaml model."""
    path = Path(weights)
    return file_digest(path, yolo_cache() / "digests.json") if path.is_file() else "builtin"


# ultralytics' exports the CPU runs YOLO through: the cached name's ending and the export's options
# (ONNX: a file, unsimplified; OpenVINO: an fp32 IR folder, complete once its metadata.yaml is there). Both
# with a dynamic input, so a 640x480 frame runs at 640x480 as with torch rather than letterboxed to 640x640:
# OpenVINO 31.5-33.5 ms a frame against 36.6-40.2 static on machine B, YOLO11n-pose (the first run at a new
# size compiles it, ~150 ms once); onnxruntime 74 ms against 124 static on machine A.
EXPORTS = {
    "onnx": (".dynamic.onnx", {"simplify": False, "dynamic": True}),
    "openvino": (".dynamic_openvino_model", {"half": False, "dynamic": True}),
}


MAX_WH = 7680  # ultralytics' class offset for per-class NMS
# this package's runners (`pose_runners`) of a pose model without faces: what the probe times, in its key
OWN_RUNNERS = {
    "openvino": "static per frame size, uint8 in (OpenVinoPose)",
    "onnx": "dynamic, float in, threads not spinning (OnnxPose)",
}


SCRATCH = ".export-"  # the prefix of an export's scratch folder in the cache
SCRATCH_STALE_S = 3600.0  # a scratch folder untouched this long was left by an export that was killed


def cached_export(model, weights: str, imgsz: int, fmt: str) -> str:
    """ultralytics' `fmt` export (EXPORTS) of `model`, made once per weights file and input size, cached in
    yolo_cache()."""
    ending, options = EXPORTS[fmt]
    target = yolo_cache() / f"{Path(weights).stem}.{weights_digest(weights)}.{imgsz}{ending}"
    if _complete(target):
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_scratch(target.parent)
    # ultralytics writes an export beside the weights file it loaded: into a folder that may be read-only, over
    # a file of the user's own of the same name (their pose.onnx). So it exports a link to the weights in a
    # scratch folder of the cache, one per start: two starts exporting at once never share a file either.
    with tempfile.TemporaryDirectory(prefix=SCRATCH, dir=target.parent) as scratch:
        link = Path(scratch) / "weights.pt"
        try:
            link.symlink_to(Path(weights).resolve())
        except OSError:  # no links on this file system
            shutil.copyfile(weights, link)
        source = type(model)(str(link), task=model.task)
        with torch_threads():  # its device set-up leaves torch on cores - 1 threads (1 of 2) for good
            made = Path(source.export(format=fmt, imgsz=imgsz, verbose=False, **{"dynamic": False, **options}))
        if not _complete(target):  # else another start made it meanwhile: that one is kept
            if target.is_dir():
                shutil.rmtree(target, ignore_errors=True)  # a folder an interrupted export left
            try:
                os.replace(made, target)
            except OSError:  # a folder put there by another start in the meantime
                if not _complete(target):
                    raise
    return str(target)


def remove_stale_scratch(folder: Path, older_than_s: float = SCRATCH_STALE_S) -> None:
    """Removes the scratch folders of exports that were killed half-way (a kill skips TemporaryDirectory's
    clean-up: ~12 MB each for yolo11n-pose, never read again). An export takes seconds, so a folder left
    untouched for an hour is no other start's, still at work."""
    now = time.time()
    for scratch in folder.glob(f"{SCRATCH}*"):
        try:
            stale = scratch.is_dir() and now - scratch.stat().st_mtime > older_than_s
        except OSError:  # removed by another start meanwhile
            continue
        if stale:
            shutil.rmtree(scratch, ignore_errors=True)


def _complete(export: Path) -> bool:
    """A cached export whole: the ONNX file (put in place in one rename), or an IR folder with its metadata."""
    return export.is_file() or (export / "metadata.yaml").is_file()


def runtime_candidates() -> list[str]:
    """The runtimes `detector_runtime: auto` weighs on this machine: torch, onnxruntime, and OpenVINO where
    it is installed."""
    from ..measured import openvino_version

    return ["torch", "onnx"] + (["openvino"] if openvino_version() else [])


@contextlib.contextmanager
def torch_threads(inside: int | None = None):
    """torch on `inside` threads within (None: as it is), and the process's count again after, whatever the
    body set (ultralytics' device set-up sets cores - 1). One thread for a few small tensors: with 2+, torch's
    OpenMP workers spin on after the last op (libgomp's GOMP_SPINCOUNT, ~7 ms of a core on machine B)."""
    import torch

    threads = torch.get_num_threads()
    if inside is not None and inside != threads:
        torch.set_num_threads(inside)
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def runtime_choice(yolo, model, weights: str, imgsz: int, predict, own=None) -> dict:
    """`detector_runtime: auto` on the CPU: torch, onnxruntime and OpenVINO (ultralytics' ONNX and OpenVINO
    exports) each timed on the sample frame (people from a real photograph), the fastest taken; measured once
    per machine, weights and input size, then cached (`measured.cached_choice`, the rule the encoder's
    runtime follows). A candidate whose export or first run fails (a broken install, an unwritable cache) is
    left out with the reason (`rejected`), and the start goes on with the others; torch is always there.
    `own(runtime, export)`: the detector's own runner of an export (`pose_runners`), timed instead of
    ultralytics' predict over it, or None where it has none."""
    from ..crops import sample_frame
    from ..machine import describe_cpu
    from ..measured import cached_choice, time_settled

    frame = sample_frame(2)[0]
    rgb = np.ascontiguousarray(frame[:, :, ::-1])
    names = runtime_candidates()

    def measure() -> dict:
        calls, rejected = {}, {}
        for name in names:
            try:
                export = None if name == "torch" else cached_export(model, weights, imgsz, name)
                runner = own(name, export) if own is not None and export is not None else None
                if runner is not None:
                    call = lambda runner=runner: runner(rgb)  # noqa: E731
                else:
                    candidate = model if export is None else yolo(export, task=model.task)
                    call = lambda m=candidate: predict(m, frame, None)  # noqa: E731
                call()  # its first run: a runtime that cannot run is left out here
                calls[name] = [call]
            except Exception as exc:  # noqa: BLE001 - any failure of an optional runtime leaves it out
                if name == "torch":
                    raise
                rejected[name] = f"{type(exc).__name__}: {exc}"[:300]
        timed, settled = time_settled(calls)  # all timed in turn; a close call timed again, the two alone
        ms = {name: round(per[0], 2) for name, per in timed.items()}
        choice = {"runtime": min(ms, key=ms.get), "ms": ms, "imgsz": imgsz, "machine": describe_cpu()}
        if settled:
            choice["timed_again"] = settled
        return {**choice, "rejected": rejected} if rejected else choice

    key = {"weights": weights_digest(weights), "imgsz": imgsz, "runtimes": names}
    if own is not None:
        key["own_runners"] = OWN_RUNNERS  # timed through this package's runner, not ultralytics' predict
    return cached_choice("detector", key, measure)


def describe_detector_choice(choice: dict) -> str:
    from ..measured import said_timed_again

    ms = ", ".join(f"{name} {v:.0f} ms" for name, v in choice["ms"].items())
    when = f"cached in {choice['cached']}" if choice.get("cached") else "measured now"
    left_out = "".join(f"; {name} left out ({why})" for name, why in choice.get("rejected", {}).items())
    again = said_timed_again(choice)
    return f"detector_runtime auto: {choice['runtime']} at imgsz {choice['imgsz']} ({ms}{again}; {when}{left_out})"


class YoloDetector:
    name = "yolo"

    def __init__(
        self,
        person_weights: str,
        face_weights: str = "",
        device: str = "cpu",
        confidence: float = 0.4,
        imgsz: int = 640,
        runtime: str = "auto",
        max_det: int = 100,
        cuda_graphs: bool = False,
    ):
        _quiet_ultralytics()
        from ultralytics import YOLO

        if runtime not in RUNTIMES:
            raise ConfigError(f"detector_runtime must be one of {RUNTIMES}, got {runtime!r}")
        if not (person_weights or face_weights):
            raise ConfigError("the yolo detector needs person_weights, face_weights or both")
        self.device, self.confidence, self.imgsz, self.max_det = device, confidence, imgsz, max_det
        self.person = self.face = None
        # CUDA: torch. CPU: `auto` measures torch, onnxruntime and OpenVINO once per machine and weights
        # (`runtime_choice`) and takes the fastest (README figures: OpenVINO 2-3x torch on an AMX Xeon).
        self.runtime = "torch" if str(device).startswith("cuda") else runtime
        self.choice: dict | None = None  # what `auto` measured and chose (None: nothing measured)
        self.person_path = ""  # the resolved person weights (a file, or a *.yaml definition)
        self.cuda_graphs = cuda_graphs and str(device).startswith("cuda")
        self._device_model = None  # the pose module on the frame's device, made at the first detect_tensor
        self._graphs: dict[tuple, object] = {}  # per frame size: letterbox and forward, one CUDA graph
        # A pose model without a face model on OpenVINO or onnxruntime: this package's runner
        # (`pose_runners`), else ultralytics' predict
        self.runner = None
        self._runners: dict[str, object] = {}  # made by the probe, kept for the one it chooses
        self._faces_asked = bool(face_weights)
        if person_weights:
            self.person, self.person_path = self._load(YOLO, person_weights, own=True)
        if face_weights:
            self.face, _ = self._load(YOLO, face_weights)
        self.pose = self.person is not None and self.person.task == "pose"
        self.warnings: list[str] = []
        self.notes = [describe_detector_choice(self.choice)] if self.choice else []  # said once at start
        self.name = f"yolo-{'pose' if self.pose else 'detect'}" + ("+face" if self.face is not None else "")

    @property
    def weights_id(self) -> str:
        """Which person weights, for caches of what this detector found (training boxes): name@digest. Hashed
        only when asked, never at start-up."""
        return f"{Path(self.person_path).name}@{weights_digest(self.person_path)}" if self.person_path else ""

    def _load(self, yolo, weights: str, own: bool = False):
        """(the model, the weights it was loaded from). `own`: the person model, which may run on this
        package's runner of its export (`self.runner`)."""
        try:
            path = resolve_weights(weights)
        except WeightsUnavailableError as exc:
            raise missing_weights_error(weights, str(exc)) from exc
        model = yolo(path)
        if not path.endswith(".pt"):  # a *.yaml (random weights, tests) has no file to key an export: torch
            self.runtime = "torch" if self.runtime == "auto" else self.runtime
            return model, path
        if self.runtime == "auto":
            self.choice = runtime_choice(yolo, model, path, self.imgsz, self._predict, self._own if own else None)
            self.runtime = self.choice["runtime"]
        if self.runtime in EXPORTS:
            export = cached_export(model, path, self.imgsz, self.runtime)
            model = yolo(export, task=model.task)
            if own:
                self.runner = self._own(self.runtime, export)
        self._runners.clear()
        return model, path

    def _own(self, runtime: str, export: str):
        """This package's runner of an export, where it has one: OpenVINO or onnxruntime, a pose model, no face
        model. Made once per runtime: the probe's runner is the one kept."""
        from .pose_runners import pose_runner

        if runtime not in self._runners:
            self._runners[runtime] = (
                None if self._faces_asked else pose_runner(runtime, export, self.imgsz, self.confidence, self.max_det)
            )
        return self._runners[runtime]

    def _predict(self, model, bgr: np.ndarray, classes: list[int] | None):
        import torch
        import ultralytics.utils.torch_utils as torch_utils

        # An export (ultralytics holds its path, not a module) runs its network in onnxruntime or OpenVINO; torch
        # only letterboxes and NMSes a few small tensors, on one thread (`torch_threads`): with 2+ its spinning
        # OpenMP workers took a core from the crop threads and the encoder that follow. On one thread the
        # detection took no longer. A torch network runs on the process's threads.
        exported = not isinstance(model.model, torch.nn.Module) and str(self.device).startswith("cpu")
        inside = 1 if exported else torch.get_num_threads()
        # ultralytics' device set-up (its first predict) sets torch to cores - 1 threads (1 of 2): let it set ours
        torch_utils.NUM_THREADS = inside
        with torch_threads(inside):
            return model.predict(
                bgr,
                device=self.device,
                conf=self.confidence,
                imgsz=self.imgsz,
                classes=classes,
                max_det=self.max_det,
                verbose=False,
            )[0]

    @staticmethod
    def _boxes(result) -> np.ndarray:
        boxes = result.boxes
        if boxes is None or len(boxes) == 0:
            return empty_boxes()
        return np.concatenate([boxes.xyxy.cpu().numpy(), boxes.conf.cpu().numpy()[:, None]], 1).astype(np.float32)

    def detect_tensor(self, frame, keypoint_score: float = 0.5) -> Detections | None:
        """Detection from a frame already on the device (uint8 RGB [H, W, 3] tensor): a torch pose model
        without a face model runs letterbox, forward and the choice of the best-scoring anchors there (fp16
        on CUDA; with `cuda_graphs` one CUDA graph per frame size), and those candidates come back in one copy,
        the frame's only wait; the score threshold and NMS run on the host (`detect_pose_tensor`). The faces
        from the head keypoints are worked out on the host too (`crops.associate`, the keypoint rule): a
        handful of numpy operations per person, where the same rule on the device launched about a hundred
        small kernels per frame. None where this detector cannot (onnxruntime, OpenVINO, a face model)."""
        if not (self.pose and self.face is None and self.runtime == "torch"):
            return None
        if self._device_model is None:  # fused (conv + batch norm) once, before any copy per frame size
            model = copy.deepcopy(self.person.model).eval().fuse(verbose=False).to(frame.device)
            self._device_model = model.half() if frame.device.type == "cuda" else model
        bodies, kps = detect_pose_tensor(
            self._device_model, frame, self.confidence, 0.7, self.max_det, self.imgsz, self._candidates
        )
        return Detections(bodies=bodies, bodies_detected=True, keypoints=kps)

    def _candidates(self, frame):
        """`pose_candidates` of a frame tensor: eager, or replayed from the frame size's CUDA graph (letterbox,
        forward and candidates in one). Each size captures its own copy of the module (ultralytics keeps its
        anchors per input size, and a graph must keep reading the ones it was captured with); at most
        MAX_GRAPHS sizes, then eager."""
        key = tuple(frame.shape)
        runner = self._graphs.get(key)
        if runner is None and self.cuda_graphs and len(self._graphs) < MAX_GRAPHS:
            from ..backends.graphs import ShapeGraphs

            model = copy.deepcopy(self._device_model)
            nc = head_classes(model)
            runner = self._graphs[key] = ShapeGraphs(
                lambda f: (pose_candidates(pose_forward(model, f, self.imgsz), CANDIDATES, nc),), capture=True
            )
        if runner is not None:
            return runner(frame)[0]
        return pose_candidates(
            pose_forward(self._device_model, frame, self.imgsz), CANDIDATES, head_classes(self._device_model)
        )

    def detect(self, rgb: np.ndarray) -> Detections:
        if self.runner is not None:  # the RGB frame as it is, no BGR copy
            bodies, keypoints = self.runner(rgb)
            return Detections(faces=empty_boxes(), bodies=bodies, bodies_detected=True, keypoints=keypoints)
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])  # ultralytics takes numpy frames as BGR
        bodies, keypoints = empty_boxes(), None
        if self.person is not None:
            # A pose model finds people only; a COCO detection model is asked for its person class.
            result = self._predict(self.person, bgr, None if self.pose else [PERSON])
            bodies = self._boxes(result)
            if self.pose:
                kp = result.keypoints
                keypoints = (
                    kp.data.cpu().numpy().astype(np.float32).reshape(len(bodies), -1, 3)
                    if kp is not None and len(bodies)
                    else np.zeros((0, 17, 3), np.float32)
                )
        faces = self._boxes(self._predict(self.face, bgr, None)) if self.face is not None else empty_boxes()
        return Detections(faces=faces, bodies=bodies, bodies_detected=self.person is not None, keypoints=keypoints)


# ---- the device path: letterbox, forward and decoding on torch tensors (a GPU frame never leaves the GPU) ----


def letterbox_geometry(h: int, w: int, imgsz: int = 640, stride: int = 32):
    """ultralytics' letterbox for an h x w frame: scale r = min(imgsz / h, imgsz / w), the scaled size, then
    grey padding up to multiples of the stride, evenly on both sides (an odd pixel at the bottom/right).
    Returns (r, (pad_x, pad_y), (scaled h, scaled w, padded h, padded w))."""
    r = min(imgsz / h, imgsz / w)
    nh, nw = round(h * r), round(w * r)
    ph, pw = -nh % stride, -nw % stride
    return r, (pw // 2, ph // 2), (nh, nw, nh + ph, nw + pw)


def letterbox_tensor(frame, imgsz: int = 640, stride: int = 32, fill: float = 114 / 255):
    """A uint8 RGB frame tensor [H, W, 3] (any device) as the pose model's input [1, 3, H', W'] in 0..1
    (`letterbox_geometry`). Returns (input, r, (pad_x, pad_y))."""
    import torch.nn.functional as F

    h, w = frame.shape[:2]
    r, (left, top), (nh, nw, full_h, full_w) = letterbox_geometry(h, w, imgsz, stride)
    x = frame.permute(2, 0, 1)[None].float() / 255
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
    x = F.pad(x, (left, full_w - nw - left, top, full_h - nh - top), value=fill)
    return x.clamp_(0, 1), r, (left, top)


def pose_forward(model, frame, imgsz: int = 640):
    """Letterbox and the pose module's forward: its raw output [1, 4 + nc + 51, anchors]."""
    param = next(model.parameters())
    raw = model(letterbox_tensor(frame, imgsz)[0].to(param.device, param.dtype))
    return raw[0] if isinstance(raw, (tuple, list)) else raw


def head_classes(model) -> int:
    """The pose head's class count (yolo11n-pose.pt: 1)."""
    return int(getattr(model.model[-1], "nc", 1))


def pose_candidates(raw, k: int = CANDIDATES, nc: int = 1):
    """The pose head's raw output [1, 4 + nc + 51, anchors] -> its `k` best-scoring anchors (all of them where
    there are fewer), best first, as float32 rows [k, 4 + 3 + 51]: centre x, y, width, height (letterbox
    pixels), score, class, the anchor's index, then 17 x (x, y, visibility). A fixed shape and no wait for the
    host: the score threshold is applied afterwards, on the host, so it can change without a new graph."""
    import torch

    pred = raw[0].transpose(0, 1)  # [anchors, 4 + nc + 51]
    score, cls = pred[:, 4 : 4 + nc].float().max(dim=1)
    score, order = score.topk(min(k, score.shape[0]))
    rows = pred[order].float()
    columns = [rows[:, :4], score[:, None], cls[order].float()[:, None], order.float()[:, None], rows[:, 4 + nc :]]
    return torch.cat(columns, dim=1)


def decode_candidates(
    rows: np.ndarray,
    conf: float,
    iou: float,
    max_det: int,
    r: float,
    pad: tuple[int, int],
    h: int,
    w: int,
    complete: bool = False,
):
    """`pose_candidates` rows on the host -> (bodies [P, 5] x1 y1 x2 y2 score, keypoints [P, 17, 3]) float32
    numpy in frame pixels: the score threshold, per-class NMS (torchvision), the best `max_det`, the letterbox
    undone. `complete`: the rows are every anchor of the output. Otherwise None when the rows may not hold
    every anchor above the threshold (all of them are above it)."""
    import torch
    from torchvision.ops import nms

    if not complete and len(rows) and rows[:, 4].min() > conf:  # every candidate above it: some may be missing
        return None
    rows = rows[rows[:, 4] > conf]
    rows = rows[np.argsort(rows[:, 6], kind="stable")]  # in anchor order, as ultralytics gives them to NMS:
    # equal scores (random weights have many) are then kept or dropped alike
    cxcy, wh = rows[:, :2], rows[:, 2:4]
    boxes = np.concatenate([cxcy - wh / 2, cxcy + wh / 2], axis=1)
    # ultralytics' per-class NMS: the boxes of each class moved apart by 7680 px (its max_wh), one NMS over all.
    # (torchvision's batched_nms, over 1,000 boxes, runs one NMS per class and sorts their survivors again,
    # unstably: among equal scores another `max_det` than ultralytics' then come first.)
    moved = torch.from_numpy(boxes + rows[:, 5:6] * MAX_WH)
    keep = nms(moved, torch.from_numpy(rows[:, 4]), iou)
    keep = keep[:max_det].numpy()
    boxes, kps = boxes[keep], rows[keep, 7:].reshape(-1, 17, 3).copy()
    for points in (boxes.reshape(-1, 2, 2), kps):  # back to frame pixels, inside the frame
        points[..., 0] = np.clip((points[..., 0] - pad[0]) / r, 0, w)
        points[..., 1] = np.clip((points[..., 1] - pad[1]) / r, 0, h)
    bodies = np.concatenate([boxes, rows[keep, 4:5]], axis=1).astype(np.float32)
    return bodies, kps.astype(np.float32)


def detect_pose_tensor(
    model,
    frame,
    conf: float = 0.4,
    iou: float = 0.7,
    max_det: int = 100,
    imgsz: int = 640,
    candidates=None,
    k: int = CANDIDATES,
):
    """People and their keypoints from a frame tensor [H, W, 3] uint8 RGB on the model's device, with the
    model's own torch module (`YOLO(...).model`, fp16 on CUDA): (bodies [P, 5], keypoints [P, 17, 3]) float32
    numpy in frame pixels. The same letterbox, score threshold and NMS as ultralytics' predict
    (`test_detection`). The `k` best anchors (`pose_candidates`) come to the host in one copy and are decoded
    there (`decode_candidates`); when all of them are above the threshold (a crowd, or a threshold near 0),
    every anchor of the output comes back and is decoded the same way, so nothing is lost.
    `candidates(frame)`: the candidate rows, when not `pose_candidates` of `model` (a detector's CUDA graph)."""
    import torch

    h, w = frame.shape[:2]
    r, pad, _ = letterbox_geometry(h, w, imgsz)
    nc = head_classes(model)
    with torch.inference_mode():
        raw = None if candidates is not None else pose_forward(model, frame, imgsz)
        rows = candidates(frame) if raw is None else pose_candidates(raw, k, nc)
        found = decode_candidates(rows.cpu().numpy(), conf, iou, max_det, r, pad, h, w)
        if found is None:  # the graph's output is not kept: the forward again, only for such frames
            raw = pose_forward(model, frame, imgsz) if raw is None else raw
            every = pose_candidates(raw, raw.shape[-1], nc).cpu().numpy()
            found = decode_candidates(every, conf, iou, max_det, r, pad, h, w, complete=True)
    return found
