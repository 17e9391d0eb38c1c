"""Zero-shot CLIP: the crops scored against class prompts, with no training (MLPER's baseline row)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..head import Head
from ..prompts import MultiLevelPrompts, TemplatePrompts
from .base import FerModel, Output


def prompt_ensemble(encode, prompts_per_class: list[list[str]]) -> torch.Tensor:
    """Class features [C, D]: each prompt normalised, averaged per class, normalised again (CLIP's recipe)."""
    flat = [p for prompts in prompts_per_class for p in prompts]
    feats = F.normalize(encode(flat), dim=-1)
    out, start = [], 0
    for prompts in prompts_per_class:
        out.append(F.normalize(feats[start : start + len(prompts)].mean(dim=0), dim=-1))
        start += len(prompts)
    return torch.stack(out)


class ZeroShotCLIP(FerModel):
    """scoring: `combined` scores every level's crop against one sentence per class (the hand-crafted
    prompt or MLPER's T^c); `per_level` scores each level's crop against that level's prompts. The
    logits are averaged over levels."""

    method = "zeroshot"

    def __init__(self, backbone, labels, prompts, config):
        super().__init__(backbone, labels, prompts, config)
        self.clip.requires_grad_(False)  # nothing trains in zero-shot
        self.scoring = config.get("scoring", "combined")
        if self.scoring not in ("combined", "per_level"):
            raise ConfigError(f"zeroshot scoring must be combined or per_level, got {self.scoring!r}")
        if not isinstance(prompts, (TemplatePrompts, MultiLevelPrompts)):
            raise ConfigError(f"zeroshot needs hand-crafted or MLPER prompts, got {prompts.method} ({prompts.path})")
        if self.scoring == "per_level" and not isinstance(prompts, MultiLevelPrompts):
            raise ConfigError("zeroshot per_level scoring needs multi-level (MLPER) prompts")

    def class_prompts(self) -> list[list[str]]:
        if isinstance(self.prompts, TemplatePrompts):
            return [self.prompts.prompts(e) for e in self.labels.emotions]
        return [[s] for s in self.prompts.sentences(self.labels, self.levels)]

    @torch.no_grad()
    def text_features(self) -> dict[str, torch.Tensor]:
        out = {"classes": prompt_ensemble(self.encode_texts, self.class_prompts())}
        if isinstance(self.prompts, MultiLevelPrompts):
            for level in self.levels:
                out[f"level.{level}"] = prompt_ensemble(
                    self.encode_texts, [[p] for p in self.prompts.level_prompts(self.labels, level)]
                )
        return out

    def head(self) -> Head:
        keys = [f"level.{lv}" if self.scoring == "per_level" else "classes" for lv in self.levels]
        return Head("levels", tuple(keys), float(self.logit_scale))

    def image_outputs(self) -> tuple[str, ...]:
        return ("levels",)

    def encode_crops(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"levels": F.normalize(self.clip.encode_image(images), dim=-1)}

    def combine(self, per_level: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"levels": per_level["levels"]}  # each level is scored against its own text

    def forward(self, crops, targets=None) -> Output:
        logits = self.classify(self.encode_image(crops), self.text_features())
        losses = {} if targets is None else {"cls": F.cross_entropy(logits, targets)}
        return Output(logits=logits, losses=losses)
