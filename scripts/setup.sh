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
if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
      "$PY" -m venv .venv
    else
      echo "setup: '$PY -m venv' failed; install Debian's python3-venv (sudo apt-get install python3-venv)" >&2
      exit 1
    fi
  fi
fi
PIP=(.venv/bin/python -m pip install --disable-pip-version-check -q)
"${PIP[@]}" --upgrade pip
"${PIP[@]}" -c requirements/constraints.txt -r requirements/base.txt -r requirements/ros.txt
"${PIP[@]}" -c requirements/constraints.txt --no-deps --no-build-isolation -e .
.venv/bin/python -c 'import torch, open_clip, rclpy, ros_fer; print("setup: ok, torch", torch.__version__, "open_clip", open_clip.__version__)'
