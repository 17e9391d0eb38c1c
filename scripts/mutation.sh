#!/usr/bin/env bash
# Mutation testing of the core modules (not part of CI): mutmut changes one thing at a time in
# ros_fer/{crops,tracking,head,labels,text_bank,image_conv,pipeline,adapt,backends/graphs,measured}.py ([mutmut] in setup.cfg) and runs the
# fast tests that reach it; a mutant the tests let through is a feature no test checks.
#   bash scripts/mutation.sh            # run (resumes where a stopped run left off), then the score
#   bash scripts/mutation.sh --score    # the score of the last run only
#   bash scripts/mutation.sh 'ros_fer.crops.*'   # only these mutants (mutmut's name patterns)
# mutmut lives in its own venv (.venv-mutation) that sees .venv's packages, so .venv stays exactly the lock.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  echo "mutation: no .venv; run 'bash scripts/setup.sh' first" >&2
  exit 1
fi
mv=.venv-mutation
if [ ! -x "$mv/bin/mutmut" ]; then
  .venv/bin/python -m venv --without-pip "$mv"
  site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  own=$("$mv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$site" >"$own/ros_fer_venv.pth"
  .venv/bin/python -m pip --python "$mv/bin/python" install -q mutmut==3.8.1
fi
export HF_HUB_OFFLINE=1 YOLO_OFFLINE=1 YOLO_AUTOINSTALL=0 OMP_NUM_THREADS=1
if [ -z "${YOLO_CONFIG_DIR:-}" ]; then  # ultralytics' settings for this run only
  YOLO_CONFIG_DIR=$(mktemp -d)
  trap 'rm -rf "$YOLO_CONFIG_DIR"' EXIT
fi
export YOLO_CONFIG_DIR
if [ "${1:-}" != "--score" ]; then
  "$mv/bin/mutmut" run --max-children "${MUTATION_JOBS:-$(getconf _NPROCESSORS_ONLN)}" "$@" || true
fi
"$mv/bin/mutmut" results --all true >.mutation-results.txt 2>/dev/null || true
"$mv/bin/python" - .mutation-results.txt <<'PY'
import collections, re, sys

counts = collections.defaultdict(collections.Counter)
for line in open(sys.argv[1]):
    m = re.match(r"\s*(ros_fer\.\w+)\.\S+: (.+)$", line.strip())
    if m:
        counts[m.group(1)][m.group(2).strip()] += 1
total = collections.Counter()
print(f"{'module':<22}{'killed':>8}{'survived':>10}{'no tests':>10}{'other':>8}{'score':>8}")
for module in sorted(counts):
    c = counts[module]
    total.update(c)
    killed = c["killed"] + c["timeout"] + c["segfault"]
    other = sum(c.values()) - killed - c["survived"] - c["no tests"]
    print(f"{module:<22}{killed:>8}{c['survived']:>10}{c['no tests']:>10}{other:>8}{killed / max(1, sum(c.values())):>8.1%}")
killed = total["killed"] + total["timeout"] + total["segfault"]
print(f"{'all':<22}{killed:>8}{total['survived']:>10}{total['no tests']:>10}{'':>8}{killed / max(1, sum(total.values())):>8.1%}")
PY
