"""Few-shot adaptation: a few labelled images per state, taken on the robot, make a training-free cache head
(Tip-Adapter, Zhang et al., ECCV 2022). The frozen image side encodes each image's person; the cache keys
are those features, its values their one-hot labels, and the head adds alpha * exp(-beta (1 - cos)) @ values
to the text bank's logits (`head.Head`, kind `cache`). alpha and beta are chosen on a held-out part of the
images; `finetune_epochs` also trains the keys (Tip-Adapter-F). The result is an exported model folder that
every front door and backend loads like any other: the head runs after the image side, whatever ran it.

    ros-fer adapt --images DIR --model <config, checkpoint or exported folder> --out models/<name>/

DIR holds one folder per state (its name, or its adjective: `happy/` for happiness), images inside, and an
optional DIR/boxes.json of face and body boxes (the training package's format, paths relative to DIR).
Without a box the runtime's detector finds the person (the biggest); without a person, the whole image is
the body and the face is estimated from it, as the node would."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .bundle import MANIFEST, export_bundle, write_cache, write_manifest
from .crops import Person, associate, crop_batch, read_boxes_json
from .errors import ConfigError
from .head import Head, cache_logits, cache_query
from .image_conv import IMAGE_SUFFIXES, ImageError
from .labels import LabelSet
from .pipeline import detector_from_params
from .runtime import Runtime, build_runtime, model_from_params
from .sources import Frame, read_image_file

# The search grid. alpha is relative to the head's logit scale (Tip-Adapter's grid is for CLIP's 100), 0 is
# the zero-shot head itself; beta as Tip-Adapter searches it.
ALPHAS = (0.0, *np.geomspace(0.01, 1000.0, 31).tolist())
BETAS = (0.5, 1.0, 2.0, 3.5, 5.5, 8.0, 12.0, 20.0)
# Where nothing can be held out (one image per state): Tip-Adapter's beta, and alpha = the zero-shot logits'
# mean spread (max - min over states), so an exact match to a cached image counts as much as the text does.
DEFAULT_BETA = 5.5


@dataclass
class Examples:
    """Encoded images: the zero-shot head's logits [N, C], the cache query [N, D'] and the labels [N]."""

    paths: list[str]
    logits: torch.Tensor
    query: torch.Tensor
    targets: torch.Tensor

    def subset(self, rows: np.ndarray) -> Examples:
        index = torch.as_tensor(rows, dtype=torch.long)
        return Examples([self.paths[i] for i in rows], self.logits[index], self.query[index], self.targets[index])

    def __len__(self) -> int:
        return len(self.paths)


def state_of_folder(name: str, labels: LabelSet) -> int:
    """A class folder's state: its key or its adjective, any case, `_` or space alike."""
    norm = lambda text: text.strip().lower().replace("_", " ")  # noqa: E731
    for i, e in enumerate(labels.emotions):
        if norm(name) in (norm(e.key), norm(e.adjective)):
            return i
    raise ConfigError(
        f"folder {name!r} names no state of label set {labels.name!r}; its states (or their adjectives): "
        + ", ".join(f"{e.key} ({e.adjective})" if e.adjective != e.key else e.key for e in labels.emotions)
    )


def list_images(images: Path, labels: LabelSet) -> tuple[list[tuple[Path, int]], Counter]:
    """(image path, state) for every image of DIR/<state>/, and what was skipped, counted by why."""
    if not images.is_dir():
        raise ConfigError(f"--images {images} is not a folder (want one folder of images per state)")
    items, skipped = [], Counter()
    for folder in sorted(p for p in images.iterdir() if p.is_dir() and not p.name.startswith(".")):
        state = state_of_folder(folder.name, labels)
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                items.append((path, state))
            else:
                skipped[f"not an image ({path.suffix or 'no suffix'})"] += 1
    if not items:
        raise ConfigError(f"--images {images} holds no images in state folders ({', '.join(labels.classes)})")
    return items, skipped


def read_ranges(path: Path, labels: LabelSet) -> dict[int, list[tuple[float, float]]]:
    """A ranges file: per state (its key or adjective), time ranges in seconds from the bag's start,
    `happy: [[12.0, 15.5], [40, 44]]`. A wrong file names the file, the state and what was expected."""
    from .yaml_loader import load_yaml

    try:
        data = load_yaml(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--ranges {path}: not readable YAML ({exc})") from exc
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"--ranges {path}: expected a mapping from state to [[start, end], ...] seconds")
    out: dict[int, list[tuple[float, float]]] = {}
    for name, spans in data.items():
        state = state_of_folder(str(name), labels)
        ok = (
            isinstance(spans, list)
            and spans
            and all(
                isinstance(s, list) and len(s) == 2 and all(isinstance(v, (int, float)) for v in s) and s[1] > s[0]
                for s in spans
            )
        )
        if not ok:
            raise ConfigError(
                f"--ranges {path}: {name!r}: expected a list of [start, end] seconds with end > start, got {spans!r}"
            )
        out.setdefault(state, []).extend((float(a), float(b)) for a, b in spans)
    return out


