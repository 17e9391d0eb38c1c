"""MPA-FER (ICCV 2025): a frozen CLIP adapted by soft text prompts aligned to LLM hard prompts,
deep visual prompts, prototype-guided visual alignment and global-local image-text alignment."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..backbone import encode_image_tokens, encode_text_tokens
from ..errors import ConfigError
from ..head import Head
from ..prompts import HardPrompts
from .base import FerModel, Output


def token_alignment(soft: torch.Tensor, hard: torch.Tensor, hard_class: torch.Tensor, tau: float) -> torch.Tensor:
    """Token-level contrastive loss: each hard prompt t*_d picks its class's soft prompt among all classes,
    P(d | t*_d) = exp(sim(t_d, t*_d)/τ) / Σ_c exp(sim(t_c, t*_d)/τ), on L2-normalised soft [C, D] and hard [M, D]
    vectors (token embeddings or encoder features, `token_alignment` in the config)."""
    # float32: under autocast the soft side arrives in bf16/fp16 while the hard one is an fp32 buffer
    soft, hard = F.normalize(soft.float(), dim=-1), F.normalize(hard.float(), dim=-1)
    return F.cross_entropy(hard @ soft.t() / tau, hard_class)


def prompt_alignment(soft: torch.Tensor, hard: torch.Tensor, hard_class: torch.Tensor) -> torch.Tensor:
    """Prompt-level L1: ||t_c - mean hard_c||_1 per class, averaged over classes, on L2-normalised encoder
    features (the mean of a class's hard features normalised again)."""
    soft, hard = F.normalize(soft.float(), dim=-1), F.normalize(hard.float(), dim=-1)
    counts = torch.bincount(hard_class, minlength=soft.shape[0]).clamp(min=1).unsqueeze(1)
    hard_mean = torch.zeros_like(soft).index_add_(0, hard_class, hard) / counts
    # L1 norm per prompt, averaged over prompts (F.l1_loss would also average over the D dimensions: D x smaller)
    return (soft - F.normalize(hard_mean, dim=-1)).abs().sum(dim=-1).mean()


def soft_hard_alignment(
    soft: torch.Tensor, hard: torch.Tensor, hard_class: torch.Tensor, tau: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(token-level contrastive loss, prompt-level L1 loss), both on encoder features [C, D] and [M, D]."""
    return token_alignment(soft, hard, hard_class, tau), prompt_alignment(soft, hard, hard_class)


def mean_token_embedding(embeds: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The mean of a prompt's token embeddings [N, L, W] between the start token and the end token (both left
    out): [N, W]. The end token is the highest id in CLIP's vocabulary, so argmax finds it."""
    end = tokens.argmax(dim=-1, keepdim=True)
    position = torch.arange(tokens.shape[1], device=tokens.device).unsqueeze(0)
    inside = ((position > 0) & (position < end)).to(embeds.dtype).unsqueeze(-1)
    return (embeds * inside).sum(dim=1) / inside.sum(dim=1).clamp(min=1)


def prototype_loss(
    features: torch.Tensor, prototypes: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """Mean 1 - cos(feature, prototype of its class), over samples whose class has a prototype."""
    keep = valid[targets]
    if not keep.any():
        return features.sum() * 0.0
    cos = (F.normalize(features[keep], dim=-1) * F.normalize(prototypes[targets[keep]], dim=-1)).sum(-1)
    return (1.0 - cos).mean()


class MPAFER(FerModel):
    method = "mpa-fer"

    def __init__(self, backbone, labels, prompts, config):
        super().__init__(backbone, labels, prompts, config)
        if not isinstance(prompts, HardPrompts):
            raise ConfigError(f"MPA-FER needs hard prompts (method mpa-fer), got {prompts.method} ({prompts.path})")
        if len(self.levels) != 1:
            raise ConfigError(f"MPA-FER reads one crop (the face), got levels {list(self.levels)}")
        self.clip.requires_grad_(False)  # CLIP stays frozen; only the prompts learn
        self.top_k = int(config.get("top_k", 16))
        self.tau = float(config.get("alignment_temperature", 0.07))
        self.use = {
            k: bool(config.get(k, True))
            for k in ("soft_hard_alignment", "prototype_alignment", "global_local", "deep_visual_prompts")
        }
        self.weights = {"vt": 1.0, "t": 1.0, "v": 1.0, **config.get("loss_weights", {})}

        # CoOp soft prompt: [SOS] ctx_1..ctx_n <class phrase> [EOS]; ctx embeddings are learnable.
        n_ctx = int(config.get("n_ctx", 16))
        width_t = self.clip.token_embedding.weight.shape[1]
        placeholder = " ".join(["X"] * n_ctx)
        self.register_buffer(
            "soft_tokens",
            backbone.tokenize([f"{placeholder} {prompts.soft_suffix(e)}" for e in labels.emotions]),
            persistent=False,
        )
        self.n_ctx = n_ctx
        self.ctx = nn.Parameter(torch.randn(n_ctx, width_t) * 0.02)

        blocks = self.clip.visual.transformer.resblocks
        n_vp = int(config.get("n_visual_prompts", 4))
        width_v = self.clip.visual.conv1.out_channels
        self.visual_prompts = (
            nn.Parameter(torch.randn(len(blocks), n_vp, width_v) * 0.02) if self.use["deep_visual_prompts"] else None
        )

        # Hard prompts through the frozen text encoder: constant, computed once and kept in checkpoints.
        hard_texts, hard_class = [], []
        for c, emotion in enumerate(labels.emotions):
            texts = prompts.hard_prompts(emotion)
            hard_texts += texts
            hard_class += [c] * len(texts)
        hard_tokens = backbone.tokenize(hard_texts)
        with torch.no_grad():
            hard = self.clip.encode_text(hard_tokens)
            hard_embeds = mean_token_embedding(self.clip.token_embedding(hard_tokens), hard_tokens)
        self.register_buffer("hard_features", F.normalize(hard, dim=-1))
        # token_alignment: embedding (default) aligns the soft prompts' token embeddings, before the text
        # encoder, with the hard prompts' (the public descriptions); encoder aligns the encoded features.
        self.token_level = config.get("token_alignment", "embedding")
        if self.token_level not in ("embedding", "encoder"):
            raise ConfigError(f"mpa-fer token_alignment must be embedding or encoder, got {self.token_level!r}")
        self.register_buffer("hard_embeddings", hard_embeds, persistent=False)  # frozen embeddings: rebuilt at load
        self.register_buffer("hard_class", torch.tensor(hard_class, dtype=torch.long, device=hard.device))
        dim = backbone.embed_dim
        self.register_buffer("proto_sum", torch.zeros(len(labels), dim, device=hard.device))
        self.register_buffer("proto_count", torch.zeros(len(labels), device=hard.device))
        mode = config.get("prototypes", "precomputed")
        if mode not in ("precomputed", "online"):
            raise ConfigError(f"mpa-fer prototypes must be precomputed or online, got {mode!r}")
        self.online_prototypes = mode == "online"

    # -- text side -------------------------------------------------------------------------
    def soft_embeddings(self) -> torch.Tensor:
        """The soft prompts' token embeddings [C, L, W]: [SOS] ctx_1..ctx_n <class phrase> [EOS]."""
        tokens = self.soft_tokens
        embeds = self.clip.token_embedding(tokens)
        ctx = self.ctx.to(embeds.dtype).unsqueeze(0).expand(tokens.shape[0], -1, -1)
        return torch.cat([embeds[:, :1], ctx, embeds[:, 1 + self.n_ctx :]], dim=1)

    def soft_text_features(self, embeds: torch.Tensor | None = None) -> torch.Tensor:
        """The soft prompts through the text encoder; `embeds`: their token embeddings, when already built."""
        embeds = self.soft_embeddings() if embeds is None else embeds
        return encode_text_tokens(self.clip, self.soft_tokens, embeds)[0]

    @torch.no_grad()
    def text_features(self) -> dict[str, torch.Tensor]:
        return {"classes": F.normalize(self.soft_text_features(), dim=-1)}

    # -- image side ------------------------------------------------------------------------
    def encode_crops(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled, patches = encode_image_tokens(self.clip.visual, images, self.visual_prompts)
        return {"global": pooled, "local": patches} if self.use["global_local"] else {"global": pooled}

    def combine(self, per_level: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v[:, 0] for k, v in per_level.items()}  # one level: the face

    def head(self) -> Head:
        return Head("global_local", ("classes",), float(self.logit_scale), self.top_k)

    def image_outputs(self) -> tuple[str, ...]:
        return ("global", "local") if self.use["global_local"] else ("global",)

    # -- prototypes of the frozen encoder --------------------------------------------------
    @torch.no_grad()
    def accumulate_prototypes(self, crops: torch.Tensor, targets: torch.Tensor) -> None:
        """Add frozen, un-prompted image features to the class means (a pass over the training set)."""
        feats = F.normalize(self.clip.encode_image(self.check_crops(crops)[:, 0]).float(), dim=-1)  # fp32 sums
        sums = torch.zeros_like(self.proto_sum).index_add_(0, targets, feats)
        counts = torch.zeros_like(self.proto_count).index_add_(0, targets, torch.ones_like(targets, dtype=feats.dtype))
        if torch.distributed.is_available() and torch.distributed.is_initialized():  # every rank: the same means
            torch.distributed.all_reduce(sums)
            torch.distributed.all_reduce(counts)
        self.proto_sum += sums
        self.proto_count += counts

    def prototypes(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.proto_sum / self.proto_count.clamp(min=1).unsqueeze(1), self.proto_count > 0

    def needs_prototypes(self) -> bool:
        """True while `prototypes: precomputed` prototypes are still to be built (the Trainer builds them
        from the un-augmented training set before the first epoch)."""
        return self.use["prototype_alignment"] and not self.online_prototypes and not bool(self.proto_count.any())

    # -- training --------------------------------------------------------------------------
    def forward(self, crops, targets=None) -> Output:
        image = self.encode_image(crops)
        soft_embeds = self.soft_embeddings()  # once: the encoder and the embedding-level alignment both read it
        soft = self.soft_text_features(soft_embeds)
        logits = self.classify(image, {"classes": soft})
        out = Output(logits=logits)
        if targets is None:
            return out
        w = self.weights
        out.losses["vt"] = w["vt"] * F.cross_entropy(logits, targets)
        if self.use["soft_hard_alignment"]:
            if self.token_level == "embedding":
                soft_tokens = mean_token_embedding(soft_embeds, self.soft_tokens)
                token = token_alignment(soft_tokens, self.hard_embeddings, self.hard_class, self.tau)
            else:
                token = token_alignment(soft, self.hard_features, self.hard_class, self.tau)
            prompt = prompt_alignment(soft, self.hard_features, self.hard_class)
            out.losses["t"] = w["t"] * (token + prompt)
            out.extras.update({"t.token": token.detach(), "t.prompt": prompt.detach()})
        if self.use["prototype_alignment"]:
            if self.online_prototypes and self.training:
                self.accumulate_prototypes(crops, targets)
            elif self.needs_prototypes():  # never a silent zero loss
                raise ConfigError(
                    "MPA-FER prototypes: precomputed, but none have been built. training/train.py builds them "
                    "before the first epoch; elsewhere call model.accumulate_prototypes(crops, targets) over the "
                    "training set first, or set prototypes: online"
                )
            protos, valid = self.prototypes()
            out.losses["v"] = w["v"] * prototype_loss(image["global"], protos, targets, valid)
        return out
