"""MLPER: multi-level LLM prompts (face FE, body HP, context SC), modal cross-attention image-text
matching with hard negatives, and a cosine classifier over the complete sentences T^c."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..backbone import encode_image_tokens, encode_text_tokens
from ..errors import ConfigError
from ..head import Head
from ..prompts import MultiLevelPrompts, TemplatePrompts
from .base import FerModel, Output


class ModalCrossAttention(nn.Module):
    """Text tokens query visual tokens (Q from text, K/V from vision, softmax over visual tokens), then an FFN."""

    def __init__(self, dim: int, heads: int, ffn_ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ConfigError(f"MCA heads ({heads}) must divide the embedding size ({dim})")
        self.norm_text = nn.LayerNorm(dim)
        self.norm_vision = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, dim * ffn_ratio), nn.GELU(), nn.Linear(dim * ffn_ratio, dim))

    def forward(self, text: torch.Tensor, vision: torch.Tensor) -> torch.Tensor:
        kv = self.norm_vision(vision)
        x = text + self.attn(self.norm_text(text), kv, kv, need_weights=False)[0]
        return x + self.ffn(self.norm_ffn(x))


def hard_negatives(query: torch.Tensor, class_feats: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per sample, the mismatched class whose feature is most similar to the query: [B]."""
    sim = F.normalize(query, dim=-1) @ F.normalize(class_feats, dim=-1).t()
    sim = sim.masked_fill(F.one_hot(targets, class_feats.shape[0]).bool(), float("-inf"))
    return sim.argmax(dim=-1)