def bag_examples(bag: Path, ranges: Path, labels: LabelSet, topic: str | None, max_pixels: int):
    """(frame, state) for every camera frame of the bag inside a state's time ranges, states in the order of
    their names (as folders list them), and the frames skipped, counted by the node's reasons."""
    from .sources import Bag, Skipped

    per_state = read_ranges(ranges, labels)
    items, skipped = [], Counter()
    names = {i: e.key for i, e in enumerate(labels.emotions)}
    for state in sorted(per_state, key=names.get):
        for start, end in per_state[state]:
            for item in Bag(bag, topic, start, end).frames(max_pixels):
                if isinstance(item, Skipped):
                    skipped[f"frame skipped ({item.reason})"] += 1
                else:
                    items.append((item, state))
    if not items:
        raise ConfigError(f"--bag {bag}: no camera frame inside the ranges of {ranges}")
    return items, skipped


def person_of(rgb: np.ndarray, box: dict | None, detector) -> Person:
    """The person an example image shows: its boxes.json boxes, else the detector's first (closest) person,
    else the whole image as the body with the face estimated, as the node does."""
    h, w = rgb.shape[:2]
    if box and box.get("body") is not None:
        face = None if box.get("face") is None else np.array([*box["face"], 1.0], np.float32)
        return Person(face=face, body=np.array([*box["body"], 1.0], np.float32), face_detected=face is not None)
    if detector is not None:
        people = associate(detector.detect(rgb), h, w, 1)
        if people:
            return people[0]
    return Person(face=None, body=np.array([0, 0, w, h, 1.0], np.float32), face_detected=False, body_detected=False)


def encode_examples(
    runtime: Runtime,
    items: list[tuple[Path | Frame, int]],
    boxes: dict[str, dict],
    root: Path | None,
    detector_factory=None,
    batch: int = 16,
    progress: bool = True,
    skipped: Counter | None = None,
) -> Examples:
    """Every image through the runtime's crops, image side and zero-shot head, `batch` images per call. An
    item is an image file (its boxes.json entry keyed relative to `root`) or a frame read from a recording."""
    from tqdm import tqdm

    skipped = Counter() if skipped is None else skipped
    head = runtime.head.zero_shot()
    paths, logits, queries, targets = [], [], [], []
    # The detector (and any fall-back it warns of) before the bar starts, only where an image lacks a body box.
    key = lambda item: item.relative_to(root).as_posix() if isinstance(item, Path) else None  # noqa: E731
    unboxed = any((boxes.get(key(item)) or {}).get("body") is None for item, _ in items)
    detector = detector_factory() if unboxed and detector_factory is not None else None
    bar = tqdm(total=len(items), desc="adapt: encoding", unit="image", file=sys.stderr, disable=not progress)
    for start in range(0, len(items), batch):
        chunk, crops, index = items[start : start + batch], [], []
        for item, state in chunk:
            if isinstance(item, Path):
                try:  # the rule of every frame source: a truncated or corrupt file is refused, not half-read
                    bgr = read_image_file(item)
                except ImageError:
                    skipped["unreadable image"] += 1
                    continue
            else:
                bgr = item.image
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            box = boxes.get(key(item))
            cb = crop_batch(rgb, [person_of(rgb, box, detector)], runtime.levels, runtime.image_size)
            index.append(cb.index + sum(len(c) for c in crops))
            crops.append(cb.images)
            paths.append(str(item) if isinstance(item, Path) else f"{item.source}#{item.index}")
            targets.append(state)
        if crops:
            with torch.inference_mode():
                feats = runtime.backend.encode(np.concatenate(crops), np.concatenate(index))
                logits.append(head(feats, runtime.text).float().cpu())
                queries.append(cache_query(feats, head.kind).float().cpu())
        bar.update(len(chunk))
    bar.close()
    if not paths:
        raise ConfigError(f"none of the {len(items)} example images could be read")
    return Examples(paths, torch.cat(logits), torch.cat(queries), torch.tensor(targets))


