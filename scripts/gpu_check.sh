#!/usr/bin/env bash
# The GPU path in one command, on a bare GPU machine (Python 3.12 with CUDA torch + torchvision, no network,
# no ROS): preflight, the CUDA tests by node id, then `ros-fer bench` per backbone and CUDA-graph setting.
#
#   bash scripts/gpu_check.sh [--cpu-rehearsal] OUT_DIR [WHEELS_DIR]
#
# On this project's device tool, exactly (under 6 minutes: two runs and two machine starts fit in 15 minutes
# of device time; measured on an H100 on 2026-11-26: 339 s and 337 s, a start about 30 s; on an H200 on
# 2026-11-27 with GPU_CHECK_BUDGET_S=290: 296 s):
#   bash scripts/gpu_wheels.sh                      # here, once: the missing wheels into .whl/ (git-ignored)
#   run(command="bash scripts/gpu_check.sh $OUT .whl", carry=[".whl"], timeout_s=420)
# Carried: .whl/ with open_clip_torch, ftfy, wcwidth, ultralytics, ultralytics-thop, ultralytics-platform
# and lap for Python 3.12 (scripts/gpu_wheels.sh lists them; ~3 MB). Everything else is on that machine.
#
# What comes back in OUT_DIR (7 files, within the tool's 8): preflight.log (versions, GPU, a JPEG decoded on
# the GPU, whether tensorrt imports), machine.json, tests.log, bench.log (each benchmark's log, one after
# another), reports.json (every finished benchmark report, the machine named), table.md (the README's rows
# from whatever finished) and raw.tgz (each benchmark's own JSON and log). A benchmark that fails or runs out
# of its time is logged and the others still run; graphs on first, ViT-L-14 (the targets' model) first.
#
# --cpu-rehearsal: the same script on a CPU machine (CI's), CUDA parts skipped: the preflight without the GPU
# decode, the test node ids only collected (each must exist), and the benchmark loop on a tiny random
# backbone on the CPU, so a harness mistake shows here and not in the GPU minutes (test_gpu_check.py).
set -uo pipefail
started=$SECONDS
rehearsal=0
if [ "${1:-}" = "--cpu-rehearsal" ]; then
  rehearsal=1
  shift
fi
[ -n "${1:-}" ] || { echo "usage: scripts/gpu_check.sh [--cpu-rehearsal] OUT_DIR [WHEELS_DIR]" >&2; exit 2; }
# OUT and the wheels as typed, relative to where the command was typed: made absolute before anything moves
mkdir -p "$1" || exit 2
out=$(cd "$1" && pwd)
wheels=${2:-$(dirname "$0")/../.whl}
[ -d "$wheels" ] && wheels=$(cd "$wheels" && pwd)
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
budget=${GPU_CHECK_BUDGET_S:-330}  # the benchmarks stop being started after this many seconds in all
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
raw="$scratch/raw"
mkdir -p "$raw"
export HF_HUB_OFFLINE=1 YOLO_OFFLINE=1 YOLO_AUTOINSTALL=0 YOLO_CONFIG_DIR="$scratch/yolo"
export XDG_CACHE_HOME="$scratch/cache" PYTHONUNBUFFERED=1
site="$scratch/site"
export PYTHONPATH="$PWD:$site${PYTHONPATH:+:$PYTHONPATH}"
say() { echo "gpu_check [$((SECONDS - started)) s]: $*" | tee -a "$out/preflight.log"; }
: >"$out/preflight.log"

# ---- wheels: into a scratch folder on PYTHONPATH, never into the machine's Python ----
if [ "$rehearsal" = 1 ] && compgen -G "$wheels/*.whl" >/dev/null; then
  say "rehearsal: $(ls "$wheels"/*.whl | wc -l) wheels in $wheels (for the GPU machine's Python 3.12), not installed here"
