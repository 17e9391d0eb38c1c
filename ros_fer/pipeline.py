"""Frame in, per-person emotions out: detection -> association -> crops -> one batched encoder call ->
head against the text bank -> tracking and smoothing. The only place the stages are strung together."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from .backends.graphs import bucket
from .backends.openvino import keep_signal_stack
from .crops import CropBatch, CropGraphs, Person, associate, crop_batch, crop_batch_tensor, crop_boxes
from .detection import Detections, Detector, create_detector
from .errors import ConfigError, InputShapeError
from .image_conv import decode_bytes, decode_jpeg_tensor, is_jpeg
from .machine import flush_denormals
from .runtime import Runtime, build_runtime, describe_choice, graphs_on, resolve_device
from .tracking import Tracker

MAX_PIXELS = 8192 * 8192


@dataclass
class PersonResult:
    track_id: int
    label: str
    confidence: float
    scores: np.ndarray  # smoothed probabilities, label order
    raw_scores: np.ndarray  # this frame's probabilities
    face_box: np.ndarray | None  # x1 y1 x2 y2 (None: no face was found)
    body_box: np.ndarray  # x1 y1 x2 y2 (detected or derived)
    face_detected: bool
    body_detected: bool
    notes: list[str]
    valence: float = math.nan
    arousal: float = math.nan
    keypoints: np.ndarray | None = None  # [17, 3] COCO x, y, score (pose detectors), else None
    face_source: str = "detector"  # detector | keypoints | estimated (see crops.FACE_SOURCES)

    def to_dict(self) -> dict:
        box = lambda b: None if b is None else [round(float(v), 1) for v in b[:4]]  # noqa: E731
        return {
            "track_id": self.track_id,
            "label": self.label,
            "confidence": round(self.confidence, 4),
            "scores": [round(float(s), 4) for s in self.scores],
            "face_box": box(self.face_box),
            "body_box": box(self.body_box),
            "face_detected": self.face_detected,
            "face_source": self.face_source,
            "body_detected": self.body_detected,
            "keypoints": None
            if self.keypoints is None
            else [[round(float(x), 1), round(float(y), 1), round(float(s), 3)] for x, y, s in self.keypoints],
            "notes": self.notes,
            "valence": None if math.isnan(self.valence) else round(self.valence, 4),
            "arousal": None if math.isnan(self.arousal) else round(self.arousal, 4),
        }


@dataclass
class FrameResult:
    persons: list[PersonResult]
    labels: tuple[str, ...]
    width: int
    height: int
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "width": self.width,
            "height": self.height,
            "labels": list(self.labels),
            "persons": [p.to_dict() for p in self.persons],
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
        }


def check_frame(frame: np.ndarray) -> np.ndarray:
    """Validate a frame (H x W x 3 uint8, or H x W grey) and return it as it is."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        raise InputShapeError(f"frame must be a uint8 numpy array, got {getattr(frame, 'dtype', type(frame))}")
    if frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] != 3) or min(frame.shape[:2]) < 1:
        raise InputShapeError(f"frame must be H x W x 3 (or H x W), got {list(frame.shape)}")
    if frame.shape[0] * frame.shape[1] > MAX_PIXELS:
        raise InputShapeError(
            f"frame of {frame.shape[1]}x{frame.shape[0]} pixels is larger than the {MAX_PIXELS} allowed"
        )
    return frame


def as_rgb(frame: np.ndarray, color: str) -> np.ndarray:
    """Validate a frame (H x W x 3 uint8, or H x W grey) and return it as RGB."""
    frame = check_frame(frame)
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    # One contiguous RGB copy per frame: a reversed-channel view would make every OpenCV call downstream
    # (the detector, each crop) copy the whole frame again (17 crops of 8 persons: 30-47 ms instead of 3.6).
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if color == "bgr" else np.ascontiguousarray(frame)


def rgb_on_device(frame: torch.Tensor, color: str) -> torch.Tensor:
    """A checked frame (`check_frame`) uploaded as it came, made RGB [H, W, 3] where it now is (the device
    path): a grey frame's channel repeated, a BGR frame's channels reversed, each in one copy there, so the
    host does no per-pixel work on the frame before it crosses."""
    if frame.ndim == 2:
        return frame[:, :, None].expand(*frame.shape, 3).contiguous()
    return frame.flip(-1) if color == "bgr" else frame


