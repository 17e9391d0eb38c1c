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
