"""Person and face detectors behind one protocol (`detect(rgb) -> Detections`)."""

from __future__ import annotations

from ..errors import ConfigError, WeightsUnavailableError
from .base import Detections, Detector, box_iou, nms
from .keypoints import face_from_keypoints
from .opencv import OpenCVDetector, haar_available
from .yolo import YoloDetector, resolve_weights


def create_detector(
    kind: str,
    device: str = "cpu",
    person_weights: str = "yolo11n-pose.pt",
    face_weights: str = "",
    confidence: float = 0.4,
    hog_bodies: bool = False,
    max_side: int = 640,
    profile_faces: bool = False,
    runtime: str = "auto",
    cuda_graphs: bool = False,
    imgsz: int = 640,
) -> Detector:
    """`auto`: the YOLO (pose) model of `person_weights`, fetched once and cached; where it cannot be had
    (offline, not cached), OpenCV's Haar faces, said in one warning line (`detector.warnings`)."""
    if kind not in ("auto", "yolo", "opencv"):
        raise ConfigError(f"unknown detector {kind!r}; choose auto, yolo or opencv")
    if kind == "opencv":
        return OpenCVDetector(bodies=hog_bodies, max_side=max_side, profile=profile_faces)
    if kind == "auto":
        try:
            for weights in (person_weights, face_weights):
                if weights:
                    resolve_weights(weights)  # fetched now (once) where the machine is online
        except WeightsUnavailableError as exc:
            if not haar_available():
                raise ConfigError(
                    f"detector auto: {exc}, and the fallback, OpenCV's Haar faces, needs opencv-python < 5 "
                    "(this OpenCV has no CascadeClassifier). Fetch the YOLO weights once on a connected machine "
                    "and give their path in person_weights, or install opencv-python<5."
                ) from exc
            detector = OpenCVDetector(bodies=hog_bodies, max_side=max_side, profile=profile_faces)
            detector.warnings = [
                f"detector auto: {exc}; falling back to OpenCV's Haar faces (frontal faces only, no bodies or "
                "keypoints, CPU). Fetch the weights once on a connected machine, or set detector: opencv to "
                "silence this."
            ]
            return detector
    return YoloDetector(
        person_weights, face_weights, device, confidence, imgsz=imgsz, runtime=runtime, cuda_graphs=cuda_graphs
    )


__all__ = [
    "Detections",
    "Detector",
    "OpenCVDetector",
    "YoloDetector",
    "box_iou",
    "create_detector",
    "face_from_keypoints",
    "nms",
]
