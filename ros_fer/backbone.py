"""open_clip backbones: loading by name + pretrained tag, from a local file, or seeded random;
plus token-level encoders (per-token text features, prompted image tokens) the methods share."""

from __future__ import annotations

import logging
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

import open_clip
import torch
from open_clip.transformer import text_global_pool
from torch import nn

from .errors import CheckpointError, ConfigError, WeightsUnavailableError
from .paths import config_dir, file_sha256

TINY = "tiny-random"
PROBE_TIMEOUT_S = 3.0


@lru_cache(maxsize=1)
def register_local_backbones() -> None:
    """Make config/backbones/*.json (e.g. tiny-random) known to open_clip by name."""
    folder = config_dir() / "backbones"
    if folder.is_dir():
        open_clip.add_model_config(folder)


@dataclass(frozen=True)
class BackboneSpec:
    """Which CLIP: an open_clip model name and at most one weight source (none = seeded random)."""

    name: str
    pretrained: str | None = None
    checkpoint: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.pretrained and self.checkpoint:
            raise ConfigError("give a backbone either a pretrained tag or a checkpoint file, not both")

    @classmethod
    def from_dict(cls, cfg: dict) -> BackboneSpec:
        known = {"name", "pretrained", "checkpoint", "seed"}
        extra = set(cfg) - known
        if extra or "name" not in cfg:
            raise ConfigError(f"backbone config needs `name` and may have {sorted(known)}; got {sorted(cfg)}")
        return cls(**{k: cfg[k] for k in known if cfg.get(k) is not None})

    def to_dict(self) -> dict:
        return {"name": self.name, "pretrained": self.pretrained, "checkpoint": self.checkpoint, "seed": self.seed}


def weights_id(spec: BackboneSpec) -> str:
    """A stable name for the weights: text banks record it, and a bank must match its model's."""
    if spec.checkpoint:
        return f"sha256:{file_sha256(spec.checkpoint)}"
    if spec.pretrained:
        return f"pretrained:{spec.pretrained}"
    return f"random:{spec.seed}"


@dataclass
class Backbone:
    spec: BackboneSpec
    clip: nn.Module
    tokenizer: object
    weights: str
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def embed_dim(self) -> int:
        return int(self.clip.text_projection.shape[1])

    @property
    def context_length(self) -> int:
        return int(self.clip.context_length)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Token ids; a prompt the text encoder would silently truncate is an error instead."""
        encode = getattr(self.tokenizer, "encode", None)
        if encode is not None:
            for text in texts:
                n = len(encode(text)) + 2  # start and end tokens
                if n > self.context_length:
                    raise ConfigError(f"prompt is {n} tokens, over the text encoder's {self.context_length}: {text!r}")
        return self.tokenizer(texts).to(self.clip.logit_scale.device)


def _hub_host() -> str:
    return urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"


def _reachable(host: str) -> bool:
    try:
        socket.create_connection((host, 443), timeout=PROBE_TIMEOUT_S).close()
        return True
    except OSError:
        return False


def _cached(cfg: dict) -> bool:
    """Whether open_clip would find these weights without the network."""
    hub = cfg.get("hf_hub")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo = hub.rstrip("/")
        for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            if isinstance(try_to_load_from_cache(repo, filename), str):
                return True
    url = cfg.get("url")
    return bool(url) and (Path("~/.cache/clip").expanduser() / os.path.basename(url)).is_file()


def _check_fetchable(name: str, tag: str) -> None:
    """Fail in seconds, not after a minute of retries, when pretrained weights cannot be had."""
    cfg = open_clip.get_pretrained_cfg(name, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise ConfigError(f"backbone {name} has no pretrained tag {tag!r}; known tags: {', '.join(tags) or 'none'}")
    if _cached(cfg):
        return
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    hosts = ([] if offline or not cfg.get("hf_hub") else [_hub_host()]) + (
        [urlparse(cfg["url"]).hostname] if cfg.get("url") else []
    )
    if not any(_reachable(h) for h in hosts if h):
        raise WeightsUnavailableError(
            f"could not fetch pretrained weights {name}/{tag}: they are not in the local cache and "
            f"{' or '.join(h for h in hosts if h) or 'the hub (HF_HUB_OFFLINE is set)'} cannot be reached. "
            "Fetch them once on a connected machine (open_clip caches them), or give a local weight file "
            "instead of the pretrained tag.",
            name,
        )


def load_backbone(spec: BackboneSpec, device: str | torch.device = "cpu") -> Backbone:
    register_local_backbones()
    if spec.pretrained and Path(spec.pretrained).is_file():  # open_clip also takes a file as `pretrained`
        spec = BackboneSpec(spec.name, checkpoint=spec.pretrained, seed=spec.seed)
    if spec.name not in open_clip.list_models():
        raise ConfigError(f"unknown backbone {spec.name!r}; open_clip knows e.g. ViT-B-32, ViT-B-16, ViT-L-14, {TINY}")
    if spec.pretrained:
        _check_fetchable(spec.name, spec.pretrained)
        try:
            clip = open_clip.create_model(spec.name, pretrained=spec.pretrained, device=device)
        except Exception as exc:  # noqa: BLE001 - any download/parse failure gets the same advice
            raise WeightsUnavailableError(
                f"could not load pretrained weights {spec.name}/{spec.pretrained}: {exc}. "
                "Give a local weight file instead of the pretrained tag.",
                spec.name,
            ) from exc
    else:
        with torch.random.fork_rng(devices=[]), quiet_root_warnings():  # reproducible, RNG untouched
            torch.manual_seed(spec.seed)
            clip = open_clip.create_model(spec.name, pretrained=None, device=device)
        if spec.checkpoint:
            _load_weights(clip, spec)
    clip.eval()
    pp = clip.visual.preprocess_cfg
    size = clip.visual.image_size
    return Backbone(
        spec=spec,
        clip=clip,
        tokenizer=open_clip.get_tokenizer(spec.name),
        weights=weights_id(spec),
        image_size=int(size[0] if isinstance(size, (tuple, list)) else size),
        mean=tuple(pp["mean"]),
        std=tuple(pp["std"]),
    )


@contextmanager
def quiet_root_warnings():
    """open_clip warns on the root logger that an un-pretrained model is random: here that is intended."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _load_weights(clip: nn.Module, spec: BackboneSpec) -> None:
    path = Path(spec.checkpoint or "")
    if not path.is_file():
        raise CheckpointError(f"backbone checkpoint {path} does not exist")
    try:
        open_clip.load_checkpoint(clip, str(path), strict=True, weights_only=True)
    except Exception as exc:  # noqa: BLE001
        detail = str(exc).strip().splitlines()
        raise CheckpointError(
            f"backbone checkpoint {path} does not fit {spec.name}: {' '.join(detail[:6])[:800]}"
        ) from exc


