"""What every data-set adapter returns: samples with labels in a label set's order, plus what was skipped."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ros_fer.errors import ConfigError
from ros_fer.labels import LabelSet

# Folder and column names seen in the wild -> the emotion keys of config/labels.yaml.
ALIASES = {
    "anger": "anger",
    "angry": "anger",
    "disgust": "disgust",
    "disgusted": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "scared": "fear",
    "happiness": "happiness",
    "happy": "happiness",
    "joy": "happiness",
    "sadness": "sadness",
    "sad": "sadness",
    "surprise": "surprise",
    "surprised": "surprise",
    "neutral": "neutral",
    "contempt": "contempt",
}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class DataError(ConfigError):
    """A data-set file that cannot be read as its format says; the message names the file and line."""


@dataclass
class Sample:
    path: Path
    label: int  # index in the split's label set
    face: list[float] | None = None  # known boxes (annotations, or the detector cache)
    body: list[float] | None = None
    part: int = 0  # which part of a `combined` data set it came from (index into Split.parts)


@dataclass
class Split:
    name: str
    labels: LabelSet
    samples: list[Sample]
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    parts: list[dict] = field(default_factory=list)  # a `combined` set: each part's data config (Sample.part)

    def summary(self) -> str:
        counts = Counter(s.label for s in self.samples)
        per_class = ", ".join(f"{c}={counts.get(i, 0)}" for i, c in enumerate(self.labels.classes))
        skipped = "; skipped " + ", ".join(f"{n} {why}" for why, n in self.skipped.items()) if self.skipped else ""
        empty = [c for i, c in enumerate(self.labels.classes) if not counts.get(i)]
        none = f"; no images of {', '.join(empty)}" if empty and self.samples else ""
        return f"{self.name}: {len(self.samples)} images ({per_class}){skipped}{none}"

    def require_images(self, where: str) -> None:
        """An error when nothing usable is left (every image skipped, or none found), naming why."""
        if not self.samples:
            why = "; ".join(f"{n} {reason}" for reason, n in self.skipped.items()) or "no images found"
            raise DataError(f"{where}: the {self.name} split has no usable images ({why})")


def emotion_key(name: str, where: str) -> str:
    key = ALIASES.get(name.strip().lower())
    if key is None:
        raise DataError(f"{where}: unknown class name {name!r} (known: {sorted(set(ALIASES))})")
    return key


def require(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataError(f"{what} not found: {path}")
    return path
