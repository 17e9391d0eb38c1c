"""The one interface every image-side backend offers."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

PRECISIONS = ("fp32", "fp16", "bf16", "int8")  # int8: onnxruntime dynamic quantisation; bf16: torch weights, OpenVINO


class Backend(Protocol):
    """Encodes uint8 RGB crops into float32 feature tensors [B, ...] on `device`: either dense crops
    [B, L, S, S, 3], or distinct crops [N, S, S, 3] with `index` [B, L] naming each person's crop per level
    (a shared context crop is then encoded once)."""

    name: str
    device: str
    precision: str
    output_names: tuple[str, ...]

    def encode(self, crops: np.ndarray, index: np.ndarray | None = None) -> dict[str, torch.Tensor]: ...


def crops_and_index(crops: np.ndarray, index: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The (distinct crops, index) pair every backend runs, from either form `Backend.encode` takes."""
    from ..errors import InputShapeError
    from .image_side import dense_index

    if index is None:
        if crops.ndim != 5:
            raise InputShapeError(f"dense crops must be [B, L, S, S, 3], got {list(crops.shape)}")
        return dense_index(crops)
    index = np.asarray(index, np.int64)
    if crops.ndim != 4 or index.ndim != 2 or (index.size and not 0 <= index.min() <= index.max() < len(crops)):
        raise InputShapeError(
            f"crops [N, S, S, 3] with index [B, L] into them expected, got {list(crops.shape)} and "
            f"{list(index.shape)} (values {index.min() if index.size else '-'}..{index.max() if index.size else '-'})"
        )
    return crops, index


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        from ..errors import ConfigError

        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def empty_outputs(backend: Backend, crops: np.ndarray, index: np.ndarray) -> dict[str, torch.Tensor]:
    """Zero-row features for nobody (index [0, L]): graphs cannot reshape zero elements, so the feature
    shapes come from one person of blank crops, remembered per backend."""
    shapes = getattr(backend, "_feature_shapes", None)
    if shapes is None:
        levels = index.shape[1]
        one = backend.encode(np.zeros((levels, *crops.shape[1:]), np.uint8), np.arange(levels).reshape(1, levels))
        shapes = backend._feature_shapes = {n: tuple(t.shape[1:]) for n, t in one.items()}
    return {n: torch.zeros((0, *shape), device=backend.device) for n, shape in shapes.items()}
