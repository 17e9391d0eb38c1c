"""Label sets: each data set's classes in its own index order, and per-emotion metadata. Besides the built-in
sets of config/labels.yaml, a label file (YAML, see `load_label_file`) defines the states a robot needs in
words: open-vocabulary labels scored by CLIP without training."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

from .errors import ConfigError
from .paths import config_dir
from .yaml_loader import DuplicateKeyError, load_yaml

# hri_msgs/Expression (REP-155): the expression strings a state may map to.
REP155 = (
    "neutral",
    "angry",
    "sad",
    "happy",
    "surprised",
    "disgusted",
    "scared",
    "pleading",
    "vulnerable",
    "despaired",
    "guilty",
    "disappointed",
    "embarrassed",
    "horrified",
    "skeptical",
    "annoyed",
    "furious",
    "suspicious",
    "rejected",
    "bored",
    "tired",
    "asleep",
    "confused",
    "amazed",
    "excited",
)


@dataclass(frozen=True)
class Emotion:
    key: str
    adjective: str
    rep155: str  # "" = none (a state of a label file that REP-155 has no word for)
    valence: float = math.nan
    arousal: float = math.nan


@dataclass(frozen=True)
class LabelSet:
    name: str
    emotions: tuple[Emotion, ...]
    source: str = ""  # the label file it came from; "" for config/labels.yaml
    # A label file's words per state (`prompts.user_prompts` composes them); None for a built-in set.
    prompts: dict | None = field(default=None, compare=False, repr=False)

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

    def expression(self, label: str) -> str | None:
        """What a face's REP-155 topic gets for `label`: its expression; "" for a label outside the set (the
        tracker's `unknown`); None for a state REP-155 has no word for, which publishes nothing."""
        if label not in self.classes:
            return ""
        return self.emotions[self.classes.index(label)].rep155 or None

    def rep155_note(self) -> str:
        """What fer_node says once at start when some states have no REP-155 expression ("" when all do)."""
        if without := [e.key for e in self.emotions if not e.rep155]:
            return f"REP-155: no expression for {', '.join(without)} (label set {self.name}); none is published"
        return ""

    def notes(self) -> list[str]:
        """What the front doors say once at start about a label set's optional fields."""
        out = []
        if without := [e.key for e in self.emotions if math.isnan(e.valence) or math.isnan(e.arousal)]:
            out.append(
                f"valence/arousal: {', '.join(without)} (label set {self.name}) have none, so every person's "
                "valence and arousal are NaN"
            )
        return out

    def to_dict(self) -> dict:
        """JSON-safe (NaN as None): exported folders and checkpoints carry their label set whole."""
        nan = lambda v: None if math.isnan(v) else v  # noqa: E731
        emotions = [{**asdict(e), "valence": nan(e.valence), "arousal": nan(e.arousal)} for e in self.emotions]
        return {"name": self.name, "source": self.source, "emotions": emotions, "prompts": self.prompts}

    @classmethod
    def from_dict(cls, data: dict) -> LabelSet:
        num = lambda v: math.nan if v is None else float(v)  # noqa: E731
        emotions = tuple(
            Emotion(e["key"], e["adjective"], e["rep155"], num(e.get("valence")), num(e.get("arousal")))
            for e in data["emotions"]
        )
        return cls(data["name"], emotions, data.get("source", ""), data.get("prompts"))


@lru_cache(maxsize=1)
def _labels_file() -> dict:
    with open(config_dir() / "labels.yaml", encoding="utf-8") as fh:
        return load_yaml(fh)


def known_label_sets() -> list[str]:
    return sorted(_labels_file()["sets"])


def known_label_files() -> list[str]:
    """Label files shipped under config/states/, loadable by name."""
    folder = config_dir() / "states"
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def is_label_file(name: str | os.PathLike[str]) -> bool:
    """A path (has a folder part or a .yaml/.yml suffix) or a name under config/states/, not a built-in set."""
    text = str(name)
    if text in _labels_file()["sets"]:
        return False
    return text.endswith((".yaml", ".yml")) or "/" in text or os.sep in text or text in known_label_files()


def load_label_set(name: str | os.PathLike[str]) -> LabelSet:
    """A built-in set of config/labels.yaml by name, or a label file (a path, or a name under config/states/)."""
    if is_label_file(name):
        path = Path(name)
        if not path.suffix and not path.exists():
            path = config_dir() / "states" / f"{name}.yaml"
        return load_label_file(path)
    data = _labels_file()
    sets, emotions = data["sets"], data["emotions"]
    if name not in sets:
        files = known_label_files()
        raise ConfigError(
            f"unknown label set {name!r}; known label sets: {', '.join(known_label_sets())}"
            + (f"; label files under config/states/: {', '.join(files)}" if files else "")
            + "; or give the path of a label file (YAML)"
        )
    members = []
    for key in sets[name]:
        if key not in emotions:
            raise ConfigError(f"label set {name!r} names emotion {key!r}, which labels.yaml does not define")
        members.append(Emotion(key=key, **emotions[key]))
    if len(set(sets[name])) != len(members):
        raise ConfigError(f"label set {name!r} lists a class twice: {sets[name]}")
    return LabelSet(name=name, emotions=tuple(members))


# What a state of a label file may say. Level words and `prompt` are what CLIP reads; the rest is metadata.
LEVEL_KEYS = ("face", "body", "context")
STATE_KEYS = (*LEVEL_KEYS, "prompt", "adjective", "valence", "arousal", "rep155")
FILE_KEYS = ("name", "states", "template", "level_templates", "sentences")
RESERVED = ("unknown",)  # the tracker's label below unknown_threshold


