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


def cache_query(features: dict[str, torch.Tensor], base: str) -> torch.Tensor:
    """The one unit vector per person a few-shot cache compares: [B, D] the normalised global feature, or
    for a `levels` head the normalised level features side by side, / sqrt(L) ([B, L*D]: its dot product with
    another such vector is the mean of the per-level cosines)."""
    if base == "levels":
        levels = F.normalize(features["levels"], dim=-1)
        return levels.flatten(1) / levels.shape[1] ** 0.5
    return F.normalize(features["global"], dim=-1)


def cache_logits(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, beta: float) -> torch.Tensor:
    """Tip-Adapter's cache model: exp(-beta (1 - query . key)) for each cached example [B, N], times its
    one-hot label [N, C] -> [B, C]."""
    return torch.exp(-beta * (1.0 - query @ keys.t())) @ values


KINDS = ("cosine", "levels", "global_local", "cache")
CACHE_KEYS = ("cache.keys", "cache.values")  # the cache's tensors, beside the text bank's


@dataclass(frozen=True)
class Head:
    """kind: cosine (features['global'] vs text['classes']); levels (features['levels'] vs text_keys, one
    per level); global_local (features['global'] and optional features['local'] vs text['classes']);
    cache (few-shot, Tip-Adapter): the `base` kind's logits + alpha * cache_logits of text['cache.keys'] and
    text['cache.values'], which `ros_fer.adapt` builds from a few labelled images."""

    kind: str
    text_keys: tuple[str, ...]
    logit_scale: float
    top_k: int = 16
    base: str = ""  # cache: the zero-shot head it adds to (text_keys, logit_scale and top_k are that head's)
    alpha: float = 1.0  # cache: weight of the cache logits
    beta: float = 1.0  # cache: sharpness of the affinity to each cached example

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"head kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "cache" and self.base not in KINDS[:-1]:
            raise ConfigError(f"a cache head's base must be one of {KINDS[:-1]}, got {self.base!r}")

    def zero_shot(self) -> Head:
        """The head without its cache (itself for the other kinds)."""
        return Head(self.base, self.text_keys, self.logit_scale, self.top_k) if self.kind == "cache" else self

    def with_cache(self, alpha: float, beta: float) -> Head:
        base = self.zero_shot()
        return Head("cache", base.text_keys, base.logit_scale, base.top_k, base.kind, float(alpha), float(beta))

    def __call__(self, features: dict[str, torch.Tensor], text: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.kind == "cache":
            query = cache_query(features, self.base)
            cached = cache_logits(query, text[CACHE_KEYS[0]], text[CACHE_KEYS[1]], self.beta)
            return self.zero_shot()(features, text) + self.alpha * cached
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
