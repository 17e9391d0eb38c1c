#!/usr/bin/env bash
# The test suite (sets its own offline environment; see test/conftest.py). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  echo "test: no .venv; run 'bash scripts/setup.sh' first" >&2
  exit 1
fi
exec .venv/bin/python -m pytest test "$@"