def as_rgb_tensor(frame: torch.Tensor) -> torch.Tensor:
    """Validate a frame tensor: uint8 RGB [H, W, 3] (e.g. `decode_jpeg_tensor`'s), on any device."""
    if frame.dtype != torch.uint8 or frame.ndim != 3 or frame.shape[2] != 3 or min(frame.shape[:2]) < 1:
        raise InputShapeError(f"a frame tensor must be uint8 [H, W, 3] RGB, got {frame.dtype} {list(frame.shape)}")
    if frame.shape[0] * frame.shape[1] > MAX_PIXELS:
        raise InputShapeError(
            f"frame of {frame.shape[1]}x{frame.shape[0]} pixels is larger than the {MAX_PIXELS} allowed"
        )
    return frame


def parse_frame_size(text: str) -> tuple[int, int]:
    """`640x480` -> (640, 480); anything else is an error naming the parameter."""
    try:
        width, height = (int(v) for v in str(text).lower().split("x"))
        if width > 0 and height > 0:
            return width, height
    except ValueError:
        pass
    raise ConfigError(f"parameter warmup_frame must be WIDTHxHEIGHT (e.g. 640x480) or '', got {text!r}")


@dataclass
class LoadedFrame:
    """A frame where the pipeline works on it: the host RGB array (host detection or crops) and/or the
    device tensor (device path), with the event its upload stream records when the tensor is ready."""

    rgb: np.ndarray | None
    tensor: torch.Tensor | None
    ready: object  # torch.cuda.Event | None
    ms: float  # checking, decoding and queueing the upload

    @property
    def shape(self) -> tuple[int, int]:
        return tuple((self.rgb if self.rgb is not None else self.tensor).shape[:2])

    def host(self) -> np.ndarray:
        """The RGB pixels on the host (a host detector on the device path downloads them once)."""
        if self.rgb is None:
            if self.ready is not None:  # the upload stream's copy or decode must be done first
                self.ready.synchronize()
            self.rgb = self.tensor.cpu().numpy()
        return self.rgb


@dataclass
class PendingFrame:
    """A frame whose scores are on their way (`Pipeline.submit`)."""

    pipeline: Pipeline
    persons: list[Person]
    probs: torch.Tensor | None
    width: int
    height: int
    timings_ms: dict[str, float]
    launched: float
    track_ids: np.ndarray | None = None  # the tracker's ids, assigned while the scores were computed

    def result(self) -> FrameResult:
        """Waits for the scores (the only tensor that comes back), then smooths them per track."""
        pipeline = self.pipeline
        probs = np.zeros((0, len(pipeline.labels)), np.float32) if self.probs is None else self.probs.cpu().numpy()
        t3 = time.perf_counter()
        results = pipeline._results(self.persons, probs, self.track_ids)
        t4 = time.perf_counter()
        timings = {**self.timings_ms, "model": (t3 - self.launched) * 1e3, "track": (t4 - t3) * 1e3}
        timings["total"] = sum(timings.values())
        return FrameResult(results, pipeline.labels, self.width, self.height, timings)


def person_boxes(persons: list[Person]) -> np.ndarray:
    """The persons' body boxes [P, 5] (x1 y1 x2 y2 score), what the tracker follows."""
    return np.stack([p.body for p in persons]) if persons else np.zeros((0, 5), np.float32)


def detector_from_params(params: dict) -> Detector:
    """The detector the perception parameters name (the node's, `ros-fer infer`'s and `ros-fer adapt`'s)."""
    detector = create_detector(
        params["detector"],
        resolve_device(params["device"]),
        params["person_weights"],
        params["face_weights"],
        params["detector_confidence"],
        params["hog_bodies"],
        params["detector_max_side"],
        params["profile_faces"],
        params["detector_runtime"],
        graphs_on(params, resolve_device(params["device"])),
        params["detector_imgsz"],
    )
    keep_signal_stack()  # ultralytics' OpenVINO YOLO (its own Core, probed or kept) swaps it (see there)
    return detector