elif compgen -G "$wheels/*.whl" >/dev/null; then
  if ! "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$wheels"/*.whl \
    >>"$out/preflight.log" 2>&1; then
    say "installing the wheels in $wheels failed (preflight.log)"
    exit 2
  fi
  say "installed $(ls "$wheels"/*.whl | wc -l) wheels from $wheels into $site"
elif [ "$rehearsal" = 0 ]; then
  say "no wheels in $wheels; relying on what is installed"
fi

# ---- preflight: every import the run needs, versions, one JPEG decoded on the GPU ----
if ! GPU_CHECK_REHEARSAL=$rehearsal GPU_CHECK_OUT="$out" "$py" - >>"$out/preflight.log" 2>&1 <<'PY'
import importlib.metadata as md
import json
import os
import sys

import cv2
import numpy as np
import torch
import torchvision

rehearsal = os.environ["GPU_CHECK_REHEARSAL"] == "1"
import open_clip
import ultralytics

import ros_fer.bench
from ros_fer.machine import machine

print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "torchvision",
      torchvision.__version__, "open_clip", open_clip.__version__, "ultralytics", ultralytics.__version__,
      "opencv", cv2.__version__, "numpy", np.__version__)
for name in ("onnxruntime", "openvino", "pytest", "pytest-timeout", "lap", "ftfy"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "not installed")
try:
    import tensorrt

    print("tensorrt", tensorrt.__version__)
except ImportError as exc:
    print("tensorrt: not importable:", exc)
if not rehearsal:
    assert torch.cuda.is_available(), "torch sees no CUDA device"
    print("gpu", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
    from ros_fer.image_conv import decode_jpeg_tensor

    from pathlib import Path

    # a real photograph (random noise decodes ~13 grey levels apart: the decoders round chroma differently)
    data = (Path(ultralytics.__file__).parent / "assets" / "bus.jpg").read_bytes()
    gpu, cpu = decode_jpeg_tensor(data, "cuda"), decode_jpeg_tensor(data, "cpu")
    diff = (gpu.cpu().int() - cpu.int()).abs().float().mean().item()
    print("nvjpeg decode:", tuple(gpu.shape), gpu.device, f"mean difference to the CPU decode {diff:.3f}")
with open(os.environ["GPU_CHECK_OUT"] + "/machine.json", "w") as fh:
    json.dump(machine(), fh, indent=1)
print("preflight: ok")
PY
then
  say "preflight failed: $(tail -n 3 "$out/preflight.log" | tr '\n' ' ')"
  exit 2
fi
say "preflight ok ($(grep -m1 '^gpu ' "$out/preflight.log" || echo 'CPU rehearsal'))"

# ---- the CUDA tests, by node id (a renamed test is an error here, not a silent skip) ----
TESTS=(
  test/test_gpu_frame.py::test_cuda_graph_scorer_matches_the_cpu_scorer
  test/test_gpu_frame.py::test_nvjpeg_decodes_like_the_cpu
  test/test_gpu_frame.py::test_yolo_graphs_detect_like_the_eager_model
  test/test_gpu_frame.py::test_the_cuda_pipeline_keeps_the_frame_on_the_gpu
  test/test_gpu_frame.py::test_numpy_frames_stream_through_the_pinned_ring_on_the_upload_stream
  test/test_gpu_frame.py::test_capture_takes_only_device_tensors_and_a_failed_capture_runs_eagerly
  test/test_gpu_frame.py::test_warm_up_prepares_every_person_bucket_before_the_first_frame
  test/test_backends.py::test_torch_cuda_fp16_and_graphs_match_cpu
  test/test_backends.py::test_tensorrt_engine_parity_cache_and_rebuild
  test/test_crops.py::test_cuda_pipeline_cuts_crops_on_the_device
  test/test_crops.py::test_device_crops_send_their_boxes_in_one_upload
)
if [ "$rehearsal" = 1 ]; then
  timeout 300 "$py" -m pytest --collect-only -q -p no:cacheprovider "${TESTS[@]}" >"$out/tests.log" 2>&1
  tests=$?
else
  timeout 180 "$py" -m pytest -q -rA -p no:cacheprovider "${TESTS[@]}" >"$out/tests.log" 2>&1
  tests=$?
fi
say "tests: exit $tests ($(tail -n 1 "$out/tests.log"))"

# ---- the benchmarks: graphs on, ViT-L-14 first; each on its own, logged, bounded by the time left ----
if [ "$rehearsal" = 1 ]; then
  backbones=(tiny-random)
  graphs_modes=(auto off)
  common=(--device cpu --precision fp32 --persons 1 --batches 1 --frames 2 --warmup 1)
else
  backbones=(ViT-L-14 ViT-B-16 ViT-B-32)
  graphs_modes=(on off)
  common=(--device cuda --precision fp16 --persons 1 8 --batches 1 8 48 --frames 100 --warmup 20)
fi
: >"$out/bench.log"
failed=()
# graphs on first (what the targets are about), ViT-L-14 first within each: the budget cuts the least wanted
for graphs in "${graphs_modes[@]}"; do
  for backbone in "${backbones[@]}"; do
    name="bench-$backbone-graphs-$graphs"
    left=$((budget - (SECONDS - started)))
    if [ "$left" -lt 30 ]; then
      say "$name: not started, the time budget ($budget s) is spent"
      failed+=("$name (not started)")
      continue
    fi
    limit=$((left < 150 ? left : 150))
    profile=()  # where the whole frame's time goes: the first backbone (the targets'), graphs on
    [ "$backbone" = "${backbones[0]}" ] && [ "$graphs" != off ] && profile=(--profile 20)
    timeout "$limit" "$py" -m ros_fer.cli bench --backend torch --backbone "$backbone" --cuda-graphs "$graphs" \
      --detectors yolo --person-weights yolo11n-pose.yaml --boxes known "${common[@]}" "${profile[@]}" \
      --json "$raw/$name.json" >/dev/null 2>"$raw/$name.log"
    code=$?
    { echo "==== $name: exit $code"; cat "$raw/$name.log"; } >>"$out/bench.log"
    if [ "$code" = 0 ] && [ -s "$raw/$name.json" ]; then
      say "$name: ok"
    else
      say "$name: failed with exit $code (timeout after $limit s is 124; bench.log)"
      failed+=("$name")
    fi
  done
done

# ---- what finished: one reports file, the README's rows, the raw files ----
if compgen -G "$raw/bench-*.json" >/dev/null; then
  "$py" - "$out/reports.json" "$raw"/bench-*.json <<'PY'
import json
import sys

reports = {p.rsplit("/", 1)[-1][: -len(".json")]: json.load(open(p)) for p in sys.argv[2:]}
machine = next(iter(reports.values()))["machine"]
json.dump({"machine": machine, "reports": reports}, open(sys.argv[1], "w"), indent=1)
PY
  "$py" -m ros_fer.bench table "$raw"/bench-*.json >"$out/table.md" 2>>"$out/bench.log"
fi
tar czf "$out/raw.tgz" -C "$scratch" raw
say "done in $((SECONDS - started)) s: tests exit $tests; benchmarks failed: ${failed[*]:-none}; files in $out"
[ "$tests" = 0 ] && [ ${#failed[@]} = 0 ]