def split_held_out(targets: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per state, round(fraction * n) images held out (at least one where a state has two or more)."""
    rng = np.random.default_rng(seed)
    train, held = [], []
    for c in np.unique(targets):
        rows = rng.permutation(np.flatnonzero(targets == c))
        k = min(len(rows) - 1, max(1, round(fraction * len(rows)))) if fraction > 0 and len(rows) > 1 else 0
        held += rows[:k].tolist()
        train += rows[k:].tolist()
    return np.sort(train), np.sort(held)


def one_hot(targets: torch.Tensor, classes: int) -> torch.Tensor:
    return F.one_hot(targets, classes).float()


def blended(ex: Examples, keys: torch.Tensor, values: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """The cache head's logits for encoded examples (Head(kind='cache') on features already reduced)."""
    return ex.logits + alpha * cache_logits(ex.query, keys, values, beta)


def scores(logits: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    """(accuracy, mean negative log-likelihood)."""
    acc = float((logits.argmax(-1) == targets).float().mean())
    return acc, float(F.cross_entropy(logits, targets))


def search(held: Examples, keys, values, scale: float) -> tuple[float, float, float]:
    """(alpha, beta, held-out accuracy): the most accurate pair on the held-out images, the lowest
    negative log-likelihood among equals (alpha = 0 is the zero-shot head)."""
    best = None
    for beta in BETAS:
        for a in ALPHAS:
            alpha = a * scale / 100.0
            acc, nll = scores(blended(held, keys, values, alpha, beta), held.targets)
            if best is None or (acc, -nll) > (best[2], -best[3]):
                best = (alpha, beta, acc, nll)
    return best[0], best[1], best[2]


def finetune_keys(
    ex: Examples, keys: torch.Tensor, values: torch.Tensor, alpha: float, beta: float, epochs: int, seed: int
) -> torch.Tensor:
    """Tip-Adapter-F: the keys trained for `epochs` full-batch AdamW steps (lr 1e-3) on the cross-entropy of
    the cache head's logits over `ex`; the zero-shot head and the values stay fixed."""
    if epochs <= 0 or alpha == 0:
        return keys
    torch.manual_seed(seed)
    keys = torch.nn.Parameter(keys.clone())
    opt = torch.optim.AdamW([keys], lr=1e-3, eps=1e-4, weight_decay=0.01)
    for _ in range(epochs):
        opt.zero_grad()
        F.cross_entropy(blended(ex, keys, values, alpha, beta), ex.targets).backward()
        opt.step()
    return keys.detach()


def fit_cache(
    ex: Examples, classes: int, scale: float, hold_out: float = 0.25, finetune_epochs: int = 0, seed: int = 0
) -> dict:
    """Choose alpha and beta on a held-out part (the cache holding the rest), then build the cache from every
    image. Returns keys, values, alpha, beta and the held-out accuracies before and after."""
    targets = ex.targets.numpy()
    train_rows, held_rows = split_held_out(targets, hold_out, seed)
    out = {"held_out": len(held_rows), "finetune_epochs": finetune_epochs}
    if len(held_rows):
        train, held = ex.subset(train_rows), ex.subset(held_rows)
        keys, values = train.query, one_hot(train.targets, classes)
        alpha, beta, _ = search(held, keys, values, scale)
        if finetune_epochs > 0:
            keys = finetune_keys(train, keys, values, alpha, beta, finetune_epochs, seed)
            alpha, beta, _ = search(held, keys, values, scale)
        out["accuracy_zero_shot"] = scores(held.logits, held.targets)[0]
        out["accuracy_adapted"] = scores(blended(held, keys, values, alpha, beta), held.targets)[0]
    else:
        alpha, beta = float((ex.logits.max(-1).values - ex.logits.min(-1).values).mean()), DEFAULT_BETA
        out["accuracy_zero_shot"] = out["accuracy_adapted"] = None
    values = one_hot(ex.targets, classes)
    keys = finetune_keys(ex, ex.query, values, alpha, beta, finetune_epochs, seed)
    return {**out, "keys": keys, "values": values, "alpha": float(alpha), "beta": float(beta)}


def _prepare_folder(target: str, out: Path, params: dict, precisions: tuple[str, ...]) -> None:
    """An exported folder at `out` to adapt: a copy of the exported folder `target` (its engines and any
    earlier cache left behind), or `target` (a config or checkpoint) exported there."""
    source = Path(target)
    if (source / MANIFEST).is_file():
        if source.resolve() != out.resolve():
            out.mkdir(parents=True, exist_ok=True)
            for item in source.iterdir():
                if item.is_file() and item.name != MANIFEST and not item.name.startswith("cache."):
                    shutil.copy2(item, out / item.name)
            manifest = json.loads((source / MANIFEST).read_text())
        else:
            manifest = json.loads((out / MANIFEST).read_text())
        if manifest["head"]["kind"] == "cache":  # adapting an adapted folder again: from its zero-shot head
            manifest["head"] = Head.from_dict(manifest["head"]).zero_shot().to_dict()
            manifest.pop("cache", None)
            manifest.pop("adapt", None)
        write_manifest(out, manifest)
        return
    model = model_from_params({**params, "model": target}, "cpu")
    export_bundle(model, out, precisions)


def adapt(
    target: str,
    images: str | os.PathLike[str] | None,
    out: str | os.PathLike[str],
    params: dict,
    hold_out: float = 0.25,
    finetune_epochs: int = 0,
    seed: int = 0,
    precisions: tuple[str, ...] = ("fp32",),
    progress: bool = True,
    bag: str | os.PathLike[str] | None = None,
    ranges: str | os.PathLike[str] | None = None,
    topic: str | None = None,
) -> dict:
    """Adapt `target` to the images of `images` (a folder per state), or to the frames of a recording `bag`
    in the time ranges per state of the `ranges` file, and write the exported folder `out`; returns the
    summary."""
    out = Path(out)
    _prepare_folder(target, out, params, precisions)
    runtime = build_runtime({**params, "model": str(out), "text_bank": ""})
    for line in runtime.warnings:  # said before any progress bar
        print(f"ros-fer adapt: warning: {line}", file=sys.stderr)
    labels = runtime.labels
    if bag is not None:
        items, skipped = bag_examples(Path(bag), Path(ranges), labels, topic, params["max_pixels"])
        boxes, images = {}, None
    else:
        images = Path(images)
        items, skipped = list_images(images, labels)
        boxes = read_boxes_json(images / "boxes.json") if (images / "boxes.json").is_file() else {}
        if unmatched := len(set(boxes) - {path.relative_to(images).as_posix() for path, _ in items}):
            skipped["boxes.json entries matching no image"] += unmatched  # a typo in a path, a moved image

    def detector():
        det = detector_from_params(params)
        for line in getattr(det, "warnings", ()):
            print(f"ros-fer adapt: warning: {line}", file=sys.stderr)
        return det

    ex = encode_examples(runtime, items, boxes, images, detector, progress=progress, skipped=skipped)
    head = runtime.head.zero_shot()
    fit = fit_cache(ex, len(labels), head.logit_scale, hold_out, finetune_epochs, seed)
    shots = {c: int((ex.targets == i).sum()) for i, c in enumerate(labels.classes)}
    summary = {
        "out": str(out),
        "images": str(images) if bag is None else f"{bag} ({ranges})",
        "shots": shots,
        "held_out": fit["held_out"],
        "accuracy_zero_shot": fit["accuracy_zero_shot"],
        "accuracy_adapted": fit["accuracy_adapted"],
        "alpha": round(fit["alpha"], 6),
        "beta": fit["beta"],
        "finetune_epochs": finetune_epochs,
        "skipped": dict(skipped),
        "backend": f"{runtime.backend.name} {runtime.backend.precision}",
    }
    write_cache(out / "cache.safetensors", fit["keys"], fit["values"], summary)
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["head"] = head.with_cache(fit["alpha"], fit["beta"]).to_dict()
    manifest["cache"] = "cache.safetensors"
    manifest["adapt"] = summary
    write_manifest(out, manifest)
    return summary


def describe(summary: dict) -> str:
    """The end-of-run summary, for people."""
    shots = ", ".join(f"{k} {v}" for k, v in summary["shots"].items())
    lines = [f"adapt: {sum(summary['shots'].values())} images ({shots}) -> {summary['out']}"]
    if empty := [k for k, v in summary["shots"].items() if v == 0]:
        lines.append(f"adapt: no images of {', '.join(empty)}: those states keep their zero-shot scores")
    if summary["held_out"]:
        pct = lambda v: f"{100 * v:.1f} %"  # noqa: E731
        lines.append(
            f"adapt: held-out accuracy ({summary['held_out']} images) zero-shot {pct(summary['accuracy_zero_shot'])}"
            f" -> adapted {pct(summary['accuracy_adapted'])} (alpha {summary['alpha']:.4g}, beta {summary['beta']})"
        )
    else:
        lines.append(
            f"adapt: nothing to hold out (one image per state): alpha {summary['alpha']:.4g} (the zero-shot logits' "
            f"spread), beta {summary['beta']} (Tip-Adapter's)"
        )
    if summary["skipped"]:
        lines.append("adapt: skipped " + ", ".join(f"{v} {k}" for k, v in summary["skipped"].items()))
    return "\n".join(lines)