class Pipeline:
    def __init__(
        self,
        detector: Detector,
        runtime: Runtime,
        max_persons: int = 8,
        tracker: Tracker | None = None,
        valence_arousal: bool = True,
        keypoint_score: float = 0.5,
        device_crops: bool | None = None,
    ):
        self.keypoint_score = keypoint_score
        backend = runtime.backend
        # Host or device crops, chosen once: a CUDA torch backend gets the frame uploaded once and its crops
        # cut there (roi_align), so no crop crosses to the device; on the CPU OpenCV's crops are ~10x faster.
        if device_crops is None:
            device_crops = backend.name == "torch" and str(backend.device).startswith("cuda")
        if device_crops and backend.name != "torch":
            raise ConfigError(f"device crops need the torch backend, not {backend.name}")
        self.device_crops = device_crops
        self.detector, self.runtime, self.max_persons, self.tracker = detector, runtime, max_persons, tracker
        # What the front doors say once at start: fall-backs taken while building the parts.
        self.warnings = [*runtime.warnings, *getattr(detector, "warnings", ()), *runtime.labels.notes()]
        # What the front doors say once at start as information: the measured choices of runtime.
        self.notes = [n for n in (describe_choice(runtime.choice), *getattr(detector, "notes", ())) if n]
        self.labels = runtime.labels.classes
        self._valence_arousal(valence_arousal)
        self.detected_on = ""  # where the last frame's detection ran: device or host
        scorer = getattr(backend, "scorer", None)
        self._scorer = None if scorer is None else scorer(runtime.head, runtime.text)
        # The GPU-resident frame: decoded (JPEG) and uploaded on a second stream, detected and cropped there.
        self.gpu_frame = device_crops and str(backend.device).startswith("cuda")
        # Device crops on the scorer's static shapes (its person buckets): replayed from CUDA graphs with it.
        static = device_crops and getattr(backend, "static", False)
        self._crop_graphs = CropGraphs(runtime.image_size, backend.cuda_graphs) if static else None
        self._upload_stream = torch.cuda.Stream(device=backend.device) if self.gpu_frame else None

    @classmethod
    def from_params(cls, params: dict) -> Pipeline:
        if params["warmup_frame"]:
            parse_frame_size(params["warmup_frame"])  # a typo fails before anything loads
        # before any runtime starts its threads (they inherit it) and before the probes time anything
        flush_denormals()
        runtime = build_runtime(params)
        detector = detector_from_params(params)
        tracker = Tracker(
            runtime.labels.classes,
            params["smoothing"],
            params["hysteresis"],
            params["unknown_threshold"],
            params["track_buffer"],
        )
        return cls(
            detector, runtime, params["max_persons"], tracker, params["valence_arousal"], params["keypoint_score"]
        )

    def warm_up(self, frame: str = "640x480") -> dict:
        """Capture now what the first frames would otherwise stop for: YOLO's graph for a `frame` (WIDTHxHEIGHT)
        of zeros on the device, the scorer's graph of every person bucket up to `max_persons` (the crop
        shapes real frames give: `crops.crop_boxes` of that many people), with device crops the crops' graph
        of each bucket at that frame size, and, on the GPU frame, nvjpeg (one
        JPEG of that size decoded). Only where the torch backend runs
        static shapes (`cuda_graphs`); elsewhere nothing to do. Returns what was warmed and how long it took."""
        backend = self.runtime.backend
        if not getattr(backend, "static", False) or self._scorer is None:
            return {}
        t0 = time.perf_counter()
        done: dict = {"buckets": [], "frame": None}
        width, height = parse_frame_size(frame) if frame else (640, 480)
        detect = getattr(self.detector, "detect_tensor", None)
        zeros = torch.zeros((height, width, 3), dtype=torch.uint8, device=backend.device)
        if frame and detect is not None and getattr(self.detector, "cuda_graphs", False):
            if detect(zeros, self.keypoint_score) is not None:
                done["frame"] = frame
        if self.gpu_frame:  # nvjpeg's first decode sets up its decoder: not on the first compressed frame
            self.decode(cv2.imencode(".jpg", np.zeros((height, width, 3), np.uint8))[1].tobytes())
            done["jpeg"] = True
        levels, size = self.runtime.levels, self.runtime.image_size
        for persons in sorted({bucket(p) for p in range(1, max(self.max_persons, 1) + 1)}):
            # people side by side, 64 px apart, each face inside its body: the crops a frame of them gives
            people = [
                Person(
                    np.array([64 * i + 16, 16, 64 * i + 48, 48, 1], np.float32),
                    np.array([64 * i + 4, 4, 64 * i + 60, min(height, 120), 1], np.float32),
                )
                for i in range(persons)
            ]
            if self._crop_graphs is not None:  # the device crops' graph for this frame size and bucket too
                crops = self.crop(None, people, zeros)
                self._scorer(crops.images, crops.index)
            else:
                boxes, index = crop_boxes(people, levels, max(height, 128), max(width, 64 * persons))
                crops = torch.zeros((len(boxes), size, size, 3), dtype=torch.uint8, device=backend.device)
                self._scorer(crops, index)
            done["buckets"].append(persons)
        if str(backend.device).startswith("cuda"):
            torch.cuda.synchronize(backend.device)
        done["ms"] = round((time.perf_counter() - t0) * 1e3, 1)
        return done

    @staticmethod
    def describe_warm_up(done: dict) -> str:
        """One log line for what `warm_up` captured, '' when nothing."""
        if not done:
            return ""
        frame = f"YOLO at {done['frame']}, " if done.get("frame") else ""
        frame += "nvjpeg, " if done.get("jpeg") else ""
        return f"warm-up: {frame}person buckets {done['buckets']} ready before the first frame ({done['ms']:.0f} ms)"

    def _valence_arousal(self, on: bool) -> None:
        """The label set's valence and arousal per class (None when off: the message carries NaN)."""
        emotions = self.runtime.labels.emotions
        self.valence = np.array([e.valence for e in emotions]) if on else None
        self.arousal = np.array([e.arousal for e in emotions]) if on else None

    def retune(self, params: dict) -> None:
        """The cheap parameters (params.RUNTIME) take effect from the next frame; nothing is reloaded."""
        self.max_persons = int(params["max_persons"])
        self.keypoint_score = float(params["keypoint_score"])
        self._valence_arousal(bool(params["valence_arousal"]))
        if hasattr(self.detector, "confidence"):  # YOLO's score threshold (Haar has none)
            self.detector.confidence = float(params["detector_confidence"])
        if self.tracker is not None:
            self.tracker.retune(params["smoothing"], params["hysteresis"], params["unknown_threshold"])

    def reset(self) -> None:
        """Forget all tracks (a new, unrelated stream of frames begins)."""
        if self.tracker is not None:
            self.tracker.reset()

    def probabilities(self, crops: CropBatch) -> torch.Tensor:
        """Probabilities [P, C] on the backend's device, launched, not waited for: the torch backend's scorer
        (encoder, head and softmax in one call, one CUDA graph per person bucket), else encoder then head."""
        with torch.inference_mode():
            if self._scorer is not None:
                return self._scorer(crops.images, crops.index)
            logits = self.runtime.head(self.runtime.backend.encode(crops.images, crops.index), self.runtime.text)
            return logits.float().softmax(dim=-1)

    def scores(self, crops: CropBatch) -> np.ndarray:
        """Probabilities [P, C] for a frame's crops, on the host."""
        return self.probabilities(crops).cpu().numpy()

    def upload_frame(self, rgb: np.ndarray) -> torch.Tensor:
        """The frame on the backend's device (device crops: a torch backend), through its pinned buffers."""
        return self.runtime.backend.upload(rgb)

    def crop(self, rgb: np.ndarray | None, persons: list[Person], frame_t: torch.Tensor | None = None) -> CropBatch:
        """The frame's crops, cut where the pipeline chose once: on the device from the uploaded frame
        (`frame_t`, uploaded here if not given), or on the host by OpenCV."""
        if self.device_crops:
            frame_t = self.upload_frame(rgb) if frame_t is None else frame_t
            upload = self.runtime.backend.upload  # the boxes through the pinned buffers
            levels, size = self.runtime.levels, self.runtime.image_size
            return crop_batch_tensor(frame_t, persons, levels, size, upload, self._crop_graphs)
        return crop_batch(rgb, persons, self.runtime.levels, self.runtime.image_size)

    def decode(self, data: bytes | np.ndarray, width: int | None = None, height: int | None = None):
        """A compressed frame's pixels where the pipeline works: a JPEG decoded on the GPU (nvjpeg, through
        torchvision) into a uint8 RGB tensor when the frame lives there (device crops on CUDA), else OpenCV on
        the host (a BGR array). `width`/`height`: what its header said (`image_conv.check_compressed`)."""
        if self.gpu_frame and is_jpeg(data):
            return decode_jpeg_tensor(data, self.runtime.backend.device, width, height)
        return decode_bytes(data, width, height)

    def load(self, frame: np.ndarray | torch.Tensor | bytes, color: str = "bgr") -> LoadedFrame:
        """A frame checked and, on the device path, decoded or uploaded there: numpy arrays (`color` order),
        compressed bytes (JPEG, PNG), or a uint8 RGB tensor [H, W, 3] already on the device. On CUDA the work
        is queued on the pipeline's upload stream, so it overlaps whatever the GPU is computing meanwhile."""
        t0 = time.perf_counter()
        stream = self._upload_stream
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            if isinstance(frame, (bytes, bytearray, memoryview)):
                frame, color = self.decode(bytes(frame)), "bgr"
            if isinstance(frame, torch.Tensor) and self.device_crops:
                rgb, tensor = None, as_rgb_tensor(frame).to(self.runtime.backend.device, non_blocking=True)
            elif isinstance(frame, torch.Tensor):  # the host path: the pixels come to the host once
                rgb, tensor = as_rgb_tensor(frame).cpu().numpy(), None
            elif self.device_crops:  # the host copies it once, into the pinned buffer; made RGB on the device
                rgb, tensor = None, rgb_on_device(self.upload_frame(check_frame(frame)), color)
            else:
                rgb, tensor = as_rgb(frame, color), None
            ready = None
            if stream is not None and tensor is not None:
                ready = torch.cuda.Event()
                ready.record(stream)
        return LoadedFrame(rgb, tensor, ready, (time.perf_counter() - t0) * 1e3)

    def submit(self, loaded: LoadedFrame) -> PendingFrame:
        """Detection, association, crops and the scores launched: only boxes and keypoints have come to the
        host so far; `PendingFrame.result()` waits for the scores and tracks."""
        t0 = time.perf_counter()
        if loaded.ready is not None:  # the upload stream's copy or decode first
            torch.cuda.current_stream().wait_event(loaded.ready)
            loaded.tensor.record_stream(torch.cuda.current_stream())
        h, w = loaded.shape
        det = self.detect(loaded)
        t1 = time.perf_counter()
        persons = associate(det, h, w, self.max_persons, self.keypoint_score)
        crops = self.crop(loaded.rgb, persons, loaded.tensor)
        t2 = time.perf_counter()
        probs = self.probabilities(crops) if persons else None
        # ByteTrack needs the boxes only: it runs here, on the host, while the device computes the scores
        ids = None if self.tracker is None else self.tracker.assign(person_boxes(persons))
        timings = {"load": loaded.ms, "detect": (t1 - t0) * 1e3, "crops": (t2 - t1) * 1e3}
        return PendingFrame(self, persons, probs, w, h, timings, t2, ids)

    def process(self, frame: np.ndarray | torch.Tensor | bytes, color: str = "bgr") -> FrameResult:
        """One frame, start to finish."""
        return self.submit(self.load(frame, color)).result()

    def stream(self, frames: Iterable, color: str = "bgr") -> Iterator[FrameResult]:
        """Results of consecutive frames, each frame's decode and upload queued while the previous frame's
        encoder and head run (CUDA: on a second stream; elsewhere in turn). Tracks carry over between frames."""
        frames, end = iter(frames), object()
        upcoming = next(frames, end)
        loaded = None if upcoming is end else self.load(upcoming, color)
        while loaded is not None:
            pending = self.submit(loaded)
            upcoming, failed = next(frames, end), None
            try:
                loaded = None if upcoming is end else self.load(upcoming, color)
            except Exception as exc:  # noqa: BLE001 - a bad next frame must not cost this frame its result
                loaded, failed = None, exc
            yield pending.result()
            if failed is not None:
                raise failed

    def detect(self, loaded: LoadedFrame) -> Detections:
        """People (and faces, keypoints) in a loaded frame: on the device where the detector can (a torch pose
        model, given the frame there), else on the host. `detected_on` says which, for reports."""
        detect = getattr(self.detector, "detect_tensor", None)
        if loaded.tensor is not None and detect is not None:
            det = detect(loaded.tensor, self.keypoint_score)
            if det is not None:
                self.detected_on = "device"
                return det
        self.detected_on = "host"
        return self.detector.detect(loaded.host())

    def _results(self, persons: list[Person], probs: np.ndarray, track_ids: np.ndarray | None) -> list[PersonResult]:
        """`track_ids`: the tracker's `assign` of this frame's persons (`submit`), None without a tracker."""
        if self.tracker is not None:
            smoothed = self.tracker.smooth(track_ids, probs)
        else:
            smoothed = [None] * len(persons)
        out = []
        for person, raw, s in zip(persons, probs, smoothed, strict=True):
            scores = raw if s is None else s.scores
            best = int(np.argmax(raw))
            result = PersonResult(
                track_id=-1 if s is None else s.track_id,
                label=self.labels[best] if s is None else s.label,
                confidence=float(raw[best]) if s is None else s.confidence,
                scores=scores,
                raw_scores=raw,
                face_box=None if person.face is None else person.face[:4],
                body_box=person.body[:4],
                face_detected=person.face_detected,
                body_detected=person.body_detected,
                notes=list(person.notes),
                keypoints=person.keypoints,
                face_source=person.face_source,
            )
            if self.valence is not None:
                result.valence = float(np.dot(scores, self.valence))
                result.arousal = float(np.dot(scores, self.arousal))
            out.append(result)
        return out
