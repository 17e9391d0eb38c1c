"""The paper's level ablation (MLPER Table VIII) on any data set: train and test with all levels and with
each level alone, over several seeds, and print a Markdown table of mean ± std test accuracy. On the
synthetic set it adds the ideal accuracy of each level subset (levels.json), the ceiling a model can reach.

    python training/level_ablation.py --config synthetic_mlper_tiny --seeds 0 1 2 data.root=data/synthetic
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.config import load_train_config  # noqa: E402
from training.make_synthetic import LEVEL_SUBSETS  # noqa: E402
from training.seeds import run_seeds, seed_args  # noqa: E402


def level_ablation(config: str, seeds: list[int], overrides: list[str], out: Path) -> dict:
    rows = {}
    for name, levels in LEVEL_SUBSETS.items():
        # Table VIII was run without the alignment: ITM off, so the levels alone are compared (overridable)
        level_overrides = ["model.itm.enabled=false", *overrides, f"model.levels=[{','.join(levels)}]"]
        s = run_seeds(config, seeds, level_overrides, out / name.replace("+", "_"))
        rows[name] = {k: s[k] for k in ("accuracy", "mean_class_accuracy", "subsets", "runs")}
    root = load_train_config(config, overrides)["data"].get("root")  # the synthetic set's ideal reader
    meta = Path(root or ".").expanduser() / "levels.json"
    ideal = json.loads(meta.read_text()) if root and meta.is_file() else {}
    summary = {
        "config": config,
        "overrides": overrides,
        "seeds": seeds,
        "levels": rows,
        "ideal": ideal.get("ideal_test_accuracy", {}),
        "ideal_occlusion": ideal.get("ideal_occlusion_accuracy", {}),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "level_ablation.json").write_text(json.dumps(summary, indent=2))
    return summary


def markdown(summary: dict) -> str:
    """One row per level subset: test accuracy mean ± std and per seed, then each evaluation subset
    (the synthetic set's occlusion subset: the face hidden), then the ideal reader's accuracy."""
    pct = lambda m: f"{100 * m['mean']:.1f} ± {100 * m['std']:.1f}" if m["mean"] is not None else "-"  # noqa: E731
    rows = summary["levels"]
    subsets = list(next(iter(rows.values()))["subsets"])
    seeds = ", ".join(str(s) for s in summary["seeds"])
    head = ["levels", f"test accuracy (seeds {seeds})", "per seed", *(f"{name} subset" for name in subsets)]
    head += ["ideal", "ideal, occlusion"] if summary["ideal"] else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in rows.items():
        cells = [name, pct(row["accuracy"]), " / ".join(f"{100 * r['accuracy']:.1f}" for r in row["runs"])]
        cells += [pct(row["subsets"][sub]) for sub in subsets]
        if summary["ideal"]:
            cells += [f"{100 * summary[key][name]:.1f}" for key in ("ideal", "ideal_occlusion")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = seed_args("accuracy with all levels and with each level alone", "runs/level_ablation", argv)
    print(markdown(level_ablation(args.config, args.seeds, args.overrides, Path(args.out))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
