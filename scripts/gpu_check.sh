#!/usr/bin/env bash
# The GPU path in one command, on a bare GPU machine: Python 3.12 with CUDA torch + torchvision, no network.
#   bash scripts/gpu_check.sh OUT_DIR [WHEELS_DIR]
# Installs the wheels brought along in WHEELS_DIR (default: wheels/ beside the checkout; get them on a
# networked machine with `pip download --no-deps --python-version 3.12 --only-binary=:all: -d wheels \
#   open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 ultralytics==8.4.190 ultralytics-thop==2.2.3 \
#   ultralytics-platform==0.1.99 lap==0.5.12`, plus pytest, pluggy, iniconfig if the machine lacks pytest),
# runs the CUDA tests, then `ros-fer bench` (ViT-B-32, ViT-B-16, ViT-L-14 at 1 and 8 persons, fp16, CUDA
# graphs off and on, with a random-weight yolo11n-pose on CUDA) and writes the JSON reports, the README's
# table rows (table.md) and the test log into OUT_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/gpu_check.sh OUT_DIR [WHEELS_DIR]}
wheels=${2:-wheels}
py=${PYTHON:-python3}
mkdir -p "$out"
scratch=$(mktemp -d)
export HF_HUB_OFFLINE=1 YOLO_OFFLINE=1 YOLO_AUTOINSTALL=0 YOLO_CONFIG_DIR="$scratch/yolo" XDG_CACHE_HOME="$scratch/cache"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! "$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_check: $py's torch sees no CUDA device" >&2
  exit 2
fi
if compgen -G "$wheels/*.whl" >/dev/null; then
  "$py" -m pip install -q --no-index --no-deps --find-links "$wheels" "$wheels"/*.whl
fi
missing=$("$py" - <<'PY'
import importlib.util
need = ["open_clip", "ftfy", "ultralytics", "torchvision", "safetensors", "yaml", "cv2", "pytest"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
PY
)
if [ -n "$missing" ]; then
  echo "gpu_check: missing on this machine: $missing (bring their wheels in $wheels/)" >&2
  exit 2
fi

"$py" - >"$out/machine.json" <<'PY'
import json
from ros_fer.machine import machine
print(json.dumps(machine(), indent=1))
PY

# The CUDA tests (the rest of the suite runs on every CPU machine in CI).
set +e
"$py" -m pytest -q -p no:cacheprovider -rs test/test_gpu_frame.py test/test_backends.py test/test_crops.py \
  test/test_detection.py -k "gpu_frame or cuda or tensorrt or device or yolo" 2>&1 | tee "$out/tests.log"
tests=${PIPESTATUS[0]}
set -e

# The frame with CUDA graphs off, then on (auto), each backbone at 1 and 8 persons: a random-weight
# yolo11n-pose on CUDA detects (timed), the frame's known people are cropped (--boxes known).
for backbone in ViT-B-32 ViT-B-16 ViT-L-14; do
  for graphs in off on; do
    "$py" -m ros_fer.cli bench --backend torch --device cuda --precision fp16 --backbone "$backbone" \
      --cuda-graphs "$graphs" --persons 1 8 --detectors yolo --person-weights yolo11n-pose.yaml --boxes known \
      --batches 1 8 48 --frames 100 --warmup 20 --json "$out/bench-$backbone-graphs-$graphs.json" >/dev/null
    echo "gpu_check: $backbone, graphs $graphs -> $out/bench-$backbone-graphs-$graphs.json"
  done
done
"$py" -m ros_fer.bench table "$out"/bench-*.json | tee "$out/table.md"
echo "gpu_check: tests exit $tests; reports and the README rows (table.md) in $out"
exit "$tests"