def random_negatives(targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """A uniformly drawn mismatched class per sample (the ablation without hard negatives)."""
    shift = torch.randint(1, num_classes, targets.shape, device=targets.device)
    return (targets + shift) % num_classes


def weighted_level_loss(losses: torch.Tensor, log_vars: torch.Tensor | None) -> torch.Tensor:
    """Σ_l λ^l · loss_l. Learnable λ^l = exp(-s_l) with the +s_l term that keeps λ from collapsing
    to 0 (homoscedastic uncertainty weighting); s = 0 gives λ = 1. None: fixed λ^l = 1."""
    if log_vars is None:
        return losses.sum()
    return (torch.exp(-log_vars) * losses + log_vars).sum()


class MLPER(FerModel):
    method = "mlper"

    def __init__(self, backbone, labels, prompts, config):
        super().__init__(backbone, labels, prompts, config)
        if not isinstance(prompts, (MultiLevelPrompts, TemplatePrompts)):
            raise ConfigError(f"MLPER needs multi-level or hand-crafted prompts, got {prompts.method} ({prompts.path})")
        # The baseline rows of MLPER's tables: CLIP fine-tuned with the hand-crafted prompt, no ITM.
        self.baseline = isinstance(prompts, TemplatePrompts)
        if len(labels) < 2:
            raise ConfigError("MLPER needs at least two classes (hard negatives are other classes)")
        dim, n = backbone.embed_dim, len(self.levels)
        itm = config.get("itm", {})
        self.itm_enabled = bool(itm.get("enabled", True))
        self.itm_weight = float(itm.get("weight", 1.0))  # λ in L = L_cls + λ·L_itm
        self.hard_negative_mode = itm.get("hard_negatives", "image")  # image | text | random
        if self.hard_negative_mode not in ("image", "text", "random"):
            raise ConfigError(f"itm.hard_negatives must be image, text or random, got {self.hard_negative_mode!r}")
        hidden = int(config.get("mlp_hidden") or dim)
        self.fuse = nn.Sequential(nn.Linear(n * dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        # itm.levels: the levels whose crops are matched to their prompts (Table IX switches them one by one)
        asked = list(itm.get("levels") or self.levels)
        if unknown := [lv for lv in asked if lv not in self.levels]:
            raise ConfigError(f"itm.levels {unknown} are not among the model's levels {list(self.levels)}")
        self.itm_levels = tuple(lv for lv in self.levels if lv in asked)
        if self.itm_enabled:
            heads = int(itm.get("heads", 8))
            self.mca = nn.ModuleDict(
                {lv: ModalCrossAttention(dim, heads, int(itm.get("ffn_ratio", 4))) for lv in self.itm_levels}
            )
            self.itm_head = nn.ModuleDict({lv: nn.Linear(dim, 1) for lv in self.itm_levels})
            learn = itm.get("learnable_level_weights", True)
            self.level_log_vars = nn.Parameter(torch.zeros(len(self.itm_levels))) if learn else None
        if self.baseline:
            if self.itm_enabled:
                raise ConfigError(
                    f"the hand-crafted baseline ({prompts.path}) has no level prompts to match: set itm.enabled=false"
                )
            if len(prompts.data["templates"]) != 1:
                raise ConfigError(f"the fine-tuned baseline takes one template per class; {prompts.path} has several")
            self._tokens = {"classes": backbone.tokenize([prompts.prompts(e)[0] for e in labels.emotions])}
        else:
            self._tokens = {
                "classes": backbone.tokenize(prompts.sentences(labels, self.levels)),
                **{lv: backbone.tokenize(prompts.level_prompts(labels, lv)) for lv in self.levels},
            }
        self.clip.logit_scale.requires_grad_(bool(config.get("train_logit_scale", False)))
        self.clip.visual.requires_grad_(bool(config.get("train_image_encoder", True)))
        self.train_text = bool(config.get("train_text_encoder", True))
        for name, p in self.clip.named_parameters():
            if not name.startswith("visual.") and name != "logit_scale":
                p.requires_grad_(self.train_text)

    # -- text side -------------------------------------------------------------------------
    def _encode_prompts(self, with_tokens: bool) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        with torch.set_grad_enabled(self.train_text and torch.is_grad_enabled()):
            for key, tokens in self._tokens.items():
                tokens = tokens.to(self.clip.logit_scale.device)
                pooled, per_token = encode_text_tokens(self.clip, tokens)
                out[key if key == "classes" else f"level.{key}"] = pooled
                if with_tokens and key != "classes":
                    out[f"tokens.{key}"] = per_token
                    out[f"eot.{key}"] = tokens.argmax(dim=-1)
        return out

    @torch.no_grad()
    def text_features(self) -> dict[str, torch.Tensor]:
        feats = self._encode_prompts(with_tokens=False)
        return {k: F.normalize(v, dim=-1) for k, v in feats.items()}

    # -- image side ------------------------------------------------------------------------
    def encode_crops(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"pooled": encode_image_tokens(self.clip.visual, images)[0]}

    def combine(self, per_level: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pooled = per_level["pooled"]  # [B, L, D]
        return {"global": self.fuse(pooled.flatten(1))}  # f_cls from the concatenated level cls tokens

    def encode_image(self, crops: torch.Tensor, with_tokens: bool = False) -> dict[str, torch.Tensor]:
        b, n = self.check_crops(crops).shape[:2]
        pooled, patches = encode_image_tokens(self.clip.visual, crops.flatten(0, 1))
        out = self.combine({"pooled": pooled.view(b, n, -1)})
        if with_tokens:
            out["level_pooled"] = pooled.view(b, n, -1)
            out["level_tokens"] = torch.cat([pooled.unsqueeze(1), patches], dim=1).view(b, n, -1, pooled.shape[-1])
        return out

    def head(self) -> Head:
        return Head("cosine", ("classes",), float(self.logit_scale))

    # -- training --------------------------------------------------------------------------
    def itm_losses(self, image: dict, text: dict, targets: torch.Tensor) -> torch.Tensor:
        """BCE of the match head per ITM level, on the positive pair and one (hard) negative pair: [len(itm_levels)]."""
        per_level = []
        for i, lv in enumerate(self.levels):
            if lv not in self.itm_levels:
                continue
            class_cls = text[f"level.{lv}"]
            if self.hard_negative_mode == "image":
                neg = hard_negatives(image["level_pooled"][:, i].detach(), class_cls.detach(), targets)
            elif self.hard_negative_mode == "text":
                neg = hard_negatives(class_cls[targets].detach(), class_cls.detach(), targets)
            else:
                neg = random_negatives(targets, class_cls.shape[0])
            vision = image["level_tokens"][:, i]
            tokens, eot = text[f"tokens.{lv}"], text[f"eot.{lv}"]
            logits = []
            for cls_idx in (targets, neg):
                refined = self.mca[lv](tokens[cls_idx], vision)
                logits.append(self.itm_head[lv](refined[torch.arange(len(cls_idx)), eot[cls_idx]]).squeeze(-1))
            match = torch.cat([torch.ones_like(logits[0]), torch.zeros_like(logits[1])])
            per_level.append(F.binary_cross_entropy_with_logits(torch.cat(logits), match))
        return torch.stack(per_level)

    def forward(self, crops, targets=None) -> Output:
        use_itm = self.itm_enabled and targets is not None
        image = self.encode_image(crops, with_tokens=use_itm)
        text = self._encode_prompts(with_tokens=use_itm)
        logits = self.classify(image, text)
        out = Output(logits=logits)
        if targets is not None:
            out.losses["cls"] = F.cross_entropy(logits, targets)
        if use_itm:
            per_level = self.itm_losses(image, text, targets)
            out.losses["itm"] = self.itm_weight * weighted_level_loss(per_level, self.level_log_vars)
            out.extras.update({f"itm.{lv}": per_level[i].detach() for i, lv in enumerate(self.itm_levels)})
        return out
