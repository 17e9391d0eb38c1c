"""The one interface every image-side backend offers."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

PRECISIONS = ("fp32", "fp16", "int8")  # int8: onnxruntime dynamic quantisation


class Backend(Protocol):
    """Encodes a batch of uint8 crops [B, L, S, S, 3] (RGB) into float32 feature tensors on `device`."""

    name: str
    device: str
    precision: str
    output_names: tuple[str, ...]

    def encode(self, crops: np.ndarray) -> dict[str, torch.Tensor]: ...


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        from ..errors import ConfigError

        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def empty_outputs(backend: Backend, crops: np.ndarray) -> dict[str, torch.Tensor]:
    """Zero-row features for an empty batch [0, L, S, S, 3]: graphs cannot reshape zero elements, so the
    feature shapes come from one batch of a single blank crop, remembered per backend."""
    shapes = getattr(backend, "_feature_shapes", None)
    if shapes is None:
        one = backend.encode(np.zeros((1, *crops.shape[1:]), np.uint8))
        shapes = backend._feature_shapes = {n: tuple(t.shape[1:]) for n, t in one.items()}
    return {n: torch.zeros((0, *shape), device=backend.device) for n, shape in shapes.items()}
