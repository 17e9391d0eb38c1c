"""Frame in, per-person emotions out: detection -> association -> crops -> one batched encoder call ->
head against the text bank -> tracking and smoothing. The only place the stages are strung together."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .crops import CropBatch, Person, associate, crop_batch, crop_batch_tensor
from .detection import Detector, create_detector
from .errors import ConfigError, InputShapeError
from .runtime import Runtime, build_runtime, resolve_device
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


def as_rgb(frame: np.ndarray, color: str) -> np.ndarray:
    """Validate a frame (H x W x 3 uint8, or H x W grey) and return it as RGB."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        raise InputShapeError(f"frame must be a uint8 numpy array, got {getattr(frame, 'dtype', type(frame))}")
    if frame.ndim == 2:
        frame = np.repeat(frame[:, :, None], 3, axis=2)
    if frame.ndim != 3 or frame.shape[2] != 3 or min(frame.shape[:2]) < 1:
        raise InputShapeError(f"frame must be H x W x 3 (or H x W), got {list(frame.shape)}")
    if frame.shape[0] * frame.shape[1] > MAX_PIXELS:
        raise InputShapeError(
            f"frame of {frame.shape[1]}x{frame.shape[0]} pixels is larger than the {MAX_PIXELS} allowed"
        )
    return frame[:, :, ::-1] if color == "bgr" else frame


def detector_from_params(params: dict) -> Detector:
    """The detector the perception parameters name (the node's, `ros-fer infer`'s and `ros-fer adapt`'s)."""
    return create_detector(
        params["detector"],
        resolve_device(params["device"]),
        params["person_weights"],
        params["face_weights"],
        params["detector_confidence"],
        params["hog_bodies"],
        params["detector_max_side"],
        params["profile_faces"],
        params["detector_runtime"],
    )


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
        self.labels = runtime.labels.classes
        self._valence_arousal(valence_arousal)

    @classmethod
    def from_params(cls, params: dict) -> Pipeline:
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

    def scores(self, crops: CropBatch) -> np.ndarray:
        """Probabilities [P, C] for a frame's crops: one encoder call over the distinct crops, then the head."""
        with torch.inference_mode():
            logits = self.runtime.head(self.runtime.backend.encode(crops.images, crops.index), self.runtime.text)
            return logits.float().softmax(dim=-1).cpu().numpy()

    def upload_frame(self, rgb: np.ndarray) -> torch.Tensor:
        """The frame on the backend's device (device crops: a torch backend), through its pinned buffers."""
        return self.runtime.backend.upload(rgb)

    def crop(self, rgb: np.ndarray, persons: list[Person], frame_t: torch.Tensor | None = None) -> CropBatch:
        """The frame's crops, cut where the pipeline chose once: on the device from the uploaded frame
        (`frame_t`, uploaded here if not given), or on the host by OpenCV."""
        if self.device_crops:
            frame_t = self.upload_frame(rgb) if frame_t is None else frame_t
            return crop_batch_tensor(frame_t, persons, self.runtime.levels, self.runtime.image_size)
        return crop_batch(rgb, persons, self.runtime.levels, self.runtime.image_size)

    def process(self, frame: np.ndarray, color: str = "bgr") -> FrameResult:
        t0 = time.perf_counter()
        rgb = as_rgb(frame, color)
        h, w = rgb.shape[:2]
        # The device path: the frame crosses once; a detector that can (a torch pose model) detects there too.
        frame_t = self.upload_frame(rgb) if self.device_crops else None
        det = (
            None
            if frame_t is None or not hasattr(self.detector, "detect_tensor")
            else self.detector.detect_tensor(frame_t)
        )
        det = det if det is not None else self.detector.detect(rgb)
        t1 = time.perf_counter()
        persons = associate(det, h, w, self.max_persons, self.keypoint_score)
        crops = self.crop(rgb, persons, frame_t)
        t2 = time.perf_counter()
        probs = self.scores(crops) if persons else np.zeros((0, len(self.labels)), np.float32)
        t3 = time.perf_counter()
        results = self._results(persons, probs)
        t4 = time.perf_counter()
        ms = lambda a, b: (b - a) * 1e3  # noqa: E731
        timings = {
            "detect": ms(t0, t1),
            "crops": ms(t1, t2),
            "model": ms(t2, t3),
            "track": ms(t3, t4),
            "total": ms(t0, t4),
        }
        return FrameResult(results, self.labels, w, h, timings)

    def _results(self, persons: list[Person], probs: np.ndarray) -> list[PersonResult]:
        boxes = np.stack([p.body for p in persons]) if persons else np.zeros((0, 5), np.float32)
        if self.tracker is not None:
            smoothed = self.tracker.update(boxes, probs)
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
