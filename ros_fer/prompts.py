"""Prompt files (config/prompts/*.yaml): loading, validation and composition into sentences."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError
from .labels import Emotion, LabelSet
from .paths import resolve
from .yaml_loader import load_yaml

LEVELS = ("face", "body", "context")  # MLPER's FE, HP and SC levels, in crop order


def check_levels(levels: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Levels as a canonical tuple in crop order; unknown or repeated levels are an error."""
    unknown = [lv for lv in levels if lv not in LEVELS]
    if unknown or not levels or len(set(levels)) != len(levels):
        raise ConfigError(f"levels must be a non-empty subset of {list(LEVELS)} without repeats, got {list(levels)}")
    return tuple(lv for lv in LEVELS if lv in levels)


@dataclass(frozen=True)
class PromptFile:
    path: Path
    sha256: str
    data: dict = field(repr=False)
    text: str = field(default="", repr=False)  # the file as written, embedded in checkpoints

    @property
    def method(self) -> str:
        return self.data.get("method", "")

    def _class_entry(self, emotion: Emotion) -> dict | list:
        classes = self.data.get("classes", {})
        if emotion.key not in classes:
            raise ConfigError(f"prompt file {self.path} has no entry for class {emotion.key!r}")
        return classes[emotion.key]

    source = "prompt file"  # what errors call the file and its entries
    entry = "class"

    def _format(self, template: str, emotion: Emotion, **parts: str) -> str:
        try:
            return template.format(adjective=emotion.adjective, noun=emotion.key, **parts)
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                f"{self.source} {self.path}: {self.entry} {emotion.key!r}: template {template!r} uses unknown field "
                f"{exc}; it may use " + ", ".join(f"{{{f}}}" for f in ("adjective", "noun", *parts))
            ) from None


class MultiLevelPrompts(PromptFile):
    """MLPER: per class a face (FE), body (HP) and context (SC) phrase."""

    def parts(self, emotion: Emotion) -> dict[str, str]:
        entry = self._class_entry(emotion)
        missing = [lv for lv in LEVELS if not isinstance(entry, dict) or not entry.get(lv)]
        if missing:
            raise ConfigError(f"prompt file {self.path}: class {emotion.key!r} lacks level(s) {missing}")
        return {lv: str(entry[lv]).strip() for lv in LEVELS}

    def level_prompt(self, emotion: Emotion, level: str) -> str:
        return self._format(self.data["level_templates"][level], emotion, **self.parts(emotion))

    def sentence(self, emotion: Emotion, levels: tuple[str, ...] = LEVELS) -> str:
        """The complete sentence T^c from the active levels' phrases."""
        key = "+".join(check_levels(levels))
        sentences = self.data.get("sentences", {})
        if key not in sentences:
            raise ConfigError(f"prompt file {self.path} has no sentence template for levels {key!r}")
        return self._format(sentences[key], emotion, **self.parts(emotion))

    def level_prompts(self, labels: LabelSet, level: str) -> list[str]:
        return [self.level_prompt(e, level) for e in labels.emotions]

    def sentences(self, labels: LabelSet, levels: tuple[str, ...] = LEVELS) -> list[str]:
        return [self.sentence(e, levels) for e in labels.emotions]


class UserPrompts(MultiLevelPrompts):
    """The words of a label file (`labels.load_label_file`), composed as MLPER composes its prompts: a state's
    level words through `level_templates`, its complete sentence T^c through `sentences` (both MLPER's unless
    the file gives its own). A state's `prompt` sentence (else the file's `template`) stands in for any level it
    has no words for."""

    source, entry = "label file", "state"

    def _fallback(self, emotion: Emotion, level: str) -> str:
        words = self._class_entry(emotion)
        sentence = words.get("prompt") or self.data.get("template")
        if not sentence:
            have = [lv for lv in LEVELS if lv in words]
            raise ConfigError(
                f"label file {self.path}: state {emotion.key!r} has no words for level {level!r}, which the model "
                f"uses (it has {have}); add `{level}:` words, a `prompt` sentence, or a file `template`"
            )
        return self._format(sentence, emotion)

    def parts(self, emotion: Emotion) -> dict[str, str]:
        return {lv: w for lv, w in self._class_entry(emotion).items() if lv in LEVELS}

    def level_prompt(self, emotion: Emotion, level: str) -> str:
        parts = self.parts(emotion)
        if level not in parts:
            return self._fallback(emotion, level)
        return self._format(self.data["level_templates"][level], emotion, **parts)

    def sentence(self, emotion: Emotion, levels: tuple[str, ...] = LEVELS) -> str:
        levels = check_levels(levels)
        parts = self.parts(emotion)
        missing = [lv for lv in levels if lv not in parts]
        if missing:
            return self._fallback(emotion, missing[0])
        key = "+".join(levels)
        if key not in self.data["sentences"]:
            raise ConfigError(f"label file {self.path} has no sentence template for levels {key!r}")
        return self._format(self.data["sentences"][key], emotion, **parts)


