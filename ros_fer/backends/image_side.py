"""The whole image side as one module: distinct uint8 crops and each person's crop indices in, the model's
image features out. Normalisation lives inside, so every backend (torch, ONNX Runtime, TensorRT) takes the
same uint8 input and the host uploads 4x fewer bytes than float32. Each distinct crop is encoded once: a
frame's context crop serves every person of the frame."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

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


class PlainSelfAttention(nn.Module):
    """An `nn.MultiheadAttention` (batch first) written out for the exported graph, the same numbers: q, k
    and v as three linear layers, heads split by reshape and 4-D transposes, softmax(q k^T / sqrt(d)) v.

    Why: exported as it stands, torch's module runs its batch-first transposes, splits the packed
    projection with a 5-D transpose and scales inside its attention decomposition; OpenVINO's CPU plugin runs
    those transposes one by one in its reference kernel (41 ms of 248 for 17 ViT-B-32 crops, int8, AMX)
    instead of folding them into its fused attention. Written plainly, the whole image side took 20-24 % less
    (README, CPU speed). Anything but plain self-attention (another key or value, a mask, weights asked
    for) goes to the original module, kept inside."""

    def __init__(self, mha: nn.MultiheadAttention):
        super().__init__()
        self.original = mha
        e = mha.embed_dim
        self.heads, self.head_dim = mha.num_heads, e // mha.num_heads
        self.q, self.k, self.v = (nn.Linear(e, e) for _ in range(3))
        with torch.no_grad():
            for i, linear in enumerate((self.q, self.k, self.v)):
                linear.to(mha.in_proj_weight.dtype)
                linear.weight.copy_(mha.in_proj_weight[i * e : (i + 1) * e])
                linear.bias.copy_(mha.in_proj_bias[i * e : (i + 1) * e])
        self.out_proj = mha.out_proj

    @staticmethod
    def fits(mha: nn.Module) -> bool:
        """What this rewrite covers: batch first, one packed projection with biases, no extra key/value bias
        or zero attention, no dropout in use (eval)."""
        return (
            isinstance(mha, nn.MultiheadAttention)
            and mha.batch_first
            and mha._qkv_same_embed_dim
            and mha.in_proj_bias is not None
            and mha.bias_k is None
            and not mha.add_zero_attn
        )

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None, **kwargs):
        plain = key is query and value is query and key_padding_mask is None and attn_mask is None
        if not plain or need_weights or kwargs or (self.training and self.original.dropout):
            return self.original(
                query,
                key,
                value,
                key_padding_mask=key_padding_mask,
                need_weights=need_weights,
                attn_mask=attn_mask,
                **kwargs,
            )
        n, length, width = query.shape
        h, d = self.heads, self.head_dim
        q = self.q(query).view(n, length, h, d).transpose(1, 2) * d**-0.5  # [N, H, L, D]
        k = self.k(query).view(n, length, h, d).transpose(1, 2)
        v = self.v(query).view(n, length, h, d).transpose(1, 2)
        out = F.softmax(q @ k.transpose(-2, -1), dim=-1) @ v
        return self.out_proj(out.transpose(1, 2).reshape(n, length, width)), None


def plain_attention(module: nn.Module) -> int:
    """Replace, in place, every `nn.MultiheadAttention` under `module` that `PlainSelfAttention` covers (for
    export; the caller passes a copy). Returns how many were replaced."""
    found = [
        (parent, name, child)
        for parent in module.modules()
        for name, child in parent.named_children()
        if PlainSelfAttention.fits(child)
    ]
    for parent, name, child in found:
        setattr(parent, name, PlainSelfAttention(child))
    return len(found)
