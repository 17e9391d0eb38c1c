"""scripts/gpu_check.sh rehearsed on the CPU (`--cpu-rehearsal`): the GPU minutes are few, so the harness
(absolute OUT, preflight, the CUDA tests' node ids, the benchmark loop, the files that come back) is run
here first, every time the suite runs."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rehearse(out: Path, tmp_path: Path, **env) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHON": sys.executable, "XDG_CACHE_HOME": str(tmp_path / "cache"), **env}
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--cpu-rehearsal", str(out), str(tmp_path / "no-wheels")],
        capture_output=True,
        text=True,
        timeout=900,
        env=environ,
        cwd=tmp_path,  # OUT relative to where it is typed, not to the script's folder
    )


def test_the_gpu_check_rehearses_on_the_cpu(tmp_path):
    res = rehearse(Path("out"), tmp_path)
    out = tmp_path / "out"
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    # what comes back: at most 8 files, none in folders
    files = sorted(p.name for p in out.iterdir())
    assert files == ["bench.log", "machine.json", "preflight.log", "raw.tgz", "reports.json", "table.md", "tests.log"]
    assert all((out / f).is_file() for f in files) and len(files) <= 8
    preflight = (out / "preflight.log").read_text()
    assert "preflight: ok" in preflight and "open_clip" in preflight and "tensorrt" in preflight
    assert json.loads((out / "machine.json").read_text())["model"]
    # every CUDA test named in the script exists: collected, none missing
    script = (ROOT / "scripts" / "gpu_check.sh").read_text()
    ids = [line.strip() for line in script.splitlines() if line.strip().startswith("test/") and "::" in line]
    assert len(ids) >= 10
    collected = (out / "tests.log").read_text()
    for node in ids:
        assert node in collected, node
    assert "ERROR" not in collected and "not found" not in collected
    # the benchmark loop: each run's report and log, the README rows from them
    reports = json.loads((out / "reports.json").read_text())
    assert set(reports["reports"]) == {"bench-tiny-random-graphs-off", "bench-tiny-random-graphs-auto"}
    assert reports["machine"]["model"]
    # the targets' backbone with graphs on is profiled (where the frame's time goes); the other run is not
    assert reports["reports"]["bench-tiny-random-graphs-auto"]["results"][0]["profile"]["frames"] == 20
    assert reports["reports"]["bench-tiny-random-graphs-off"]["results"][0]["profile"] is None
    rows = (out / "table.md").read_text().splitlines()
    assert sum(row.startswith("| tiny-random, 1 |") for row in rows) == 2
    with tarfile.open(out / "raw.tgz") as tar:
        names = {Path(n).name for n in tar.getnames()}
    assert {"bench-tiny-random-graphs-off.json", "bench-tiny-random-graphs-off.log"} <= names
    assert "==== bench-tiny-random-graphs-off: exit 0" in (out / "bench.log").read_text()


def test_a_spent_time_budget_is_said_and_what_finished_still_comes_back(tmp_path):
    """No time left for the benchmarks: none starts, each is named as not started, the tests' log and the
    preflight still come back, and the script says it failed."""
    res = rehearse(tmp_path / "out", tmp_path, GPU_CHECK_BUDGET_S="0")
    out = tmp_path / "out"
    assert res.returncode == 1, res.stdout[-3000:]
    assert "not started, the time budget (0 s) is spent" in res.stdout
    assert "benchmarks failed: bench-tiny-random-graphs-auto (not started)" in res.stdout
    assert (out / "tests.log").is_file() and (out / "raw.tgz").is_file() and not (out / "reports.json").exists()
