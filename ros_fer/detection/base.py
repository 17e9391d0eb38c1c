"""Detections and the protocol every detector follows. Boxes are float32 [N, 5]: x1, y1, x2, y2, score
in pixels of the frame they came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


def empty_boxes() -> np.ndarray:
    return np.zeros((0, 5), dtype=np.float32)


@dataclass
class Detections:
    faces: np.ndarray = field(default_factory=empty_boxes)
    bodies: np.ndarray = field(default_factory=empty_boxes)
    bodies_detected: bool = True  # False: this detector finds no bodies (they will be derived from faces)
    keypoints: np.ndarray | None = None  # [len(bodies), 17, 3] COCO x, y, score from a pose model, else None


class Detector(Protocol):
    name: str

    def detect(self, rgb: np.ndarray) -> Detections: ...


def nms(boxes: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression over [N, 5] boxes; returns the kept rows, best first."""
    if len(boxes) == 0:
        return boxes
    order = np.argsort(-boxes[:, 4])
    keep = []
    while len(order):
        i, rest = order[0], order[1:]
        keep.append(i)
        order = rest[box_iou(boxes[i : i + 1], boxes[rest])[0] <= iou]
    return boxes[keep]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between every box of a [N, >=4] and b [M, >=4] -> [N, M]."""
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:4], b[None, :, 2:4])
    inter = np.prod(np.clip(br - tl, 0, None), axis=2)
    area = lambda x: np.prod(np.clip(x[:, 2:4] - x[:, :2], 0, None), axis=1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)
