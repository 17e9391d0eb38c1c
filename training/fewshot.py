"""Few-shot adaptation measured (README, "Your own states"): zero-shot against the Tip-Adapter cache head
(`ros-fer adapt`) with 1, 4 and 16 images per class, mean ± std over seeds, on the test split.

For each seed: MLPER is trained briefly (the tiny backbone on the synthetic set by default), and its CLIP
weights become the backbone of the node's default model: zero-shot CLIP, each crop scored against its
level's MLPER prompt (config/models/zeroshot.yaml), frozen. The train split's images are encoded once; each
shot count draws that many images per class (the seed's draw), fits the cache exactly as `ros-fer adapt`
does (alpha and beta chosen on a held-out part of the drawn images; none held out at 1 shot), and scores the
test split against the zero-shot head (the text bank alone).

    python training/fewshot.py data.root=data/synthetic --out runs/fewshot --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ros_fer.adapt import Examples, blended, encode_examples, fit_cache, list_images, scores  # noqa: E402
from ros_fer.crops import read_boxes_json  # noqa: E402
from ros_fer.machine import describe_cpu  # noqa: E402
from ros_fer.models import load_model  # noqa: E402
from ros_fer.params import load_params  # noqa: E402
from ros_fer.runtime import build_runtime  # noqa: E402
from training.config import load_train_config  # noqa: E402
from training.engine import Trainer  # noqa: E402

SHOTS = (1, 4, 16)


def draw(ex: Examples, shots: int, seed: int) -> Examples:
    """`shots` examples per class, drawn with `seed`."""
    rng = np.random.default_rng(seed)
    targets = ex.targets.numpy()
    rows = [rng.choice(np.flatnonzero(targets == c), shots, replace=False) for c in np.unique(targets)]
    return ex.subset(np.sort(np.concatenate(rows)))


def encoded_split(runtime, root: Path, split: str, boxes: dict[str, dict]) -> Examples:
    """A class-folder split (root/split/<class>/) through the runtime, with root/boxes.json's boxes."""
    items, _ = list_images(root / split, runtime.labels)
    return encode_examples(runtime, items, boxes, root, None, batch=32, progress=False)


def clip_weights(checkpoint: str | Path, out: Path) -> tuple[str, Path]:
    """A trained checkpoint's CLIP as an open_clip weight file (safetensors): (backbone name, file)."""
    model = load_model(checkpoint)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.clip.state_dict().items()}, str(out))
    return model.backbone.spec.name, out


def zero_shot_params(backbone: str, weights: Path, labels: str) -> dict:
    """The node's default model (zero-shot CLIP, per-level MLPER prompts) on these CLIP weights."""
    over = {"model": "zeroshot", "backbone": backbone, "pretrained": "", "backbone_checkpoint": str(weights)}
    return load_params(None, {**over, "labels": labels, "backend": "torch", "device": "cpu", "detector": "opencv"})


def measure_seed(config: str, overrides: list[str], seed: int, out: Path, shots, finetune: int) -> dict:
    cfg = load_train_config(config, [*overrides, f"train.seed={seed}", "train.progress=false"])
    if not (out / f"seed{seed}" / "run" / "best.safetensors").is_file():  # a finished seed's run is reused
        Trainer(cfg, out / f"seed{seed}" / "run", log=lambda *_: None).fit()
    name, weights = clip_weights(
        out / f"seed{seed}" / "run" / "best.safetensors", out / f"seed{seed}" / "clip.safetensors"
    )
    runtime = build_runtime(zero_shot_params(name, weights, cfg["data"]["labels"]))
    root = Path(cfg["data"]["root"]).expanduser()
    boxes = read_boxes_json(root / "boxes.json") if (root / "boxes.json").is_file() else {}
    train, test = encoded_split(runtime, root, "train", boxes), encoded_split(runtime, root, "test", boxes)
    scale = runtime.head.logit_scale
    row = {"zero_shot": scores(test.logits, test.targets)[0], "test_images": len(test)}
    for k in shots:
        for epochs, name in ((0, f"{k}_shot"), (finetune, f"{k}_shot_f"))[: 2 if finetune else 1]:
            fit = fit_cache(draw(train, k, seed), len(runtime.labels), scale, finetune_epochs=epochs, seed=seed)
            row[name] = scores(blended(test, fit["keys"], fit["values"], fit["alpha"], fit["beta"]), test.targets)[0]
            row[f"{name}_alpha_beta"] = [fit["alpha"], fit["beta"]]
    return row


def markdown(summary: dict) -> str:
    runs, shots = summary["runs"], summary["shots"]

    def cell(key: str) -> str:
        values = [100 * r[key] for r in runs]
        return f"{np.mean(values):.1f} ± {np.std(values):.1f}"

    rows = [
        "| test accuracy, % | " + " | ".join(f"{k} shot{'s' if k > 1 else ''} per class" for k in shots) + " |",
        "|---" * (len(shots) + 1) + "|",
        "| zero-shot (text only) | " + " | ".join(cell("zero_shot") for _ in shots) + " |",
        "| + cache (Tip-Adapter) | " + " | ".join(cell(f"{k}_shot") for k in shots) + " |",
    ]
    if summary["finetune_epochs"]:
        rows.append(
            f"| + cache, keys trained {summary['finetune_epochs']} epochs (Tip-Adapter-F) | "
            + " | ".join(cell(f"{k}_shot_f") for k in shots)
            + " |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="synthetic_mlper_tiny")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--shots", type=int, nargs="+", default=list(SHOTS))
    parser.add_argument("--finetune-epochs", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("overrides", nargs="*", help="training config overrides, e.g. data.root=data/synthetic")
    args = parser.parse_args(argv)
    runs = [
        measure_seed(args.config, args.overrides, s, args.out, args.shots, args.finetune_epochs) for s in args.seeds
    ]
    summary = {
        "config": args.config,
        "overrides": args.overrides,
        "seeds": args.seeds,
        "shots": args.shots,
        "finetune_epochs": args.finetune_epochs,
        "machine": describe_cpu(),
        "runs": runs,
    }
    summary["table"] = markdown(summary)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fewshot.json").write_text(json.dumps(summary, indent=2))
    print(summary["table"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