class HardPrompts(PromptFile):
    """MPA-FER: per class several LLM descriptions at several granularities."""

    def hard_prompts(self, emotion: Emotion) -> list[str]:
        entry = self._class_entry(emotion)
        granularities = self.data.get("granularities", [])
        if not isinstance(entry, dict) or any(not entry.get(g) for g in granularities):
            raise ConfigError(f"prompt file {self.path}: class {emotion.key!r} needs descriptions for {granularities}")
        return [
            self._format(self.data["template"], emotion, description=str(d).strip())
            for g in granularities
            for d in entry[g]
        ]

    def soft_suffix(self, emotion: Emotion) -> str:
        self._class_entry(emotion)  # the class must be described even if only its name is used here
        return self._format(self.data["soft_suffix"], emotion)


class TemplatePrompts(PromptFile):
    """Hand-crafted templates shared by all classes ("a photo of a {adjective} person.")."""

    def prompts(self, emotion: Emotion) -> list[str]:
        return [self._format(t, emotion) for t in self.data["templates"]]


_KINDS: dict[str, type[PromptFile]] = {
    "labels": UserPrompts,
    "mlper": MultiLevelPrompts,
    "mpa-fer": HardPrompts,
    "handcrafted": TemplatePrompts,
}
_REQUIRED: dict[str, tuple[str, ...]] = {
    "labels": ("level_templates", "sentences", "classes"),
    "mlper": ("level_templates", "sentences", "classes"),
    "mpa-fer": ("template", "soft_suffix", "granularities", "classes"),
    "handcrafted": ("templates",),
}


def load_prompts(name_or_path: str | Path) -> PromptFile:
    """A prompt file by name (config/prompts/<name>.yaml) or path, typed by its `method` key."""
    path = resolve("prompts", name_or_path)
    return prompts_from_text(path.read_bytes(), path)


def prompts_from_text(raw: bytes, path: Path) -> PromptFile:
    """A prompt file from its bytes (checkpoints embed the prompts they were trained with)."""
    data = load_yaml(raw) or {}
    kind = data.get("method")
    if kind not in _KINDS:
        raise ConfigError(f"prompt file {path}: `method` must be one of {sorted(_KINDS)}, got {kind!r}")
    missing = [k for k in _REQUIRED[kind] if k not in data]
    if missing:
        raise ConfigError(f"prompt file {path} ({kind}) lacks key(s) {missing}")
    return _KINDS[kind](path=path, sha256=hashlib.sha256(raw).hexdigest(), data=data, text=raw.decode("utf-8"))


def user_prompts(labels: LabelSet) -> UserPrompts:
    """The prompts a label file's words make (MLPER's templates where the file gives none). Stored as text
    like any prompt file: checkpoints embed it, text banks record its sha256."""
    if labels.prompts is None:
        raise ConfigError(f"label set {labels.name!r} is built in; its prompts come from a prompt file")
    mlper = load_prompts("mlper").data
    data = {
        "method": "labels",
        "template": labels.prompts.get("template"),
        "level_templates": {**mlper["level_templates"], **(labels.prompts.get("level_templates") or {})},
        "sentences": {**mlper["sentences"], **(labels.prompts.get("sentences") or {})},
        "classes": labels.prompts["classes"],
    }
    return prompts_from_text(json.dumps(data, indent=1, sort_keys=True).encode("utf-8"), Path(labels.source))


def check_covers(prompts: PromptFile, labels: LabelSet, levels: tuple[str, ...] | list[str] = LEVELS) -> None:
    """Fail early, naming the class, if a prompt file does not cover every class of a label set."""
    for emotion in labels.emotions:
        if isinstance(prompts, UserPrompts):  # every level the model reads, and its sentence
            for level in check_levels(levels):
                prompts.level_prompt(emotion, level)
            prompts.sentence(emotion, check_levels(levels))
        elif isinstance(prompts, MultiLevelPrompts):
            prompts.parts(emotion)
        elif isinstance(prompts, HardPrompts):
            prompts.hard_prompts(emotion)