def load_label_file(path: str | os.PathLike[str]) -> LabelSet:
    """A label file: the states a robot needs, defined in words. Its format (README, "Your own states"):

        name: tutoring                  # optional; default: the file name
        template: "a photo of a {adjective} person."   # optional; for states with neither levels nor prompt
        states:
          engaged:
            face: "eyes on the task, a slight frown of concentration"     # MLPER's levels (any of them)
            body: "leaning forward over the table"
            context: "working through an exercise with a tutor"
            valence: 0.4                  # optional, -1..1 (Russell's circumplex)
            arousal: 0.3                  # optional, -1..1
          in_pain:
            adjective: in pain            # optional; default: the name with _ as spaces
            prompt: "a photo of a person wincing in pain."   # one sentence instead of level words
            rep155: despaired             # optional; a hri_msgs/Expression string, else none is published
          bored: "a photo of a bored person yawning."        # shorthand for {prompt: ...}

    `level_templates` and `sentences` override MLPER's (config/prompts/mlper.yaml). Every error names the file
    and the state."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"label file {path} does not exist")
    try:
        data = load_yaml(path.read_bytes(), unique_keys=True)
    except DuplicateKeyError as exc:
        raise ConfigError(
            f"label file {path}: {exc.key!r} is given twice (line {exc.line}); a state, like any key, is named once"
        ) from None
    except Exception as exc:  # noqa: BLE001 - yaml's scanner and parser errors
        raise ConfigError(f"label file {path} is not readable YAML: {exc}") from None
    if data is None or data == {}:
        raise ConfigError(f"label file {path} is empty; it needs `states:` with at least two states")
    if not isinstance(data, dict):
        raise ConfigError(f"label file {path}: expected a mapping with `states:`, got {type(data).__name__}")
    if unknown := sorted(set(map(str, data)) - set(FILE_KEYS)):
        raise ConfigError(f"label file {path}: unknown key(s) {unknown}; a label file has {list(FILE_KEYS)}")
    states = data.get("states")
    if isinstance(states, list):  # - {name: engaged, face: ...}: the same, as a list
        states = _states_from_list(states, path)
    if not isinstance(states, dict) or len(states) < 2:
        raise ConfigError(f"label file {path}: `states:` must map at least two state names to their words")
    template = data.get("template")
    if template is not None and (not isinstance(template, str) or not template.strip()):
        raise ConfigError(f"label file {path}: `template` must be a sentence, got {template!r}")
    emotions, words, seen = [], {}, {}
    for key, entry in states.items():
        emotion, entry = _state(path, key, entry, template)
        if (folded := emotion.key.lower()) in seen:
            raise ConfigError(f"label file {path}: states {seen[folded]!r} and {emotion.key!r} are the same state")
        seen[folded] = emotion.key
        emotions.append(emotion)
        words[emotion.key] = entry
    prompts = {
        "template": template,
        "level_templates": data.get("level_templates"),
        "sentences": data.get("sentences"),
        "classes": words,
    }
    name = str(data.get("name") or path.stem)
    return LabelSet(name=name, emotions=tuple(emotions), source=str(path), prompts=prompts)


def _states_from_list(states: list, path: Path) -> dict:
    out: dict = {}
    for i, item in enumerate(states):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ConfigError(f"label file {path}: states[{i}] needs a `name:`, got {item!r}")
        name = item["name"]
        if name in out:
            raise ConfigError(f"label file {path}: state {name!r} is given twice")
        out[name] = {k: v for k, v in item.items() if k != "name"}
    return out


def _state(path: Path, key, entry, template: str | None) -> tuple[Emotion, dict]:
    where = f"label file {path}: state {key!r}"
    if not isinstance(key, str) or not key.strip() or key != key.strip():
        raise ConfigError(f"{where}: a state's name must be a non-empty word without surrounding spaces")
    if key.lower() in RESERVED:
        raise ConfigError(f"{where}: {key!r} is reserved (the label of a person below unknown_threshold)")
    if isinstance(entry, str):
        entry = {"prompt": entry}
    if entry is None:
        entry = {}
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected its words (face/body/context or prompt), got {entry!r}")
    if unknown := sorted(set(map(str, entry)) - set(STATE_KEYS)):
        raise ConfigError(f"{where}: unknown key(s) {unknown}; a state has {list(STATE_KEYS)}")
    words = {}
    for k in (*LEVEL_KEYS, "prompt", "adjective"):
        value = entry.get(k)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{where}: `{k}` must be non-empty text, got {value!r}")
        words[k] = value.strip()
    if not any(k in words for k in (*LEVEL_KEYS, "prompt")) and template is None:
        raise ConfigError(
            f"{where} has no prompts: give it words for the levels (face, body, context), a `prompt` sentence, "
            "or the file a `template`"
        )
    numbers = {}
    for k in ("valence", "arousal"):
        value = entry.get(k)
        if value is None:
            numbers[k] = math.nan
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not -1 <= value <= 1:
            raise ConfigError(f"{where}: `{k}` must be a number in -1..1, got {value!r}")
        else:
            numbers[k] = float(value)
    rep155 = entry.get("rep155") or ""
    if rep155 and rep155 not in REP155:
        raise ConfigError(f"{where}: rep155 {rep155!r} is not a REP-155 expression; one of {list(REP155)}")
    adjective = words.pop("adjective", key.replace("_", " "))
    return Emotion(key, adjective, rep155, numbers["valence"], numbers["arousal"]), words
