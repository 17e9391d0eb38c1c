"""The offline CPU fallback: OpenCV's Haar cascades (frontal + profile faces) and, optionally, its HOG
people detector. Their weights ship inside the opencv-python wheel (< 5), so this works with no internet."""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import ConfigError
from .base import Detections, empty_boxes, nms


def haar_available() -> bool:
    return hasattr(cv2, "CascadeClassifier")


def _cascade(name: str):
    if not haar_available():
        raise ConfigError(
            f"the opencv detector needs Haar cascades, which OpenCV {cv2.__version__} no longer has: install "
            "opencv-python<5 (`pip install 'opencv-python<5'`), or use detector: yolo with person_weights"
        )
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + name)
    if cascade.empty():
        raise ConfigError(f"OpenCV cascade {name} not found in {cv2.data.haarcascades}")
    return cascade


class OpenCVDetector:
    name = "opencv"

    def __init__(
        self,
        min_face: int = 32,
        bodies: bool = False,
        max_side: int = 640,
        neighbours: int = 4,
        profile: bool = False,
        scale_factor: float = 1.15,
    ):
        self.frontal = _cascade("haarcascade_frontalface_alt2.xml")
        self.profile = _cascade("haarcascade_profileface.xml")
        self.min_face, self.neighbours, self.max_side, self.scale_factor = min_face, neighbours, max_side, scale_factor
        self.use_profile = profile
        self.hog = None
        if bodies:
            self.hog = cv2.HOGDescriptor()
            self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def _faces(self, gray: np.ndarray) -> np.ndarray:
        w = gray.shape[1]
        found = []
        passes = [(self.frontal, False)] + ([(self.profile, False), (self.profile, True)] if self.use_profile else [])
        for cascade, flip in passes:
            img = cv2.flip(gray, 1) if flip else gray
            rects, _, weights = cascade.detectMultiScale3(
                img, self.scale_factor, self.neighbours, minSize=(self.min_face, self.min_face), outputRejectLevels=True
            )
            for (x, y, bw, bh), score in zip(rects, np.asarray(weights).reshape(-1), strict=False):
                x1 = w - x - bw if flip else x
                found.append([x1, y, x1 + bw, y + bh, 1.0 / (1.0 + np.exp(-float(score)))])
        return nms(np.asarray(found, dtype=np.float32).reshape(-1, 5), 0.3)

    def detect(self, rgb: np.ndarray) -> Detections:
        scale = min(1.0, self.max_side / max(rgb.shape[:2]))  # cascades are slow on large frames
        small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else rgb
        gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
        faces = self._faces(gray)
        bodies = empty_boxes()
        if self.hog is not None:
            rects, weights = self.hog.detectMultiScale(small, winStride=(8, 8), padding=(8, 8), scale=1.05)
            if len(rects):
                rects = np.asarray(rects, dtype=np.float32)
                bodies = np.concatenate(
                    [rects[:, :2], rects[:, :2] + rects[:, 2:], np.asarray(weights).reshape(-1, 1)], 1
                )
                bodies = nms(bodies.astype(np.float32), 0.4)
        faces[:, :4] /= scale
        bodies[:, :4] /= scale
        return Detections(faces=faces, bodies=bodies, bodies_detected=self.hog is not None)
