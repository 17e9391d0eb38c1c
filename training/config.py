"""Training configs: YAML files composed CoOp-style (`_base_: [methods/mlper.yaml, data/rafdb.yaml]`),
then `key=value` overrides from the command line."""

from __future__ import annotations

from pathlib import Path

from ros_fer.errors import ConfigError
from ros_fer.models.factory import merge, parse_overrides
from ros_fer.yaml_loader import load_yaml

CONFIGS = Path(__file__).resolve().parent / "configs"


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
    cfg = merge(_compose(path), extra)
    for section in ("model", "data", "train"):
        if section not in cfg:
            raise ConfigError(f"training config {path} lacks its `{section}` section")
    return cfg


def model_overrides(cfg: dict) -> dict:
    """What create_model needs besides the method config name: everything under `model` + the label set."""
    return {**{k: v for k, v in cfg["model"].items() if k != "config"}, "labels": cfg["data"]["labels"]}
