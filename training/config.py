"""Training configs: YAML files composed CoOp-style (`_base_: [methods/mlper.yaml, data/rafdb.yaml]`),
then `key=value` overrides from the command line."""

from __future__ import annotations

from pathlib import Path

from ros_fer.errors import ConfigError
from ros_fer.overrides import check_known, merge, parse_overrides
from ros_fer.yaml_loader import load_yaml

CONFIGS = Path(__file__).resolve().parent / "configs"

# Every key a training config may hold (dotted paths), whether a shipped config sets it or the code's default
# serves. A config or override with any other key is refused before anything loads, naming the nearest key.
KNOWN_KEYS = frozenset(
    [
        *("model", "model.config", "model.method", "model.labels", "model.prompts", "model.levels"),
        *("model.backbone", "model.backbone.name", "model.backbone.pretrained", "model.backbone.checkpoint"),
        "model.backbone.seed",
        # MLPER
        *("model.itm", "model.itm.enabled", "model.itm.weight", "model.itm.hard_negatives", "model.itm.levels"),
        *("model.itm.heads", "model.itm.ffn_ratio", "model.itm.learnable_level_weights", "model.mlp_hidden"),
        *("model.train_logit_scale", "model.train_image_encoder", "model.train_text_encoder"),
        # MPA-FER
        *("model.top_k", "model.alignment_temperature", "model.soft_hard_alignment", "model.prototype_alignment"),
        *("model.global_local", "model.deep_visual_prompts", "model.loss_weights", "model.loss_weights.vt"),
        *("model.loss_weights.t", "model.loss_weights.v", "model.n_ctx", "model.n_visual_prompts"),
        *("model.token_alignment", "model.prototypes"),
        # zero-shot
        "model.scoring",
        # data (the adapters' options; a combined set's `parts` is a list of such configs)
        *("data", "data.dataset", "data.root", "data.labels", "data.images", "data.val_fraction", "data.seed"),
        *("data.on_missing", "data.balanced", "data.occlusion", "data.pose30", "data.pose45", "data.pose"),
        *("data.image_is_face", "data.detector", "data.person_weights", "data.parts"),
        # train
        *("train", "train.epochs", "train.batch_size", "train.lr", "train.optimizer", "train.momentum"),
        *("train.weight_decay", "train.scheduler", "train.scheduler.kind", "train.scheduler.gamma", "train.seed"),
        *("train.device", "train.deterministic", "train.full_train_split", "train.amp", "train.num_workers"),
        *("train.tensorboard", "train.save_every_steps", "train.max_steps", "train.progress", "train.augment"),
        *("train.augment.hflip", "train.augment.color_jitter", "train.augment.random_erasing"),
    ]
)


def resolve_config(name: str | Path) -> Path:
    path = Path(name)
    for candidate in (path, CONFIGS / path, CONFIGS / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
    raise ConfigError(f"no training config {str(name)!r}; known: {', '.join(known)}")


def _compose(path: Path) -> dict:
    data = load_yaml(path.read_text()) or {}
    cfg: dict = {}
    for base in data.pop("_base_", []):
        cfg = merge(cfg, _compose(resolve_config(path.parent / base)))
    return merge(cfg, data)


def load_train_config(name: str | Path, overrides: list[str] | dict | None = None) -> dict:
    path = resolve_config(name)
    extra = parse_overrides(overrides) if isinstance(overrides, list) else overrides or {}
    check_known(extra, KNOWN_KEYS, "override")
    cfg = merge(_compose(path), extra)
    check_known(cfg, KNOWN_KEYS, f"training config {path}")
    for section in ("model", "data", "train"):
        if section not in cfg:
            raise ConfigError(f"training config {path} lacks its `{section}` section")
    return cfg


def model_overrides(cfg: dict) -> dict:
    """What create_model needs besides the method config name: everything under `model` + the label set."""
    return {**{k: v for k, v in cfg["model"].items() if k != "config"}, "labels": cfg["data"]["labels"]}
