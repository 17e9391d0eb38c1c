"""Evaluate a checkpoint honestly: accuracy and mean class accuracy, per-class accuracy, a confusion-matrix
PNG and a t-SNE PNG of the image features, for the test split and the occlusion / pose subsets given their
lists; cross-dataset by pointing --data at another data set (classes matched by emotion name).

    python training/evaluate.py --checkpoint runs/x/best.safetensors --config mlper_rafdb_vitl14 \
        [--data caers] --out eval/
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ros_fer.errors import FerError  # noqa: E402
from ros_fer.labels import load_label_set  # noqa: E402
from ros_fer.models import create_model, load_model  # noqa: E402
from training.config import load_train_config, model_overrides, resolve_config  # noqa: E402
from training.datasets.adapters import load_split  # noqa: E402
from training.datasets.multilevel import MultiLevelCrops, fill_split_boxes  # noqa: E402
from training.engine import predict  # noqa: E402


def metrics(y: np.ndarray, pred: np.ndarray, classes: list[str]) -> dict:
    n = len(classes)
    confusion = np.zeros((n, n), int)
    np.add.at(confusion, (y, pred), 1)
    support = confusion.sum(1)
    per_class = {c: (float(confusion[i, i] / support[i]) if support[i] else None) for i, c in enumerate(classes)}
    present = [v for v in per_class.values() if v is not None]
    return {
        "n": int(len(y)),
        "accuracy": float((y == pred).mean()) if len(y) else None,
        "mean_class_accuracy": float(np.mean(present)) if present else None,
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }


def plot_confusion(confusion: list[list[int]], classes: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(confusion, float)
    rows = m / np.maximum(m.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1 + 0.8 * len(classes), 1 + 0.7 * len(classes)))
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j,
                i,
                f"{rows[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if rows[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_tsne(features: np.ndarray, y: np.ndarray, classes: list[str], path: Path, seed: int = 0) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    keep = np.random.default_rng(seed).permutation(len(y))[:2000]
    emb = TSNE(n_components=2, perplexity=min(30, max(2, len(keep) // 4)), random_state=seed, init="pca").fit_transform(
        features[keep]
    )
    fig, ax = plt.subplots(figsize=(6, 6))
    for i, c in enumerate(classes):
        sel = y[keep] == i
        ax.scatter(emb[sel, 0], emb[sel, 1], s=6, label=c)
    ax.legend(markerscale=3, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("t-SNE of image features")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def evaluate(
    checkpoint: str | None,
    cfg: dict,
    out: Path,
    split: str = "test",
    data: dict | None = None,
    required_subsets: tuple[str, ...] = (),
) -> dict:
    """Accuracy, mean class accuracy, per class, the confusion matrix, and the occlusion / pose subsets whose
    list files exist. A subset whose list is missing is skipped and said in `skipped_subsets`, unless it is in
    `required_subsets` (asked for on the command line): then it is an error."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = (
        load_model(checkpoint, device=device)
        if checkpoint
        else create_model(cfg["model"]["config"], model_overrides(cfg), device=device)
    )
    data = data or cfg["data"]
    data_labels = load_label_set(data["labels"])
    model_classes = list(model.labels.classes)
    test = load_split(data, split, data_labels)
    # Cross-dataset: keep the images whose class the model knows, re-indexed into the model's label order.
    unknown = sum(1 for s in test.samples if data_labels.classes[s.label] not in model_classes)
    for s in test.samples:
        s.label = (
            model_classes.index(data_labels.classes[s.label]) if data_labels.classes[s.label] in model_classes else -1
        )
    test.samples = [s for s in test.samples if s.label >= 0]
    fill_split_boxes(test, data)
    test.require_images(f"data {data.get('root', data.get('dataset'))}")
    roots = [Path(p["root"]).expanduser() for p in test.parts or [data]]  # a combined set: one per part
    root = roots[0]
    bb = model.backbone
    dataset = MultiLevelCrops(test.samples, model.levels, bb.image_size, bb.mean, bb.std)
    pred, feats, prob = predict(model, dataset, int(cfg["train"].get("batch_size", 32)), device)
    y = np.array([s.label for s in test.samples])
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "checkpoint": checkpoint,
        "dataset": data["dataset"],
        "root": str(root) if not test.parts else [str(r) for r in roots],
        "split": split,
        "labels": model_classes,
        "skipped": dict(test.skipped),
        "unmapped_classes": unknown,
        "all": metrics(y, pred, model_classes),
        "subsets": {},
        "skipped_subsets": {},
    }
    with open(out / "predictions.csv", "w", newline="") as fh:  # per image: what the model said
        writer = csv.writer(fh)
        writer.writerow(["image", "label", "predicted", *(f"p_{c}" for c in model_classes)])
        for sample, truth, guess, p in zip(test.samples, y, pred, prob, strict=True):
            name = os.path.relpath(sample.path, roots[sample.part])
            name = f"{test.parts[sample.part]['dataset']}[{sample.part}]/{name}" if test.parts else name
            row = [name, model_classes[truth], model_classes[int(guess)]]
            writer.writerow([*row, *(f"{v:.6f}" for v in p)])
    names = [str(s.path.name) for s in test.samples]
    parts = test.parts or [data]
    for subset in ("occlusion", "pose30", "pose45"):
        # a list per part (a combined set's part may name its own, else the set's), beside that part's data
        given = [(n, part.get(subset) or data.get(subset)) for n, part in enumerate(parts)]
        lists = [(n, Path(g).expanduser()) for n, g in given if g]
        lists = [(n, f if f.is_absolute() or f.is_file() else roots[n] / f) for n, f in lists]
        if not lists:
            continue
        if missing := [str(f) for _, f in lists if not f.is_file()]:
            if subset in required_subsets:
                raise FerError(f"data.{subset}: no list file {', '.join(missing)}")
            result["skipped_subsets"][subset] = f"no list file {', '.join(missing)}"
            continue
        sel = np.zeros(len(names), bool)
        for n, listed in lists:
            wanted = {line.split()[0] for line in listed.read_text().splitlines() if line.strip()}
            stems = {Path(w).stem for w in wanted}
            sel |= np.array(
                [
                    s.part == n and (name in wanted or Path(name).stem.replace("_aligned", "") in stems)
                    for s, name in zip(test.samples, names, strict=True)
                ]
            )
        result["subsets"][subset] = metrics(y[sel], pred[sel], model_classes)
    plot_confusion(
        result["all"]["confusion"],
        model_classes,
        out / "confusion.png",
        f"{data['dataset']} {split}: acc {result['all']['accuracy']:.3f}",
    )
    # t-SNE needs points to spread: features that are all the same up to float noise (the same image over
    # and over) make its init divide by zero, and its Barnes-Hut tree then crashed the process (seen here)
    distinct = len(np.unique(np.round(feats / max(float(np.abs(feats).max()), 1e-12), 4), axis=0))
    if len(y) >= 5 and distinct >= 3:
        plot_tsne(feats, y, model_classes, out / "tsne.png")
    else:
        result["tsne"] = f"skipped: {len(y)} images, {distinct} distinct feature vectors"
    (out / "results.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Evaluate a checkpoint (accuracy, confusion matrix, t-SNE).")
    ap.add_argument("--checkpoint", help="a training checkpoint (default: the untrained model, e.g. zero-shot)")
    ap.add_argument("--config", required=True)
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    ap.add_argument("--data", help="another data-set config (cross-dataset), e.g. caers or data/caers.yaml")
    ap.add_argument("--split", default="test")
    ap.add_argument("--out", default="eval")
    args = ap.parse_intermixed_args(argv)
    try:
        cfg = load_train_config(args.config, args.overrides)
        data = None
        if args.data:
            from ros_fer.yaml_loader import load_yaml

            path = resolve_config(args.data if args.data.endswith(".yaml") else f"data/{args.data}.yaml")
            data = {**load_yaml(path.read_text())["data"], **cfg.get("data_override", {})}
        asked = tuple(k.split("=", 1)[0].removeprefix("data.") for k in args.overrides if k.startswith("data."))
        result = evaluate(args.checkpoint, cfg, Path(args.out), args.split, data, asked)
    except FerError as exc:
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return 2
    summary = {k: result["all"][k] for k in ("n", "accuracy", "mean_class_accuracy")}
    for subset, why in result["skipped_subsets"].items():
        print(f"evaluate: {subset} subset skipped: {why}", file=sys.stderr)
    print(json.dumps({**summary, "subsets": {k: v["accuracy"] for k, v in result["subsets"].items()}, "out": args.out}))
    acc, mca = result["all"]["accuracy"], result["all"]["mean_class_accuracy"]
    print(
        f"evaluate: {summary['n']} images, accuracy {acc if acc is None else round(acc, 4)}, mean class accuracy "
        f"{mca if mca is None else round(mca, 4)}; results in {Path(args.out) / 'results.json'}, "
        f"{Path(args.out) / 'predictions.csv'}, {Path(args.out) / 'confusion.png'}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
