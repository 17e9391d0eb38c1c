#!/usr/bin/env bash
# The wheels scripts/gpu_check.sh carries to the GPU machine (Python 3.12, x86_64; it has torch, torchvision,
# numpy, opencv-python-headless, onnx, onnxruntime, pytest and the rest, not these), into .whl/ (git-ignored).
# Versions: the lock's (requirements/lock.txt). Needs the package index.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.whl}
mkdir -p "$dest"
pins=()
for name in open-clip-torch ftfy wcwidth ultralytics ultralytics-thop ultralytics-platform lap; do
  pin=$(grep -i -E "^${name}==" requirements/lock.txt | cut -d' ' -f1)
  [ -n "$pin" ] || { echo "gpu_wheels: $name is not in requirements/lock.txt" >&2; exit 1; }
  pins+=("$pin")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$dest" "${pins[@]}"
ls -la "$dest"
