"""Person and face detectors behind one protocol (`detect(rgb) -> Detections`)."""

from __future__ import annotations

from ..errors import ConfigError
from .base import Detections, Detector, box_iou, nms
from .opencv import OpenCVDetector
from .yolo import YoloDetector


def create_detector(
    kind: str,
    device: str = "cpu",
    person_weights: str = "",
    face_weights: str = "",
    confidence: float = 0.4,
    hog_bodies: bool = False,
    max_side: int = 640,
    profile_faces: bool = False,
) -> Detector:
    """`auto`: YOLO when weights are configured and a GPU is present, else the offline OpenCV detector."""
    if kind == "auto":
        kind = "yolo" if (person_weights or face_weights) and str(device).startswith("cuda") else "opencv"
    if kind == "yolo":
        return YoloDetector(person_weights, face_weights, device, confidence)
    if kind == "opencv":
        return OpenCVDetector(bodies=hog_bodies, max_side=max_side, profile=profile_faces)
    raise ConfigError(f"unknown detector {kind!r}; choose auto, yolo or opencv")


__all__ = ["Detections", "Detector", "OpenCVDetector", "YoloDetector", "box_iou", "create_detector", "nms"]
