"""Label sets: each data set's classes in its own index order, and per-emotion metadata."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from .errors import ConfigError
from .paths import config_dir
from .yaml_loader import load_yaml


@dataclass(frozen=True)
class Emotion:
    key: str
    adjective: str
    rep155: str
    valence: float = math.nan
    arousal: float = math.nan


@dataclass(frozen=True)
class LabelSet:
    name: str
    emotions: tuple[Emotion, ...]

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(e.key for e in self.emotions)

    def __len__(self) -> int:
        return len(self.emotions)

    def index(self, key: str) -> int:
        try:
            return self.classes.index(key)
        except ValueError:
            raise ConfigError(f"label {key!r} is not in label set {self.name!r} {list(self.classes)}") from None

    def rep155(self) -> tuple[str, ...]:
        """The REP-155 hri_msgs/Expression string of each class, in label order."""
        return tuple(e.rep155 for e in self.emotions)


@lru_cache(maxsize=1)
def _labels_file() -> dict:
    with open(config_dir() / "labels.yaml", encoding="utf-8") as fh:
        return load_yaml(fh)


def known_label_sets() -> list[str]:
    return sorted(_labels_file()["sets"])


def load_label_set(name: str) -> LabelSet:
    data = _labels_file()
    sets, emotions = data["sets"], data["emotions"]
    if name not in sets:
        raise ConfigError(f"unknown label set {name!r}; known label sets: {', '.join(known_label_sets())}")
    members = []
    for key in sets[name]:
        if key not in emotions:
            raise ConfigError(f"label set {name!r} names emotion {key!r}, which labels.yaml does not define")
        members.append(Emotion(key=key, **emotions[key]))
    if len(set(sets[name])) != len(members):
        raise ConfigError(f"label set {name!r} lists a class twice: {sets[name]}")
    return LabelSet(name=name, emotions=tuple(members))
