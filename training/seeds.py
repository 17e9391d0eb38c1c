"""Train and evaluate one config over several seeds and report mean ± std: single best runs are what
users of FER repositories rightly distrust.

    python training/seeds.py --config mlper_rafdb_vitl14 --seeds 0 1 2 [key=value ...] --out runs/seeds
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from training.config import load_train_config  # noqa: E402
from training.engine import Trainer  # noqa: E402
from training.evaluate import evaluate  # noqa: E402


def mean_std(values: list[float | None]) -> dict:
    v = np.array([x for x in values if x is not None], float)
    if not len(v):
        return {"mean": None, "std": None}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}


def run_seeds(config: str, seeds: list[int], overrides: list[str], out: Path) -> dict:
    runs = []
    for seed in seeds:
        cfg = load_train_config(config, [*overrides, f"train.seed={seed}"])
        run_dir = out / f"seed{seed}"
        Trainer(cfg, run_dir, resume=True).fit()
        best = run_dir / "best.safetensors"
        result = evaluate(str(best) if best.is_file() else None, cfg, run_dir / "eval")
        runs.append(
            {
                "seed": seed,
                "accuracy": result["all"]["accuracy"],
                "mean_class_accuracy": result["all"]["mean_class_accuracy"],
                "subsets": {name: m["accuracy"] for name, m in result["subsets"].items()},
            }
        )
    summary = {"config": config, "seeds": seeds, "runs": runs, "subsets": {}}
    for key in ("accuracy", "mean_class_accuracy"):
        summary[key] = mean_std([r[key] for r in runs])
    for name in runs[0]["subsets"]:  # occlusion, pose: the same lists for every seed
        summary["subsets"][name] = mean_std([r["subsets"][name] for r in runs])
    out.mkdir(parents=True, exist_ok=True)
    (out / "seeds.json").write_text(json.dumps(summary, indent=2))
    return summary


def seed_args(description: str, out: str, argv=None) -> argparse.Namespace:
    """--config, --seeds, KEY=VALUE overrides and --out: the command line of every multi-seed script."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--config", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    ap.add_argument("--out", default=out)
    return ap.parse_intermixed_args(argv)


def main(argv=None) -> int:
    args = seed_args("mean ± std over seeds", "runs/seeds", argv)
    s = run_seeds(args.config, args.seeds, args.overrides, Path(args.out))
    a, m = s["accuracy"], s["mean_class_accuracy"]
    acc = f"accuracy {100 * a['mean']:.2f} ± {100 * a['std']:.2f}"
    mca = f"mean class accuracy {100 * m['mean']:.2f} ± {100 * m['std']:.2f}"
    print(f"{acc}; {mca} over seeds {args.seeds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
