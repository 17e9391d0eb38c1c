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


class DuplicateKeyError(yaml.YAMLError):
    """A mapping names the same key twice (PyYAML would keep the last one silently)."""

    def __init__(self, key: object, line: int):
        self.key, self.line = key, line
        super().__init__(f"key {key!r} appears twice in one mapping (line {line})")


class _UniqueLoader(_Loader):
    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise DuplicateKeyError(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(stream: str | bytes | IO, unique_keys: bool = False) -> Any:
    """unique_keys: a key given twice in one mapping raises DuplicateKeyError instead of the last one winning."""
    return yaml.load(stream, Loader=_UniqueLoader if unique_keys else _Loader)  # noqa: S506 - SafeLoader subclasses
