#!/usr/bin/env bash
# Set-up: a virtual environment in .venv/ with everything ros_fer needs, on a machine with or
# without a GPU and without a ROS installation (ROS 2 Kilted comes as PyPI wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "setup: Python 3.11 is required (the ROS 2 Kilted wheels are built for it); got $("$PY" --version)" >&2
  exit 1
fi
# System packages a bare Debian 12 lacks: venv, the Python headers, and a C/C++ toolchain with CMake for
# building the message package. Installed only when missing (as root), otherwise named.
missing=()
"$PY" -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
[ -f "$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ] || missing+=(python3-dev)
command -v cmake >/dev/null || missing+=(cmake)
command -v g++ >/dev/null || missing+=(g++)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: missing system packages; install them first: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install --disable-pip-version-check -q)
"${PIP[@]}" --upgrade pip
# Exactly the tested set: every package, direct and transitive, pinned in requirements/lock.txt
# (refresh it with `bash scripts/lock.sh`). --no-deps: nothing outside the lock comes in.
"${PIP[@]}" --no-deps -r requirements/lock.txt
"${PIP[@]}" --no-deps --no-build-isolation -e .
.venv/bin/python -m pip check --disable-pip-version-check
bash scripts/build_msgs.sh
.venv/bin/python -c 'import torch, open_clip, rclpy, ros_fer; print("setup: ok, torch", torch.__version__, "open_clip", open_clip.__version__)'
