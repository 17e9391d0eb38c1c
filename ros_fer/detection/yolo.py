"""ultralytics YOLO: a COCO model's person class for bodies and a face model for faces, on the GPU
where there is one. Weights come from a path in the config; nothing is downloaded behind the user's back."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .base import Detections, empty_boxes

PERSON = 0  # COCO class id


def _load(weights: str):
    from ultralytics import YOLO

    path = Path(weights).expanduser()
    # A bare *.pt name that is not a local file would make ultralytics download it: refuse offline-unsafe magic.
    if weights.endswith(".pt") and not path.is_file():
        raise ConfigError(
            f"YOLO weights {weights!r} not found. Download them once (e.g. `yolo predict model={Path(weights).name}` "
            "on a connected machine) and give the file's path, or use detector: opencv."
        )
    return YOLO(str(path) if path.is_file() else weights)  # *.yaml builds an untrained model (tests)


class YoloDetector:
    name = "yolo"

    def __init__(
        self,
        person_weights: str,
        face_weights: str = "",
        device: str = "cpu",
        confidence: float = 0.4,
        imgsz: int = 640,
    ):
        os.environ.setdefault("YOLO_OFFLINE", "1")
        self.person = _load(person_weights) if person_weights else None
        self.face = _load(face_weights) if face_weights else None
        if self.person is None and self.face is None:
            raise ConfigError("the yolo detector needs person_weights, face_weights or both")
        self.device, self.confidence, self.imgsz = device, confidence, imgsz

    def _boxes(self, model, bgr: np.ndarray, classes: list[int] | None) -> np.ndarray:
        result = model.predict(
            bgr, device=self.device, conf=self.confidence, imgsz=self.imgsz, classes=classes, verbose=False
        )[0]
        boxes = result.boxes
        if boxes is None or len(boxes) == 0:
            return empty_boxes()
        return np.concatenate([boxes.xyxy.cpu().numpy(), boxes.conf.cpu().numpy()[:, None]], 1).astype(np.float32)

    def detect(self, rgb: np.ndarray) -> Detections:
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])  # ultralytics takes numpy frames as BGR
        bodies = self._boxes(self.person, bgr, [PERSON]) if self.person is not None else empty_boxes()
        faces = self._boxes(self.face, bgr, None) if self.face is not None else empty_boxes()
        return Detections(faces=faces, bodies=bodies, bodies_detected=self.person is not None)
