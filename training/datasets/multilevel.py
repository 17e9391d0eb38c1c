"""Multi-level crops for training, cut by the same code as the runtime (ros_fer.crops): face, body and
context (the whole image). Boxes come from annotations or from the pipeline's detector, computed once and
cached beside the data with the detector's identity, so epochs never re-detect."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ros_fer.crops import FACE_MARGIN, Person, associate, crop_batch, derive_body
from ros_fer.detection import Detections, create_detector

from .base import DataError, Sample, Split

BOX_CACHE_VERSION = 2  # bump when the rule that turns detections into boxes changes


def read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DataError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def image_face(w: int, h: int) -> list[float]:
    """The face box of a pre-cropped face image: its central 1/FACE_MARGIN, so that the face crop (the box
    grown by FACE_MARGIN, squared) is exactly the image."""
    mw, mh = w * (1 - 1 / FACE_MARGIN) / 2, h * (1 - 1 / FACE_MARGIN) / 2
    return [mw, mh, w - mw, h - mh]


_BOX_DETECTORS: dict[tuple[str, str], object] = {}


def box_detector(data: dict | None = None, log=None):
    """The detector that fills a data set's boxes: the runtime's default (`detector: auto`: the YOLO pose
    model where its weights can be had, OpenCV's Haar faces otherwise), or as `data.detector` /
    `data.person_weights` say. Made once per process and choice (train and val splits, evaluation share it),
    its fall-back warnings said once, through `log` (default: standard error)."""
    data = data or {}
    key = (str(data.get("detector", "auto")), str(data.get("person_weights", "yolo11n-pose.pt")))
    if key not in _BOX_DETECTORS:
        detector = _BOX_DETECTORS[key] = create_detector(key[0], "cpu", key[1])
        for line in getattr(detector, "warnings", ()):
            (log or (lambda m: print(m, file=sys.stderr)))(f"boxes: {line}")
    return _BOX_DETECTORS[key]


def _identity(detector) -> str:
    weights = getattr(detector, "weights_id", "")
    return f"{detector.name}{':' + weights if weights else ''}/boxes-v{BOX_CACHE_VERSION}"


def fill_boxes(split: Split, root: Path, progress=None, data: dict | None = None, log=None) -> dict[str, int]:
    """Give every sample its face and body box, as the runtime would find them. In order: annotations; the
    whole image as the face (`data.image_is_face`, pre-cropped face sets such as RAF-DB aligned or FERPlus);
    the detector's boxes, cached in <root>/.ros_fer_boxes/<detector identity>.json so epochs and later runs
    never re-detect. An annotated face (AffectNet) gets the detected body that holds it, else a body derived
    from it, never another person's. No face found: the face stays None and the crops estimate it from the
    body, as the node does (`crops.estimate_face`); nobody found: the whole image is the body."""
    data = data or {}
    counts = {"annotated": 0, "image is the face": 0, "cached": 0, "detected": 0, "no face": 0}
    if data.get("image_is_face"):
        from PIL import Image

        for s in split.samples:
            with Image.open(s.path) as im:
                w, h = im.size
            s.face = s.face or image_face(w, h)
            s.body = s.body or [0.0, 0.0, float(w), float(h)]
            counts["image is the face"] += 1
        return counts
    todo = [s for s in split.samples if s.face is None or s.body is None]
    counts["annotated"] = len(split.samples) - len(todo)
    if not todo:
        return counts
    detector = box_detector(data, log)
    ident = _identity(detector)
    cache_file = root / ".ros_fer_boxes" / (hashlib.sha1(ident.encode()).hexdigest()[:12] + ".json")
    cache = json.loads(cache_file.read_text())["boxes"] if cache_file.is_file() else {}
    dirty = False
    for s in progress(todo) if progress else todo:
        key = os.path.relpath(s.path, root) + ("#face=" + ",".join(f"{v:.1f}" for v in s.face) if s.face else "")
        if key in cache:
            counts["cached"] += 1
        else:
            rgb = read_rgb(s.path)
            h, w = rgb.shape[:2]
            det = detector.detect(rgb)
            if s.face is not None:  # annotated face: only the body is wanted, the one that holds this face
                det = Detections(
                    faces=np.array([[*s.face, 1.0]], np.float32),
                    bodies=det.bodies,
                    bodies_detected=det.bodies_detected,
                    keypoints=det.keypoints,
                )
            people = associate(det, h, w, 1)
            person = people[0] if people else None
            face = None if person is None or person.face is None else person.face[:4].tolist()
            cache[key] = {"face": face, "body": None if person is None else person.body[:4].tolist(), "size": [w, h]}
            counts["detected"] += 1
            dirty = True
        entry = cache[key]
        s.face = s.face or entry["face"]
        s.body = s.body or entry["body"]
        if s.face is None:
            counts["no face"] += 1
    if dirty:
        cache_file.parent.mkdir(exist_ok=True)
        tmp = cache_file.with_name(cache_file.name + ".tmp")
        tmp.write_text(json.dumps({"detector": ident, "boxes": cache}))
        os.replace(tmp, cache_file)
    return counts


def fill_split_boxes(split: Split, data: dict, progress=None, log=None) -> dict[str, int]:
    """`fill_boxes` for a split as `load_split` gave it: each part of a `combined` data set with its own root
    (box cache) and options, a plain data set with `data.root`. Returns the counts summed over the parts."""
    parts = split.parts or [data]
    total: dict[str, int] = {}
    for n, part in enumerate(parts):
        sub = Split(split.name, split.labels, [s for s in split.samples if s.part == n])
        counts = fill_boxes(sub, Path(part["root"]).expanduser(), progress, part, log)
        total = {k: total.get(k, 0) + v for k, v in counts.items()}
    return total


class MultiLevelCrops(Dataset):
    """(crops float [L, 3, S, S] normalised, label). Augmentation is drawn from an RNG keyed by
    (seed, epoch, index), so a resumed or distributed run sees exactly the same images."""

    def __init__(
        self,
        samples: list[Sample],
        levels: tuple[str, ...],
        size: int,
        mean,
        std,
        augment: dict | None = None,
        seed: int = 0,
    ):
        self.samples, self.levels, self.size = samples, levels, size
        self.mean = np.asarray(mean, np.float32) * 255
        self.std = np.asarray(std, np.float32) * 255
        self.augment, self.seed, self.epoch = augment or {}, seed, 0

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _boxes(self, s: Sample, h: int, w: int) -> tuple[np.ndarray | None, np.ndarray]:
        """As the runtime's Person: a face, or None (the crop estimates it from the body); a body, derived
        from the face where only a face is known, the whole image where nobody was found."""
        face = np.array([*s.face, 1.0], np.float32) if s.face is not None else None
        if s.body is not None:
            body = np.array([*s.body, 1.0], np.float32)
        else:
            body = derive_body(face, h, w) if face is not None else np.array([0, 0, w, h, 1.0], np.float32)
        return face, body

    def __getitem__(self, index: int):
        s = self.samples[index]
        rgb = read_rgb(s.path)
        h, w = rgb.shape[:2]
        face, body = self._boxes(s, h, w)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        aug = self.augment
        if aug.get("hflip") and rng.random() < 0.5:
            rgb = np.ascontiguousarray(rgb[:, ::-1])
            body[[0, 2]] = w - body[[2, 0]]
            if face is not None:
                face[[0, 2]] = w - face[[2, 0]]
        if aug.get("color_jitter", 0) > 0:
            j = aug["color_jitter"]
            gain, bias = rng.uniform(1 - j, 1 + j), rng.uniform(-j, j) * 64
            grey = rgb.mean(axis=2, keepdims=True)
            sat = rng.uniform(1 - j, 1 + j)
            rgb = np.clip((grey + (rgb - grey) * sat) * gain + bias, 0, 255).astype(np.uint8)
        # the runtime's own crop function, on a Person built as the runtime builds it
        person = Person(face=face, body=body, face_detected=face is not None)
        crops = crop_batch(rgb, [person], self.levels, self.size).dense()[0]
        x = (crops.astype(np.float32) - self.mean) / self.std  # [L, S, S, 3]
        if aug.get("random_erasing", 0) > 0:
            for crop in x:
                if rng.random() < aug["random_erasing"]:
                    eh, ew = (int(self.size * rng.uniform(0.1, 0.4)) for _ in range(2))
                    y0, x0 = rng.integers(0, self.size - eh), rng.integers(0, self.size - ew)
                    crop[y0 : y0 + eh, x0 : x0 + ew] = rng.normal(0, 1, (eh, ew, 3))
        return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), s.label
