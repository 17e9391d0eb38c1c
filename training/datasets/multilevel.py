"""Multi-level crops for training, cut by the same code as the runtime (ros_fer.crops): face, body and
context (the whole image). Boxes come from annotations or from the pipeline's detector, computed once and
cached beside the data with the detector's identity, so epochs never re-detect."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ros_fer.crops import BODY_MARGIN, FACE_MARGIN, associate, context_crop, crop_square, derive_body, square
from ros_fer.detection import OpenCVDetector

from .base import DataError, Sample, Split

DETECTOR_ID = "opencv-haar-frontalface_alt2/v1"


def read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DataError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def fill_boxes(split: Split, root: Path, progress=None) -> dict[str, int]:
    """Give every sample a face and body box: annotations first, then the detector cache, then the detector
    (results cached in <root>/.ros_fer_boxes/<detector>.json). No face found: the whole image is the face."""
    cache_file = root / ".ros_fer_boxes" / (hashlib.sha1(DETECTOR_ID.encode()).hexdigest()[:12] + ".json")
    cache = json.loads(cache_file.read_text())["boxes"] if cache_file.is_file() else {}
    detector, counts, dirty = None, {"annotated": 0, "cached": 0, "detected": 0, "no face": 0}, False
    for s in progress(split.samples) if progress else split.samples:
        key = os.path.relpath(s.path, root)
        if s.face is not None and s.body is not None:
            counts["annotated"] += 1
            continue
        if key in cache:
            counts["cached"] += 1
        else:
            detector = detector or OpenCVDetector()
            rgb = read_rgb(s.path)
            h, w = rgb.shape[:2]
            people = associate(detector.detect(rgb), h, w, 1)
            face = people[0].face[:4].tolist() if people and people[0].face is not None else None
            cache[key] = {"face": face, "body": people[0].body[:4].tolist() if people else None, "size": [w, h]}
            counts["detected"] += 1
            dirty = True
        entry = cache[key]
        if s.face is None:
            s.face = entry["face"]
        if s.face is None:
            counts["no face"] += 1
        if s.body is None:
            s.body = entry["body"]
    if dirty:
        cache_file.parent.mkdir(exist_ok=True)
        tmp = cache_file.with_name(cache_file.name + ".tmp")
        tmp.write_text(json.dumps({"detector": DETECTOR_ID, "boxes": cache}))
        os.replace(tmp, cache_file)
    return counts


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

    def _boxes(self, s: Sample, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        face = np.array([*s.face, 1.0], np.float32) if s.face is not None else np.array([0, 0, w, h, 1.0], np.float32)
        body = np.array([*s.body, 1.0], np.float32) if s.body is not None else derive_body(face, h, w)
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
            face[[0, 2]], body[[0, 2]] = w - face[[2, 0]], w - body[[2, 0]]
        if aug.get("color_jitter", 0) > 0:
            j = aug["color_jitter"]
            gain, bias = rng.uniform(1 - j, 1 + j), rng.uniform(-j, j) * 64
            grey = rgb.mean(axis=2, keepdims=True)
            sat = rng.uniform(1 - j, 1 + j)
            rgb = np.clip((grey + (rgb - grey) * sat) * gain + bias, 0, 255).astype(np.uint8)
        crops = []
        for level in self.levels:
            if level == "face":
                crops.append(crop_square(rgb, square(face, FACE_MARGIN), self.size))
            elif level == "body":
                crops.append(crop_square(rgb, square(body, BODY_MARGIN), self.size))
            else:
                crops.append(context_crop(rgb, self.size))
        x = (np.stack(crops).astype(np.float32) - self.mean) / self.std  # [L, S, S, 3]
        if aug.get("random_erasing", 0) > 0:
            for crop in x:
                if rng.random() < aug["random_erasing"]:
                    eh, ew = (int(self.size * rng.uniform(0.1, 0.4)) for _ in range(2))
                    y0, x0 = rng.integers(0, self.size - eh), rng.integers(0, self.size - ew)
                    crop[y0 : y0 + eh, x0 : x0 + ew] = rng.normal(0, 1, (eh, ew, 3))
        return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), s.label
