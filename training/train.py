"""Train MLPER or MPA-FER.

python training/train.py --config training/configs/mlper_rafdb_vitl14.yaml [key=value ...] [--out DIR] [--resume]
torchrun --nproc_per_node 4 training/train.py --config ...      # DistributedDataParallel
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ros_fer.errors import FerError, WeightsUnavailableError  # noqa: E402
from training.config import load_train_config  # noqa: E402
from training.engine import Trainer  # noqa: E402

# How a local weight file is given here, where pretrained weights cannot be fetched.
OFFLINE_HINT = "Here: model.backbone.pretrained= model.backbone.checkpoint=FILE (a local {backbone} weight file)."


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Train MLPER or MPA-FER (see training/configs/).")
    ap.add_argument("--config", required=True, help="a config under training/configs/ (name or path)")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. train.epochs=5 model.levels=[face]")
    ap.add_argument("--out", help="run folder (default: runs/<config name>)")
    ap.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    args = ap.parse_intermixed_args(argv)
    try:
        cfg = load_train_config(args.config, args.overrides)
        out = Path(args.out or Path("runs") / Path(args.config).stem)
        result = Trainer(cfg, out, resume=args.resume).fit()
    except WeightsUnavailableError as exc:
        print(f"train: error: {exc.with_hint(OFFLINE_HINT)}", file=sys.stderr)
        return 2
    except FerError as exc:
        print(f"train: error: {exc}", file=sys.stderr)
        return 2
    if result.get("out"):  # rank 0 (under torchrun every rank returns)
        print(json.dumps(result))
        run = Path(result["out"])
        best = run / "best.safetensors"
        print(
            f"train: done in {result['seconds']:.0f} s, "
            + (
                "trained on the whole train split (no validation); "
                if result.get("full_train_split")
                else f"best validation accuracy {result['best_acc']:.4f} (epoch {result['best_epoch']}); "
                if result["best_epoch"] > 0
                else f"stopped at step {result['global_step']}, before an epoch ended; "
            )
            + f"checkpoints {best if best.is_file() else run / 'last.safetensors'}, "
            f"logs {run / 'log.csv'}, {run / 'val.csv'}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
