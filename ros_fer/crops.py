"""Face/body/context geometry: who is who (faces matched to bodies), and the batch of crops per frame."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from .detection.base import Detections
from .detection.keypoints import face_from_keypoints

FACE_MARGIN = 1.3  # FER data sets crop faces with some forehead and chin
BODY_MARGIN = 1.05


FACE_SOURCES = ("detector", "keypoints", "estimated")  # a face model, the pose model's head keypoints, the body


@dataclass
class Person:
    face: np.ndarray | None  # [5] x1 y1 x2 y2 score, as detected or from keypoints; None: not found
    body: np.ndarray  # [5], detected or derived
    face_detected: bool = True
    body_detected: bool = True
    notes: list[str] = field(default_factory=list)
    keypoints: np.ndarray | None = None  # [17, 3] COCO x, y, score (pose detectors only)
    face_source: str = "detector"

    @property
    def priority(self) -> float:
        """Bigger (closer) and surer people first when the per-frame cap bites."""
        box = self.face if self.face is not None else self.body
        return float((box[2] - box[0]) * (box[3] - box[1]) * box[4])


def derive_body(face: np.ndarray, height: int, width: int) -> np.ndarray:
    """A body box from a face: ~3 face widths wide, from above the head to ~7 face heights down."""
    x1, y1, x2, y2, s = face
    w, h, cx = x2 - x1, y2 - y1, (x1 + x2) / 2
    box = [cx - 1.5 * w, y1 - 0.3 * h, cx + 1.5 * w, y1 + 7.0 * h]
    return np.array([max(0, box[0]), max(0, box[1]), min(width, box[2]), min(height, box[3]), s], np.float32)


def estimate_face(body: np.ndarray) -> np.ndarray:
    """Where the head of an upright body box most likely is (used when no face was found)."""
    x1, y1, x2, y2, s = body
    side = min(0.5 * (x2 - x1), 0.2 * (y2 - y1))
    cx = (x1 + x2) / 2
    return np.array([cx - side / 2, y1 + 0.02 * (y2 - y1), cx + side / 2, y1 + 0.02 * (y2 - y1) + side, s], np.float32)


def associate(det: Detections, height: int, width: int, max_persons: int, keypoint_score: float = 0.5) -> list[Person]:
    """Each face joins the tightest unused body whose upper half holds the face centre; leftover faces
    get a derived body. A leftover body with pose keypoints gets its face from the head keypoints
    (`detection.keypoints`), else an estimated face. At most `max_persons`, closest first."""
    persons: list[Person] = []
    used = np.zeros(len(det.bodies), bool)
    kps = det.keypoints
    for face in det.faces[np.argsort(-det.faces[:, 4])]:
        cx, cy = (face[0] + face[2]) / 2, (face[1] + face[3]) / 2
        b = det.bodies
        inside = (b[:, 0] <= cx) & (cx <= b[:, 2]) & (b[:, 1] <= cy) & (cy <= b[:, 1] + 0.5 * (b[:, 3] - b[:, 1]))
        candidates = np.flatnonzero(inside & ~used)
        if len(candidates):
            best = candidates[np.argmin(((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[candidates])]
            used[best] = True
            persons.append(Person(face=face, body=b[best], keypoints=None if kps is None else kps[best]))
        else:
            note = "body derived from face" + ("" if det.bodies_detected else " (no body detector)")
            persons.append(Person(face=face, body=derive_body(face, height, width), body_detected=False, notes=[note]))
    for i in np.flatnonzero(~used):
        body, kp = det.bodies[i], None if kps is None else kps[i]
        why = "no face found"
        if kp is not None:
            face, why = face_from_keypoints(kp, body, height, width, keypoint_score)
            if face is not None:
                persons.append(Person(face=face, body=body, keypoints=kp, face_source="keypoints"))
                continue
        persons.append(
            Person(
                face=None,
                body=body,
                face_detected=False,
                notes=[f"{why}: face estimated from body"],
                keypoints=kp,
                face_source="estimated",
            )
        )
    persons.sort(key=lambda p: -p.priority)
    return persons[:max_persons]


def square(box: np.ndarray, scale: float) -> np.ndarray:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = max(box[2] - box[0], box[3] - box[1]) * scale / 2
    return np.array([cx - half, cy - half, cx + half, cy + half], np.float32)


def crop_square(rgb: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """The square `box` (may reach outside the frame: zero-padded) resized to size x size."""
    x1, y1, x2, y2 = box[:4]
    side = max(x2 - x1, 1e-3)
    # An affine warp crops, pads and resizes in one pass, without copying the frame.
    m = np.array([[size / side, 0, -x1 * size / side], [0, size / side, -y1 * size / side]], np.float32)
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.warpAffine(rgb, m, (size, size), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def context_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """The whole frame, letterboxed to a square so nothing of the situation is cut away."""
    h, w = rgb.shape[:2]
    side = max(h, w)
    return crop_square(
        rgb, np.array([(w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2], np.float32), size
    )


@dataclass
class CropBatch:
    """A frame's crops for the encoder: each distinct crop once, and per person the crop of each level."""

    images: np.ndarray  # uint8 [N, size, size, 3] RGB
    index: np.ndarray  # int64 [P, L]: person p's level l is images[index[p, l]]

    def dense(self) -> np.ndarray:
        """[P, L, size, size, 3], as training and the paper's per-person view see them."""
        return self.images[self.index]


def crop_batch(rgb: np.ndarray, persons: list[Person], levels: tuple[str, ...], size: int) -> CropBatch:
    """Per person the crops of the requested levels, in level order. The context crop is the same for every
    person of a frame, so it is cut (and later encoded) once: P persons need 2P + 1 crops, not 3P."""
    images: list[np.ndarray] = []
    index = np.empty((len(persons), len(levels)), np.int64)
    context = None
    for i, person in enumerate(persons):
        for j, level in enumerate(levels):
            if level == "context":
                if context is None:
                    context = len(images)
                    images.append(context_crop(rgb, size))
                index[i, j] = context
                continue
            if level == "face":
                face = person.face if person.face is not None else estimate_face(person.body)
                images.append(crop_square(rgb, square(face, FACE_MARGIN), size))
            else:
                images.append(crop_square(rgb, square(person.body, BODY_MARGIN), size))
            index[i, j] = len(images) - 1
    stacked = np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
    return CropBatch(stacked, index)


def make_crops(rgb: np.ndarray, persons: list[Person], levels: tuple[str, ...], size: int) -> np.ndarray:
    """uint8 [P, L, size, size, 3]: per person the crops of the requested levels, in level order."""
    return crop_batch(rgb, persons, levels, size).dense()
