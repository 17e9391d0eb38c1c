"""`key=value` overrides (`ros-fer --set`, `train.py`'s arguments): parsed as YAML into a nested dict, merged
into a config, and checked against the keys a config may have, naming the nearest known key for a typo.
Light on purpose: the front doors parse their arguments before torch is imported."""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterable, Sequence

from .errors import ConfigError
from .yaml_loader import load_yaml


def merge(base: dict, override: dict) -> dict:
    """Recursive dict merge; override wins."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def parse_overrides(pairs: Sequence[str]) -> dict:
    """`a.b=value` pairs (values parsed as YAML) into a nested dict."""
    out: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {pair!r} is not key=value")
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = load_yaml(value)
        _reject_glued_keys(node[leaf], pair)
    return out


def _reject_glued_keys(value, pair: str) -> None:
    """`x={kind:cosine}` is YAML for the key "kind:cosine" with no value: say so instead of merging a
    key nothing reads."""
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and ":" in k:
                raise ConfigError(
                    f"override {pair!r}: key {k!r} needs a space after the colon ({k.replace(':', ': ', 1)})"
                )
            _reject_glued_keys(v, pair)
    elif isinstance(value, list):
        for v in value:
            _reject_glued_keys(v, pair)


def key_paths(cfg: dict, prefix: str = "") -> list[str]:
    """Every key of a nested dict as a dotted path (lists are values, not descended into)."""
    out = []
    for key, value in cfg.items():
        path = f"{prefix}{key}"
        out.append(path)
        if isinstance(value, dict):
            out += key_paths(value, path + ".")
    return out


def nearest(key: str, known: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest known key, or '' when none is close."""
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def check_known(cfg: dict, known: Iterable[str], what: str) -> None:
    """ConfigError naming every key of `cfg` (any depth) that `known` (dotted paths) lacks, each with the
    nearest known key, and the keys known beside the first."""
    known = set(known)
    unknown = [path for path in key_paths(cfg) if path not in known]
    if unknown:
        named = "; ".join(f"{path!r}{nearest(path, known)}" for path in unknown)
        parent = unknown[0].rpartition(".")[0]
        here = ", ".join(sorted(k for k in known if k.rpartition(".")[0] == parent))
        raise ConfigError(f"unknown {what} key(s): {named}; known beside the first: {here}")
