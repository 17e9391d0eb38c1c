"""Draw a frame's results (boxes, label, confidence, track id) for `ros-fer infer --annotate` and the
node's debug image."""

from __future__ import annotations

import cv2
import numpy as np

from .detection.keypoints import SKELETON
from .pipeline import FrameResult
from .tracking import UNKNOWN

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240)]


def draw(bgr: np.ndarray, result: FrameResult) -> np.ndarray:
    """A copy of the BGR frame with every person drawn on it."""
    out = bgr.copy()
    thick = max(1, round(max(out.shape[:2]) / 400))
    for person in result.persons:
        color = (
            (128, 128, 128) if person.label == UNKNOWN else PALETTE[result.labels.index(person.label) % len(PALETTE)]
        )
        if person.keypoints is not None:
            _skeleton(out, person.keypoints, color, thick)
        x1, y1, x2, y2 = (int(v) for v in person.body_box)
        cv2.rectangle(
            out, (x1, y1), (x2, y2), color, thick, lineType=cv2.LINE_AA if person.body_detected else cv2.LINE_4
        )
        if person.face_box is not None:
            fx1, fy1, fx2, fy2 = (int(v) for v in person.face_box)
            cv2.rectangle(out, (fx1, fy1), (fx2, fy2), color, thick + 1)
            y1 = fy1
            x1 = fx1
        text = (
            f"#{person.track_id} {person.label} {person.confidence:.2f}"
            if person.track_id >= 0
            else f"{person.label} {person.confidence:.2f}"
        )
        scale = 0.4 * thick
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        # the label stays inside the image: moved left from the right edge, down from the top
        x1 = max(0, min(x1, out.shape[1] - tw - 2))
        top = min(max(0, y1 - th - base - 2), max(0, out.shape[0] - th - base - 2))
        cv2.rectangle(out, (x1, top), (x1 + tw + 2, top + th + base + 2), color, -1)
        cv2.putText(out, text, (x1 + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick, cv2.LINE_AA)
    return out


def _skeleton(out: np.ndarray, keypoints: np.ndarray, color, thick: int, min_score: float = 0.5) -> None:
    """The pose: limbs between keypoints both seen with at least `min_score`, and a dot per keypoint."""
    seen = keypoints[:, 2] >= min_score
    pts = [(int(x), int(y)) for x, y, _ in keypoints]
    for a, b in SKELETON:
        if seen[a] and seen[b]:
            cv2.line(out, pts[a], pts[b], color, thick, cv2.LINE_AA)
    for point, ok in zip(pts, seen, strict=True):
        if ok:
            cv2.circle(out, point, thick + 1, (255, 255, 255), -1, cv2.LINE_AA)
