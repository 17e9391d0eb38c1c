"""Adapters for the real layouts. Each returns a Split for 'train', 'val' or 'test'. Validation sets are
held out of the training data where a data set has none, so the test split never picks a checkpoint."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np

from ros_fer import crops
from ros_fer.labels import LabelSet, load_label_set

from .base import IMAGE_SUFFIXES, DataError, Sample, Split, emotion_key, require


def _hold_out(samples: list[Sample], fraction: float, seed: int, split: str) -> list[Sample]:
    """Deterministically split `samples` into train (1 - fraction) and val (fraction)."""
    order = np.random.default_rng(seed).permutation(len(samples))
    cut = int(round(len(samples) * fraction))
    chosen = order[:cut] if split == "val" else order[cut:]
    return [samples[i] for i in sorted(chosen)]


def _check_files(samples: list[Sample], skipped: Counter, on_missing: str) -> list[Sample]:
    kept = []
    for s in samples:
        if s.path.is_file():
            kept.append(s)
        elif on_missing == "skip":
            skipped["missing image"] += 1
        else:
            raise DataError(f"image listed but missing: {s.path} (set data.on_missing: skip to count and skip)")
    return kept


def rafdb(
    root: Path,
    split: str,
    labels: LabelSet,
    images: str = "aligned",
    val_fraction: float = 0.1,
    seed: int = 0,
    on_missing: str = "error",
    **_,
) -> Split:
    """RAF-DB basic: EmoLabel/list_patition_label.txt ('train_00001.jpg 5', labels 1..7)."""
    listing = require(root / "EmoLabel" / "list_patition_label.txt", "RAF-DB label list")
    rafdb_order = load_label_set("rafdb").classes
    samples, skipped = {"train": [], "test": []}, Counter()
    for n, line in enumerate(listing.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit() or not 1 <= int(parts[1]) <= 7:
            raise DataError(f"{listing}:{n}: expected '<image> <label 1..7>', got {line!r}")
        name, label = parts[0], int(parts[1])
        part = "train" if name.startswith("train") else "test" if name.startswith("test") else None
        if part is None:
            raise DataError(f"{listing}:{n}: image name {name!r} starts with neither train nor test")
        stem = Path(name).stem
        path = (
            root / "Image" / "aligned" / f"{stem}_aligned.jpg"
            if images == "aligned"
            else root / "Image" / "original" / name
        )
        samples[part].append(Sample(path, labels.index(rafdb_order[label - 1])))
    chosen = samples["test"] if split == "test" else _hold_out(samples["train"], val_fraction, seed, split)
    return Split(split, labels, _check_files(chosen, skipped, on_missing), skipped)


def affectnet(
    root: Path, split: str, labels: LabelSet, val_fraction: float = 0.05, seed: int = 0, on_missing: str = "skip", **_
) -> Split:
    """AffectNet: the official training.csv / validation.csv (the validation set is the test set)."""
    csv_name = "validation.csv" if split == "test" else "training.csv"
    table = require(root / csv_name, "AffectNet CSV")
    codes = load_label_set("affectnet8").classes  # expression codes 0..7; 8..10 are none/uncertain/no-face
    samples, skipped = [], Counter()
    with open(table, newline="") as fh:
        reader = csv.DictReader(fh)
        need = {"subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "expression"}
        if not need <= set(reader.fieldnames or []):
            raise DataError(f"{table}: columns {sorted(need - set(reader.fieldnames or []))} missing")
        for n, row in enumerate(reader, 2):
            try:
                code = int(row["expression"])
                x, y, w, h = (float(row[k]) for k in ("face_x", "face_y", "face_width", "face_height"))
            except ValueError:
                raise DataError(f"{table}:{n}: non-numeric expression or face box: {row}") from None
            if not 0 <= code <= 10:
                raise DataError(f"{table}:{n}: expression {code} is not an AffectNet code (0..7 emotions, 8..10 none)")
            if code >= len(codes):
                skipped["not an expression (none/uncertain/no-face)"] += 1
                continue
            if codes[code] not in labels.classes:
                skipped[f"class {codes[code]} outside {labels.name}"] += 1
                continue
            path = root / "Manually_Annotated_Images" / row["subDirectory_filePath"]
            samples.append(Sample(path, labels.index(codes[code]), face=[x, y, x + w, y + h]))
    if split != "test":
        samples = _hold_out(samples, val_fraction, seed, split)
    return Split(split, labels, _check_files(samples, skipped, on_missing), skipped)


def ferplus(root: Path, split: str, labels: LabelSet, on_missing: str = "skip", **_) -> Split:
    """FERPlus: fer2013new.csv votes, majority label; images in FER2013Train/Valid/Test."""
    table = require(root / "fer2013new.csv", "FERPlus label CSV")
    usage = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}[split]
    folder = {"train": "FER2013Train", "val": "FER2013Valid", "test": "FER2013Test"}[split]
    columns = list(load_label_set("ferplus").classes) + ["unknown", "NF"]
    samples, skipped = [], Counter()
    with open(table, newline="") as fh:
        for n, row in enumerate(csv.reader(fh), 1):
            if n == 1 and row and row[0] == "Usage":
                continue
            if len(row) != 2 + len(columns):
                raise DataError(f"{table}:{n}: expected {2 + len(columns)} columns, got {len(row)}")
            if row[0] != usage:
                continue
            if not row[1]:
                skipped["no image name"] += 1
                continue
            try:
                votes = np.array([int(v) for v in row[2:]])
            except ValueError:
                raise DataError(f"{table}:{n}: non-integer vote counts {row[2:]}") from None
            best = np.flatnonzero(votes == votes.max())
            if len(best) > 1:
                skipped["tied vote"] += 1
                continue
            name = columns[best[0]]
            if name in ("unknown", "NF") or name not in labels.classes:
                skipped[f"majority {name}"] += 1
                continue
            samples.append(Sample(root / folder / row[1], labels.index(name)))
    return Split(split, labels, _check_files(samples, skipped, on_missing), skipped)


def folders(root: Path, split: str, labels: LabelSet, val_fraction: float = 0.0, seed: int = 0, **_) -> Split:
    """Class-per-folder: <root>/<split>/<class>/*.jpg (CAER-S, FED-RO, the synthetic set, your own data).
    Without a <root>/val folder, val is held out of train (val_fraction). <root>/boxes.json, if present,
    gives face and body boxes per image (`read_boxes_json`); entries that match no image are counted."""
    hold_out = split in ("train", "val") and not (root / "val").is_dir()
    if hold_out and split == "val" and val_fraction <= 0:
        raise DataError(f"{root} has no val folder; set data.val_fraction to hold validation images out of train")
    base = require(root / ("train" if hold_out else split), f"{split} folder")
    boxes = read_boxes_json(root / "boxes.json") if (root / "boxes.json").is_file() else {}
    samples, skipped, used = [], Counter(), set()
    for class_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        key = emotion_key(class_dir.name, str(class_dir))
        if key not in labels.classes:
            skipped[f"class {key} outside {labels.name}"] += sum(1 for _ in class_dir.iterdir())
            continue
        for path in sorted(class_dir.iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                skipped[f"not an image ({path.suffix or 'no suffix'})"] += 1
                continue
            rel = path.relative_to(root).as_posix()
            b = boxes.get(rel, {})
            if b:
                used.add(rel)
            samples.append(Sample(path, labels.index(key), b.get("face"), b.get("body")))
    in_this_split = [k for k in boxes if k.split("/", 1)[0] == base.name]
    if unmatched := sum(1 for k in in_this_split if k not in used):
        skipped["boxes.json entries matching no image"] += unmatched
    if hold_out and val_fraction > 0:
        samples = _hold_out(samples, val_fraction, seed, split)
    return Split(split, labels, samples, skipped)


def read_boxes_json(path: Path) -> dict[str, dict]:
    """<root>/boxes.json (`ros_fer.crops.read_boxes_json`; `ros-fer adapt` reads the same file), a DataError
    naming the file, the key and what was expected where it is malformed."""
    return crops.read_boxes_json(path, DataError)


def caers(root: Path, split: str, labels: LabelSet, seed: int = 0, **kw) -> Split:
    """CAER-S: train/ and test/ folders per class. Validation is 1/8 of train (the 70/10/20 split)."""
    return folders(root, split, labels, val_fraction=kw.pop("val_fraction", 0.125), seed=seed, **kw)


ADAPTERS = {
    "rafdb": rafdb,
    "affectnet": affectnet,
    "ferplus": ferplus,
    "caers": caers,
    "fedro": folders,
    "folder": folders,
}


# Settings of a `combined` data set that its parts inherit unless they set their own.
INHERITED = ("labels", "detector", "person_weights", "on_missing", "seed")


def combined(cfg: dict, split: str, labels: LabelSet) -> Split:
    """Several data sets as one training set, in one label set (`data.labels`): `data.parts` lists each part's
    data config ({dataset, root, ...its options}). Used for FED-RO, which MLPER evaluates after training on
    RAF-DB and AffectNet together. Each part keeps its own layout, split rule and boxes (its own box cache,
    `image_is_face`, annotated faces); classes a part has outside the label set are counted and skipped."""
    parts = cfg.get("parts")
    if not isinstance(parts, list) or not parts:
        raise DataError(f"data.parts: a combined data set needs a list of data configs, got {parts!r}")
    out = Split(split, labels, [])
    for n, part in enumerate(parts):
        where = f"data.parts[{n}]"
        if isinstance(part, dict) and part.get("dataset") == "combined":
            raise DataError(f"{where}: a combined data set cannot be a part of another")
        if not isinstance(part, dict) or "dataset" not in part or "root" not in part:
            raise DataError(f"{where}: expected a data config with `dataset` and `root`, got {part!r}")
        if part.get("labels", cfg.get("labels")) != cfg.get("labels"):
            raise DataError(
                f"{where}: labels {part['labels']!r} differ from data.labels {cfg.get('labels')!r}; the parts "
                "are read into one label set (leave `labels` out of the parts)"
            )
        part = {**{k: cfg[k] for k in INHERITED if k in cfg}, **part}
        got = load_split(part, split, labels)
        name = f"{part['dataset']}[{n}]"
        for s in got.samples:
            s.part = n
        out.samples += got.samples
        out.skipped.update({f"{name} {why}": k for why, k in got.skipped.items()})
        out.parts.append(part)
    return out


def load_split(cfg: dict, split: str, labels: LabelSet) -> Split:
    """cfg: {dataset: name, root: path, ...adapter options}, or {dataset: combined, labels, parts: [cfg, ...]}."""
    kind = cfg.get("dataset")
    if kind == "combined":
        return combined(cfg, split, labels)
    if kind not in ADAPTERS:
        raise DataError(f"unknown dataset {kind!r}; known: {sorted([*ADAPTERS, 'combined'])}")
    not_for_the_adapter = ("dataset", "root", "labels", "balanced", "occlusion", "pose30", "pose45", "pose")
    not_for_the_adapter += ("image_is_face", "detector", "person_weights")  # read by fill_boxes
    options = {k: v for k, v in cfg.items() if k not in not_for_the_adapter}
    return ADAPTERS[kind](Path(cfg["root"]).expanduser(), split, labels, **options)
