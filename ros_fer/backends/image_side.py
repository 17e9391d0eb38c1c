"""The whole image side as one module: uint8 crops in, the model's image features out. Normalisation
lives inside, so every backend (torch, ONNX Runtime, TensorRT) takes the same uint8 input and the host
uploads 4x fewer bytes than float32."""

from __future__ import annotations

import torch
from torch import nn

from ..models.base import FerModel


class ImageSide(nn.Module):
    """crops uint8 [B, L, S, S, 3] RGB -> tuple of the model's image_outputs() tensors."""

    def __init__(self, model: FerModel):
        super().__init__()
        self.model = model
        self.output_names = model.image_outputs()
        self.levels = len(model.levels)
        self.size = model.backbone.image_size
        self.register_buffer("mean", torch.tensor(model.backbone.mean).view(1, 1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(model.backbone.std).view(1, 1, 3, 1, 1) * 255)

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = crops.permute(0, 1, 4, 2, 3).to(self.mean.dtype)
        x = (x - self.mean) / self.std
        feats = self.model.encode_image(x)
        return tuple(feats[name] for name in self.output_names)

    def example(self, batch: int = 2, seed: int = 0) -> torch.Tensor:
        """Random (never constant) uint8 crops of the right shape."""
        g = torch.Generator().manual_seed(seed)
        return torch.randint(0, 256, (batch, self.levels, self.size, self.size, 3), dtype=torch.uint8, generator=g)
