#!/usr/bin/env bash
# Refresh requirements/lock.txt: every package scripts/setup.sh installs, direct and transitive, pinned.
# Inputs: requirements/base.txt and ros.txt (what we need), constraints.txt (pins no dependency may move).
# After a refresh, run `bash scripts/setup.sh && bash scripts/test.sh` before committing the new lock.
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-}
if [ -z "$UV" ]; then  # uv in a throw-away venv, not in the project's .venv
  tools=$(mktemp -d)
  trap 'rm -rf "$tools"' EXIT
  python3 -m venv "$tools/venv" && "$tools/venv/bin/python" -m pip install -q --disable-pip-version-check uv
  UV="$tools/venv/bin/uv"
fi
{
  echo "# Every package scripts/setup.sh installs (Python 3.11, x86_64 Linux), pinned to the tested versions."
  echo "# Generated from base.txt + ros.txt + constraints.txt by \`bash scripts/lock.sh\` (uv pip compile); do not edit."
  "$UV" pip compile requirements/base.txt requirements/ros.txt -c requirements/constraints.txt \
    --python-version 3.11 --python-platform x86_64-manylinux_2_28 --no-header --annotation-style line -q
} >requirements/lock.txt.tmp
mv requirements/lock.txt.tmp requirements/lock.txt
