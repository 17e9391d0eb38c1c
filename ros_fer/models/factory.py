"""Build a model from a config (config/models/<name>.yaml + overrides); save and load checkpoints
(safetensors + JSON metadata: the resolved config and the prompts it was trained with)."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..backbone import BackboneSpec, load_backbone
from ..errors import CheckpointError, ConfigError
from ..labels import LabelSet, load_label_set
from ..overrides import merge, parse_overrides  # noqa: F401 - re-exported
from ..paths import file_sha256, replace, resolve
from ..prompts import check_covers, load_prompts, prompts_from_text, user_prompts
from ..yaml_loader import load_yaml
from .base import FerModel
from .mlper import MLPER
from .mpa_fer import MPAFER
from .zeroshot import ZeroShotCLIP

METHODS: dict[str, type[FerModel]] = {"mlper": MLPER, "mpa-fer": MPAFER, "zeroshot": ZeroShotCLIP}
CHECKPOINT_FORMAT = "ros_fer.checkpoint/1"


def load_config(config: str | os.PathLike[str] | dict, overrides: dict | None = None) -> dict:
    """A method config by name (config/models/<name>.yaml), path or dict, with overrides merged in."""
    if isinstance(config, dict):
        cfg = copy.deepcopy(config)
    else:
        with open(resolve("models", config), encoding="utf-8") as fh:
            cfg = load_yaml(fh) or {}
    cfg = merge(cfg, overrides or {})
    if cfg.get("method") not in METHODS:
        raise ConfigError(f"config `method` must be one of {sorted(METHODS)}, got {cfg.get('method')!r}")
    for key in ("backbone", "labels", "prompts"):
        if key not in cfg:
            raise ConfigError(f"{cfg['method']} config lacks `{key}`")
    return cfg


def create_model(
    config: str | os.PathLike[str] | dict,
    overrides: dict | None = None,
    device: str | torch.device = "cpu",
    _prompts_bytes: bytes | None = None,
    _labels: LabelSet | None = None,
) -> FerModel:
    """`labels` may name a built-in set or a label file: a file's own words then replace `prompts`."""
    cfg = load_config(config, overrides)
    labels = _labels or load_label_set(cfg["labels"])
    if labels.prompts is not None and _prompts_bytes is None:
        if cfg["method"] == "mpa-fer":
            raise ConfigError(
                f"label file {labels.source}: MPA-FER learns its soft prompts per label set from LLM descriptions "
                "(a prompt file of method mpa-fer); use a label file with zeroshot or MLPER"
            )
        prompts = user_prompts(labels)
    elif _prompts_bytes is not None:
        prompts = prompts_from_text(_prompts_bytes, Path(f"<checkpoint prompts {cfg['prompts']}>"))
    else:
        prompts = load_prompts(cfg["prompts"])
    check_covers(prompts, labels, cfg.get("levels", ["face"]))
    backbone = load_backbone(BackboneSpec.from_dict(cfg["backbone"]), device=device)
    return METHODS[cfg["method"]](backbone, labels, prompts, cfg).to(device)


def _clip_trained(model: FerModel) -> bool:
    return any(p.requires_grad for p in model.clip.parameters())


def save_model(model: FerModel, path: str | os.PathLike[str]) -> Path:
    """Write a checkpoint atomically. A frozen CLIP is not stored (it comes from the backbone spec)."""
    keep_clip = _clip_trained(model)
    state = {
        k: v.detach().contiguous().cpu()
        for k, v in model.state_dict().items()
        if keep_clip or not k.startswith("clip.")
    }
    meta = {
        "format": CHECKPOINT_FORMAT,
        "config": json.dumps(model.config),
        "prompts": model.prompts.text,
        "identity": json.dumps(model.identity()),
        "includes_clip": json.dumps(keep_clip),
        "label_set": json.dumps(model.labels.to_dict()),  # a label file's states travel with the checkpoint
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    replace(tmp, path)
    return path


def read_checkpoint_meta(path: str | os.PathLike[str]) -> dict[str, str] | None:
    """A ros_fer checkpoint's metadata, or None for any other file (e.g. bare open_clip weights)."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return None
    return meta if meta.get("format") == CHECKPOINT_FORMAT else None


def load_model(
    path: str | os.PathLike[str], device: str | torch.device = "cpu", overrides: dict | None = None
) -> FerModel:
    """Rebuild a trained model from its checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    meta = read_checkpoint_meta(path)
    if meta is None:
        raise CheckpointError(f"{path} is not a ros_fer checkpoint (no {CHECKPOINT_FORMAT} metadata)")
    cfg = load_config(json.loads(meta["config"]), overrides)
    saved_identity = json.loads(meta["identity"])
    includes_clip = json.loads(meta["includes_clip"])
    if includes_clip:  # the checkpoint holds the whole CLIP: start from random weights, fetch nothing
        cfg = merge(cfg, {"backbone": {"pretrained": None, "checkpoint": None}})
    prompts = meta["prompts"].encode("utf-8")  # the prompts it was trained with
    if overrides and "labels" in overrides:
        labels = load_label_set(cfg["labels"])
        if labels.prompts is not None:  # a label file (open vocabulary on a trained MLPER): its own words
            prompts = None
    else:  # the label set it was trained with, whole (a label file need not exist here)
        labels = LabelSet.from_dict(json.loads(meta["label_set"])) if "label_set" in meta else None
    model = create_model(cfg, device=device, _prompts_bytes=prompts, _labels=labels)
    with safe_open(str(path), framework="pt", device=str(device)) as fh:
        state = {k: fh.get_tensor(k) for k in fh.keys()}
    expected = {k: v for k, v in model.state_dict().items() if includes_clip or not k.startswith("clip.")}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k} {list(state[k].shape)} vs {list(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"checkpoint {path} does not fit the {cfg['method']} model it describes: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, shape mismatch {wrong[:5]}"
        )
    model.load_state_dict(state, strict=False)
    model.backbone.weights = saved_identity["weights"]
    model.checkpoint_sha256 = file_sha256(path)
    return model
