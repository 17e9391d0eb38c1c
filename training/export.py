"""Export a trained checkpoint to what the node loads (same as `ros-fer export`).

    python training/export.py --checkpoint runs/mlper/best.safetensors --out models/mlper-rafdb/ \
        [--precision fp32,fp16,int8]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ros_fer.cli import main as ros_fer_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(ros_fer_main(["export", *sys.argv[1:]]))
