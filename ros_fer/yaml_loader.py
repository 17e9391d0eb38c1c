"""YAML as our config files are read: safe, and with YAML 1.2 floats, so `lr: 1e-3` is a number and not the
string PyYAML's YAML 1.1 rules make of an exponent without a dot."""

from __future__ import annotations

import re
from typing import IO, Any

import yaml


class _Loader(yaml.SafeLoader):
    pass


_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def load_yaml(stream: str | bytes | IO) -> Any:
    return yaml.load(stream, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
