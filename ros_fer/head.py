"""Scoring image features against class text features. Pure functions shared by the models (training)
and by `Head`, which the runtime builds from a small spec so no CLIP weights are needed to score."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from .errors import ConfigError


def cosine_logits(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """scale · cos(image, text) for image [..., D] against text [C, D] -> [..., C]."""
    return scale * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).t()


def level_logits(levels: torch.Tensor, texts: list[torch.Tensor], scale: torch.Tensor | float) -> torch.Tensor:
    """Each level's crop feature [B, L, D] against its own text [C, D]; logits averaged over levels."""
    return torch.stack([cosine_logits(levels[:, i], t, scale) for i, t in enumerate(texts)]).mean(dim=0)


def global_local_logits(
    global_feat: torch.Tensor, patches: torch.Tensor | None, text: torch.Tensor, top_k: int
) -> torch.Tensor:
    """cos(global, t_c) + mean of the top-k cos(patch_i, t_c) over patches: [B, C] (unscaled)."""
    text = F.normalize(text, dim=-1)
    logits = F.normalize(global_feat, dim=-1) @ text.t()
    if patches is not None:
        local = F.normalize(patches, dim=-1) @ text.t()  # [B, N, C]
        logits = logits + local.topk(min(top_k, local.shape[1]), dim=1).values.mean(dim=1)
    return logits


KINDS = ("cosine", "levels", "global_local")


@dataclass(frozen=True)
class Head:
    """kind: cosine (features['global'] vs text['classes']); levels (features['levels'] vs text_keys, one
    per level); global_local (features['global'] and optional features['local'] vs text['classes'])."""

    kind: str
    text_keys: tuple[str, ...]
    logit_scale: float
    top_k: int = 16

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"head kind must be one of {KINDS}, got {self.kind!r}")

    def __call__(self, features: dict[str, torch.Tensor], text: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.kind == "cosine":
            return cosine_logits(features["global"], text[self.text_keys[0]], self.logit_scale)
        if self.kind == "levels":
            return level_logits(features["levels"], [text[k] for k in self.text_keys], self.logit_scale)
        return self.logit_scale * global_local_logits(
            features["global"], features.get("local"), text[self.text_keys[0]], self.top_k
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "text_keys": list(self.text_keys)}

    @classmethod
    def from_dict(cls, spec: dict) -> Head:
        return cls(**{**spec, "text_keys": tuple(spec["text_keys"])})
