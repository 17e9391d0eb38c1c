"""The whole image side as one module: distinct uint8 crops and each person's crop indices in, the model's
image features out. Normalisation lives inside, so every backend (torch, ONNX Runtime, TensorRT) takes the
same uint8 input and the host uploads 4x fewer bytes than float32. Each distinct crop is encoded once: a
frame's context crop serves every person of the frame."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..models.base import FerModel

INDEX = "index"


def dense_index(crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense crops [B, L, S, S, 3] as (distinct crops [B*L, S, S, 3], index [B, L]): no sharing."""
    b, n = crops.shape[:2]
    return crops.reshape(b * n, *crops.shape[2:]), np.arange(b * n, dtype=np.int64).reshape(b, n)


class ImageSide(nn.Module):
    """crops uint8 [N, S, S, 3] RGB and index int64 [B, L] (person b's level l is crop index[b, l])
    -> tuple of the model's image_outputs() tensors, [B, ...] each."""

    def __init__(self, model: FerModel):
        super().__init__()
        self.model = model
        self.output_names = model.image_outputs()
        self.levels = len(model.levels)
        self.size = model.backbone.image_size
        self.register_buffer("mean", torch.tensor(model.backbone.mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(model.backbone.std).view(1, 3, 1, 1) * 255)

    def forward(self, crops: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = (crops.permute(0, 3, 1, 2).to(self.mean.dtype) - self.mean) / self.std
        per_crop = self.model.encode_crops(x)
        feats = self.model.combine({k: v[index] for k, v in per_crop.items()})
        return tuple(feats[name] for name in self.output_names)

    def example(self, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Random (never constant) crops for `batch` persons, L crops each, plus one crop nobody uses, so
        the number of crops (2L+1 for 2 persons) differs from the number of persons at every L."""
        g = torch.Generator().manual_seed(seed)
        crops = torch.randint(
            0, 256, (batch * self.levels + 1, self.size, self.size, 3), dtype=torch.uint8, generator=g
        )
        return crops, torch.arange(batch * self.levels).view(batch, self.levels)