# ---- token-level encoders -------------------------------------------------------------------


def encode_text_tokens(
    clip: nn.Module, tokens: torch.Tensor, embeddings: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP.encode_text, also returning every token projected to the joint space.

    `embeddings` replaces the token embeddings (soft prompts); `tokens` still locates the EOT
    token whose feature is the sentence feature. Returns (pooled [N, D], tokens [N, T, D]).
    """
    if not hasattr(clip, "token_embedding"):
        raise ConfigError("this backbone's text tower is not a CLIP transformer; token-level methods need one")
    cast = clip.transformer.get_cast_dtype()
    x = (clip.token_embedding(tokens) if embeddings is None else embeddings).to(cast)
    x = x + clip.positional_embedding.to(cast)
    x = clip.transformer(x, attn_mask=clip.attn_mask)
    x = clip.ln_final(x)
    pooled = text_global_pool(x, tokens, clip.text_pool_type, eos_token_id=getattr(clip, "text_eos_id", None))
    proj = clip.text_projection
    if isinstance(proj, nn.Linear):
        return proj(pooled), proj(x)
    return pooled @ proj, x @ proj


def encode_image_tokens(
    visual: nn.Module, images: torch.Tensor, deep_prompts: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ViT forward, optionally with deep visual prompts, returning (pooled [B, D], patches [B, N, D]).

    deep_prompts [layers, P, width]: before layer i the previous layer's prompt outputs are dropped
    and prompts[i] appended (VPT-deep), so prompts steer the cls/patch tokens but are never read out.
    """
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    if blocks is None or getattr(visual, "attn_pool", None) is not None or visual.pool_type != "tok":
        raise ConfigError("token-level methods need a plain open_clip ViT image tower (cls-token pooling)")
    if deep_prompts is not None and deep_prompts.shape[0] != len(blocks):
        raise ConfigError(f"{deep_prompts.shape[0]} prompt layers for a {len(blocks)}-layer image encoder")
    x = visual._embeds(images)
    n = x.shape[1]
    batch_first = getattr(visual.transformer, "batch_first", True)
    for i, block in enumerate(blocks):
        if deep_prompts is not None:
            prompt = deep_prompts[i].to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
            x = torch.cat([x[:, :n], prompt], dim=1)
        x = block(x) if batch_first else block(x.transpose(0, 1)).transpose(0, 1)
    pooled, patches = visual._pool(x[:, :n])
    if visual.proj is not None:
        pooled, patches = pooled @ visual.proj, patches @ visual.proj
    return pooled, patches
