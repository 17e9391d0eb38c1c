"""`backend: auto` and `detector_runtime: auto`: the candidates offered on a CPU, the choice made on fixed
timings (a slower or less accurate candidate is never taken, an explicit setting always wins), the cache
(used, and measured again when the model, the versions or the CPU change), bf16 and int8 against fp32 on
real photographs, and YOLO at every input size in frame coordinates."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import photo

import ros_fer.machine as machine
import ros_fer.measured as measured
import ros_fer.runtime as runtime
from ros_fer.backends import OnnxRuntimeBackend, OpenVinoBackend, TorchBackend, export_onnx
from ros_fer.crops import Person, crop_batch
from ros_fer.errors import ConfigError
from ros_fer.params import load_params

ISA_AMX = ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"]


def test_bf16_is_offered_only_where_the_cpu_has_it():
    assert ("torch", "bf16") in runtime.runtime_candidates("cpu", ISA_AMX)
    assert ("torch", "bf16") in runtime.runtime_candidates("cpu", ["avx2", "avx512f", "avx512_bf16"])
    assert ("torch", "bf16") not in runtime.runtime_candidates("cpu", ["avx2", "fma", "avx512f", "avx512_vnni"])
    assert runtime.runtime_candidates("cpu", ["avx2"], openvino=False) == [("torch", "fp32"), ("onnxruntime", "int8")]
    # OpenVINO where installed: bf16 where the CPU has it natively, fp32 elsewhere; it needs the fp32 graph
    avx2 = runtime.runtime_candidates("cpu", ["avx2"], openvino=True, nncf=False)
    assert avx2 == [("torch", "fp32"), ("openvino", "fp32"), ("onnxruntime", "int8")]
    amx = runtime.runtime_candidates("cpu", ISA_AMX, openvino=True, nncf=False)
    assert ("openvino", "bf16") in amx and ("openvino", "fp32") not in amx and ("openvino", "int8") not in amx
    # OpenVINO int8 where NNCF is installed too, by default and under an explicit int8; never without OpenVINO
    int8 = [("openvino", "int8"), ("onnxruntime", "int8")]
    assert runtime.runtime_candidates("cpu", ISA_AMX, openvino=True, nncf=True)[-2:] == int8
    assert runtime.runtime_candidates("cpu", ["avx2"], openvino=True, nncf=True) == [
        ("torch", "fp32"),
        ("openvino", "fp32"),
        *int8,
    ]
    assert runtime.runtime_candidates("cpu", ["avx2"], "int8", openvino=True, nncf=True) == int8
    assert ("openvino", "int8") not in runtime.runtime_candidates("cpu", ISA_AMX, "int8", openvino=False, nncf=True)
    assert ("openvino", "bf16") not in runtime.runtime_candidates("cpu", ISA_AMX, openvino=False)
    assert "openvino" not in dict(runtime.runtime_candidates("cpu", ISA_AMX, graphs_of=("int8",), openvino=True))
    import importlib.util

    installed = importlib.util.find_spec("openvino") is not None
    assert any(b == "openvino" for b, _ in runtime.runtime_candidates("cpu", ["avx2"])) == installed
    # the real CPU's flags, read here from /proc/cpuinfo independently of ros_fer.machine
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    native = bool(flags & {"amx_bf16", "avx512_bf16"})
    assert (("torch", "bf16") in runtime.runtime_candidates("cpu", machine.cpu_info()["isa"])) == native
    # CUDA: torch fp16 alone; an explicit precision keeps its own candidate
    assert runtime.runtime_candidates("cuda", ISA_AMX) == [("torch", "fp16")]
    assert runtime.runtime_candidates("cpu", ISA_AMX, "int8", openvino=False) == [("onnxruntime", "int8")]
    assert runtime.runtime_candidates("cpu", ISA_AMX, "int8", openvino=True, nncf=True) == int8
    assert runtime.runtime_candidates("cpu", ISA_AMX, "fp32") == [("torch", "fp32")]
    assert runtime.runtime_candidates("cpu", ISA_AMX, "bf16", openvino=True) == [
        ("torch", "bf16"),
        ("openvino", "bf16"),
    ]
    assert ("onnxruntime", "int8") not in runtime.runtime_candidates("cpu", ISA_AMX, graphs_of=("fp32",))


def test_precision_auto_per_backend_follows_the_cpu(monkeypatch):
    """`precision: auto` with a backend named: OpenVINO in bf16 only where the CPU has it natively (elsewhere
    OpenVINO would quietly run fp32 under a bf16 name), onnxruntime int8, torch fp32; fp16 on CUDA."""
    for isa, openvino in ((ISA_AMX, "bf16"), (["avx2", "fma", "avx512f", "avx512_vnni"], "fp32"), (["avx2"], "fp32")):
        info = {"model": "Test CPU", "isa": isa, "arch": "x86_64", "cores": 2, "vnni": False}
        monkeypatch.setattr(machine, "cpu_info", lambda info=info: info)
        assert runtime.resolve_precision("auto", "cpu", "openvino") == openvino, isa
        assert runtime.resolve_precision("auto", "cpu", "onnxruntime") == "int8"
        assert runtime.resolve_precision("auto", "cpu", "torch") == "fp32"
        assert runtime.resolve_precision("auto", "cuda:0", "torch") == "fp16"
        assert runtime.resolve_precision("bf16", "cpu", "onnxruntime") == "bf16"  # explicit: as given


def test_the_fastest_accurate_candidate_is_picked():
    def row(backend, precision, ms, cosine):
        return {"backend": backend, "precision": precision, "ms": ms, "min_cosine": cosine}

    figures = [row("torch", "fp32", 100, 1.0), row("torch", "bf16", 40, 0.9995), row("onnxruntime", "int8", 30, 0.97)]
    assert runtime.pick(figures)["precision"] == "bf16"  # int8 is faster but below its floor (0.99)
    figures[2]["min_cosine"] = 0.995
    assert runtime.pick(figures)["precision"] == "int8"
    figures[1]["ms"] = 20
    assert runtime.pick(figures)["precision"] == "bf16"
    figures[1]["min_cosine"] = 0.998  # bf16's floor is 0.999
    assert runtime.pick(figures)["precision"] == "int8"
    figures[1]["min_cosine"] = 0.999  # at its floor: fit (the floors are "at least")
    assert runtime.pick(figures)["precision"] == "bf16"
    assert runtime.pick([row("torch", "fp32", 100, 1.0), {**row("onnxruntime", "int8", None, None)}])["ms"] == 100


@pytest.fixture
def fixed_timings(tmp_path, monkeypatch):
    """A probe that times every candidate at a fixed figure (speed is not what is tested), on a CPU that
    offers every candidate, with a fresh cache. OpenVINO bf16 is timed slower than torch bf16, so the
    choices below hold where it cannot be built (a CPU without native bf16 under the patched flags)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(
        machine, "cpu_info", lambda: {"model": "Test CPU", "isa": ISA_AMX, "arch": "x86_64", "cores": 2, "vnni": True}
    )
    times = {("torch", "fp32"): 100.0, ("torch", "bf16"): 40.0, ("openvino", "bf16"): 45.0}
    times[("onnxruntime", "int8")] = 30.0
    times[("openvino", "int8")] = 35.0
    state = {"probes": 0}

    def timed(calls, rounds=measured.ROUNDS):
        for fns in calls.values():  # each candidate still runs (what a real probe does), at a fixed figure
            for fn in fns:
                fn()
        return {pair: [times[pair]] * len(fns) for pair, fns in calls.items()}

    monkeypatch.setattr(measured, "time_interleaved", timed)
    real_probe = runtime.probe_runtimes

    def probe(make, pairs, levels, size):
        state["probes"] += 1
        return real_probe(make, pairs, levels, size)

    monkeypatch.setattr(runtime, "probe_runtimes", probe)
    return times, state


def test_the_probe_times_candidates_in_turn_each_after_each_other_alike():
    """Round-robin: after one untimed call each, every round runs each candidate's frames once, so a slow
    spell of the machine falls on all of them; one median per candidate and frame comes back. Over the
    default rounds each candidate runs right after each other one equally often (what one leaves spinning
    slows the next: not always the same one), counted here from the calls as they ran."""
    from collections import Counter

    order = []
    calls = {key: [lambda k=key, f=f: order.append((k, f)) for f in range(2)] for key in ("a", "b", "c")}
    got = measured.time_interleaved(calls)
    untimed = [(k, f) for k in "abc" for f in range(2)]
    assert order[:6] == untimed and len(order) == 6 + 6 * measured.ROUNDS
    rounds = [order[6 + 6 * i : 12 + 6 * i] for i in range(measured.ROUNDS)]
    for calls_of_round in rounds:  # each candidate once per round, its frames one after the other
        keys = [k for k, _ in calls_of_round[::2]]
        assert sorted(keys) == ["a", "b", "c"] and calls_of_round == [(k, f) for k in keys for f in range(2)]
    after = Counter((r[2 * i][0], r[2 * i + 2][0]) for r in rounds for i in range(2))
    assert len(after) == 6 and len(set(after.values())) == 1, after  # each ordered pair alike
    assert set(got) == {"a", "b", "c"} and all(len(v) == 2 and min(v) >= 0 for v in got.values())
    assert measured.time_interleaved({}) == {}
    for n in range(1, 8):  # the orders themselves: permutations, each ordered pair next to each other alike
        rows = measured.balanced_orders(n)
        assert all(sorted(row) == list(range(n)) for row in rows)
        pairs = Counter((row[i], row[i + 1]) for row in rows for i in range(n - 1))
        assert len(pairs) == n * (n - 1) and len(set(pairs.values())) <= 1, n


def test_a_close_call_is_timed_again_the_two_alone(monkeypatch):
    """The two fastest within CLOSE of each other (each key's frames summed): those two timed again, alone,
    SETTLE_ROUNDS rounds, and those figures decide; far apart, one timing."""
    seen, answers = [], []

    def timed(calls, rounds=measured.ROUNDS):
        seen.append((sorted(calls), rounds))
        return answers.pop(0)

    monkeypatch.setattr(measured, "time_interleaved", timed)
    calls = {k: [print, print] for k in "abc"}
    answers[:] = [{"a": [50.0, 50.0], "b": [30.0, 30.0], "c": [33.0, 33.0]}, {"b": [35.0, 35.0], "c": [29.0, 31.0]}]
    figures, again = measured.time_settled(calls)
    assert seen == [(["a", "b", "c"], measured.ROUNDS), (["b", "c"], measured.SETTLE_ROUNDS)] and again == ["b", "c"]
    assert figures == {"a": [50.0, 50.0], "b": [35.0, 35.0], "c": [29.0, 31.0]}
    for b, c, close in ((30.0, 33.0, True), (30.0, 33.1, False), (33.0, 30.0, True), (30.0, 40.0, False)):
        seen.clear()
        answers[:] = [{"a": [50.0], "b": [b], "c": [c]}, {"b": [b], "c": [c]}]
        assert bool(measured.time_settled({k: [print] for k in "abc"})[1]) == close == (len(seen) == 2), (b, c)
    answers[:] = [{"a": [50.0]}]
    assert measured.time_settled({"a": [print]}) == ({"a": [50.0]}, [])
    # two candidates only, the slower exactly CLOSE behind (a margin exact in floats): a close call, settled
    monkeypatch.setattr(measured, "CLOSE", 0.5)
    answers[:] = [{"a": [2.0], "b": [3.0]}, {"a": [2.5], "b": [2.0]}]
    assert measured.time_settled({k: [print] for k in "ab"}) == ({"a": [2.5], "b": [2.0]}, ["a", "b"])


def test_the_detector_probe_settles_a_close_call_and_says_so(tmp_path, monkeypatch):
    """onnxruntime and OpenVINO within 10 % at the first timing: timed again, and the second timing decides
    (OpenVINO here, where the first had onnxruntime ahead); the start's note says so."""
    from ultralytics import YOLO

    from ros_fer.detection.yolo import YoloDetector

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    weights = tmp_path / "pose.pt"
    YOLO("yolo11n-pose.yaml").save(str(weights))
    answers = [{"torch": [90.0], "onnx": [60.0], "openvino": [64.0]}, {"onnx": [66.0], "openvino": [55.0]}]
    seen = []

    def timed(calls, rounds=measured.ROUNDS):
        seen.append(sorted(calls))
        return answers.pop(0)

    monkeypatch.setattr(measured, "time_interleaved", timed)
    det = YoloDetector(str(weights), runtime="auto", imgsz=320)
    assert seen == [["onnx", "openvino", "torch"], ["onnx", "openvino"]]
    assert det.runtime == "openvino" and det.choice["ms"] == {"torch": 90.0, "onnx": 66.0, "openvino": 55.0}
    assert det.choice["timed_again"] == ["onnx", "openvino"]
    assert "onnx and openvino within 10%: timed again, 12 rounds" in det.notes[0]


def tiny_params(**over):
    return load_params(None, {"backbone": "tiny-random", "pretrained": "", "device": "cpu", **over})


def test_the_probe_choice_is_cached_and_measured_again_when_anything_changes(fixed_timings, monkeypatch):
    times, state = fixed_timings
    first = runtime.build_runtime(tiny_params())
    assert state["probes"] == 1 and first.choice["probed"] and "cached" not in first.choice
    assert (first.backend.name, first.backend.precision) == ("onnxruntime", "int8")  # the fastest, 30 ms
    figures = {(f["backend"], f["precision"]): f for f in first.choice["figures"]}
    assert list(figures) == runtime.runtime_candidates("cpu", ISA_AMX)
    timed = {pair: f["ms"] for pair, f in figures.items() if f["ms"] is not None}
    assert timed == {pair: 2 * times[pair] for pair in timed}  # two frames each (1 and 4 people)
    assert set(timed) >= {("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "int8")}
    assert all(f["min_cosine"] >= runtime.COSINE_FLOORS[f["precision"]] for f in figures.values() if f["ms"])
    again = runtime.build_runtime(tiny_params())
    assert state["probes"] == 1 and again.choice["cached"]  # the cache: nothing measured
    assert (again.backend.name, again.backend.precision) == ("onnxruntime", "int8")
    runtime.build_runtime(tiny_params(labels="caers"))  # another model: measured again
    assert state["probes"] == 2
    monkeypatch.setattr(torch, "__version__", "9.9.9")  # other package versions: measured again
    runtime.build_runtime(tiny_params())
    assert state["probes"] == 3
    monkeypatch.setattr(
        machine, "cpu_info", lambda: {"model": "Other CPU", "isa": ISA_AMX, "arch": "x86_64", "cores": 2, "vnni": True}
    )
    runtime.build_runtime(tiny_params())  # another CPU: measured again
    assert state["probes"] == 4
    other_flags = [flag for flag in ISA_AMX if flag != "fma"]  # one flag fewer, the same candidates
    fewer = {"model": "Other CPU", "isa": other_flags, "arch": "x86_64", "cores": 2, "vnni": True}
    monkeypatch.setattr(machine, "cpu_info", lambda: fewer)
    runtime.build_runtime(tiny_params())
    assert state["probes"] == 5
    monkeypatch.setattr(torch, "get_num_threads", lambda: 7)  # another thread count: measured again
    runtime.build_runtime(tiny_params())
    assert state["probes"] == 6
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "__version__", "0.0.1")  # another onnxruntime
    runtime.build_runtime(tiny_params())
    assert state["probes"] == 7
    runtime.build_runtime(tiny_params())  # and nothing changed since: the cache
    assert state["probes"] == 7


def test_a_less_accurate_candidate_is_never_chosen(fixed_timings, monkeypatch):
    times, state = fixed_timings
    monkeypatch.setitem(runtime.COSINE_FLOORS, "int8", 0.99999999)  # int8 fails its floor on every machine
    chosen = runtime.build_runtime(tiny_params())
    assert (chosen.backend.name, chosen.backend.precision) == ("torch", "bf16")
    assert "rejected" in next(f for f in chosen.choice["figures"] if f["precision"] == "int8")
    times[("torch", "bf16")] = times[("openvino", "bf16")] = 500.0  # slower than fp32 now (another model)
    chosen = runtime.build_runtime(tiny_params(labels="caers"))
    assert (chosen.backend.name, chosen.backend.precision) == ("torch", "fp32")


def test_the_encoder_probe_times_a_close_call_again_and_says_so(fixed_timings):
    times, state = fixed_timings
    times[("torch", "bf16")] = 32.0  # within 10 % of onnxruntime int8's 30 ms
    chosen = runtime.build_runtime(tiny_params())
    assert (chosen.backend.name, chosen.backend.precision) == ("onnxruntime", "int8")
    assert chosen.choice["timed_again"] == ["onnxruntime int8", "torch bf16"]
    line = runtime.describe_choice(chosen.choice)
    assert line.endswith("; onnxruntime int8 and torch bf16 within 10%: timed again, 12 rounds"), line
    times[("torch", "bf16")] = 34.0  # 13 % behind: one timing
    assert "timed_again" not in runtime.build_runtime(tiny_params(labels="caers")).choice


def test_a_close_call_is_between_candidates_that_can_be_chosen(fixed_timings, monkeypatch):
    """int8 below its floor (timed, never chosen): the close call is between the two fastest of the rest."""
    times, state = fixed_timings
    monkeypatch.setitem(runtime.COSINE_FLOORS, "int8", 0.99999999)
    times[("torch", "bf16")] = 95.0  # within 10 % of torch fp32's 100 ms; int8 (30, 35 ms) far ahead of both
    times[("openvino", "bf16")] = 500.0  # where it can be built (a CPU with native bf16): far behind
    chosen = runtime.build_runtime(tiny_params())
    assert (chosen.backend.name, chosen.backend.precision) == ("torch", "bf16")
    assert chosen.choice["timed_again"] == ["torch bf16", "torch fp32"]


def test_an_explicit_backend_or_precision_always_wins(fixed_timings):
    times, state = fixed_timings
    explicit = runtime.build_runtime(tiny_params(backend="torch"))
    assert (explicit.backend.name, explicit.backend.precision) == ("torch", "fp32") and explicit.choice is None
    explicit = runtime.build_runtime(tiny_params(backend="onnxruntime", precision="fp32"))
    assert (explicit.backend.name, explicit.backend.precision) == ("onnxruntime", "fp32")
    assert state["probes"] == 0
    openvino = runtime.build_runtime(tiny_params(backend="openvino", precision="fp32"))
    assert (openvino.backend.name, openvino.backend.precision) == ("openvino", "fp32") and openvino.choice is None
    assert state["probes"] == 0
    # backend auto, precision given: one candidate (fp32 on this AMX CPU: OpenVINO runs bf16 here) is taken unprobed
    alone = runtime.build_runtime(tiny_params(precision="fp32"))
    assert (alone.backend.name, alone.backend.precision) == ("torch", "fp32")
    assert alone.choice["probed"] is False and alone.choice["figures"] == [] and state["probes"] == 0
    # more: only that precision's candidates, probed (int8: OpenVINO's and onnxruntime's)
    only = runtime.build_runtime(tiny_params(precision="int8"))
    assert (only.backend.name, only.backend.precision) == ("onnxruntime", "int8")
    assert [(f["backend"], f["precision"]) for f in only.choice["figures"]] == [
        ("openvino", "int8"),
        ("onnxruntime", "int8"),
    ]


def test_bf16_and_int8_hold_their_floors_against_fp32_on_photographs(tmp_path, monkeypatch):
    """ViT-B-32 (random weights: speed and numerics do not need trained ones) on crops of two real
    photographs; the per-crop cosine computed here with numpy, not with the probe's code."""
    from ros_fer.models import create_model

    model = create_model("zeroshot", {"backbone": {"name": "ViT-B-32", "pretrained": None}}).eval()
    crops = []
    people = {
        "zidane.jpg": ((922, 110, 1070, 258), (700, 40, 1180, 720)),
        "bus.jpg": ((100, 280, 190, 370), (50, 230, 250, 900)),
    }
    for name, (face, body) in people.items():
        person = Person(np.array([*face, 1], np.float32), np.array([*body, 1], np.float32))
        crops.append(crop_batch(photo(name), [person], model.levels, 224).images)
    images = np.concatenate(crops)
    index = np.arange(len(images)).reshape(-1, len(model.levels))
    ref = TorchBackend(model, "cpu", "fp32").encode(images, index)

    def min_cos(got):
        out = []
        for k in ref:
            a, b = ref[k].float().flatten(1).numpy(), got[k].float().flatten(1).numpy()
            out += list((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1))
        return min(out)

    bf16 = min_cos(TorchBackend(model, "cpu", "bf16").encode(images, index))
    int8 = min_cos(OnnxRuntimeBackend(export_onnx(model, tmp_path / "int8.onnx", "int8")).encode(images, index))
    assert bf16 >= 0.999, bf16
    assert int8 >= 0.99, int8
    fp32_graph = export_onnx(model, tmp_path / "fp32.onnx", "fp32")
    openvino_fp32 = min_cos(OpenVinoBackend(fp32_graph, "fp32", compiled_cache=tmp_path / "ov").encode(images, index))
    assert openvino_fp32 >= 0.9999, openvino_fp32
    # OpenVINO int8 (NNCF, calibrated on the sample frame's crops, not on these photographs' crops)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    openvino_int8 = OpenVinoBackend(fp32_graph, "int8", compiled_cache=tmp_path / "ov")
    assert min_cos(openvino_int8.encode(images, index)) >= 0.99
    (made,) = (tmp_path / "cache" / "ros_fer" / "openvino" / "int8").glob("*.xml")
    stamp = made.stat().st_mtime_ns
    again = OpenVinoBackend(fp32_graph, "int8", compiled_cache=tmp_path / "ov")  # the cached int8 model
    assert made.stat().st_mtime_ns == stamp and again.source == made
    # its parity figure, kept beside it, is honoured: below the floor, int8 is refused with what to use
    report = made.with_suffix(".json")
    report.write_text(json.dumps({**json.loads(report.read_text()), "min_cosine": 0.95}))
    with pytest.raises(ConfigError, match="0.9500 against fp32.*Use precision: fp32"):
        OpenVinoBackend(fp32_graph, "int8", compiled_cache=tmp_path / "ov")
    if native_bf16_on_this_cpu():
        openvino_bf16 = OpenVinoBackend(fp32_graph, "bf16", compiled_cache=tmp_path / "ov")
        import openvino

        # what OpenVINO itself says it compiled: bf16 arithmetic, not fp32 under another name
        assert openvino_bf16.compiled.get_property("INFERENCE_PRECISION_HINT") == openvino.Type.bf16
        assert min_cos(openvino_bf16.encode(images, index)) >= 0.999
        again = OpenVinoBackend(fp32_graph, "bf16", compiled_cache=tmp_path / "ov")  # from OpenVINO's cache
        torch.testing.assert_close(again.encode(images, index), openvino_bf16.encode(images, index))
        assert list((tmp_path / "ov").iterdir())  # the compiled model was cached there
    else:  # OpenVINO would quietly compute fp32: refused with what to do
        with pytest.raises(ConfigError, match="native bf16.*use precision fp32"):
            OpenVinoBackend(fp32_graph, "bf16")


def native_bf16_on_this_cpu() -> bool:
    """Read from /proc/cpuinfo here, independently of ros_fer.machine."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return bool(set(line.split(":", 1)[1].split()) & {"amx_bf16", "avx512_bf16"})
    return False


def test_bench_runs_vary_one_axis_at_a_time_beside_the_default():
    from ros_fer.bench import bench_runs

    runs = bench_runs("all", "auto", ["all"], "cpu", ISA_AMX)
    encoders = runtime.runtime_candidates("cpu", ISA_AMX)
    assert runs[0] == ("auto", "auto", "auto")  # the default first
    assert runs[1 : 1 + len(encoders)] == [(b, p, "auto") for b, p in encoders]
    assert runs[1 + len(encoders)] == ("onnxruntime", "fp32", "auto")
    assert runs[2 + len(encoders) :] == [
        ("auto", "auto", "torch"),
        ("auto", "auto", "onnx"),
        ("auto", "auto", "openvino"),
    ]
    assert bench_runs("torch", "bf16", ["auto"], "cpu", ISA_AMX) == [("torch", "bf16", "auto")]
    assert bench_runs("torch", "fp32", ["torch", "openvino"], "cpu", ISA_AMX) == [
        ("torch", "fp32", "torch"),
        ("torch", "fp32", "openvino"),
    ]


def test_bench_all_shows_the_default_beside_every_candidate(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [str(Path(sys.executable).with_name("ros-fer")), "bench", "--backend", "all", "--backbone", "tiny-random"]
    cmd += ["--detectors", "opencv", "--frames", "2", "--warmup", "1", "--batches", "1", "--repeat", "2"]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    res = subprocess.run([*cmd, "--json", str(out)], capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(out.read_text())
    asked = [(r["asked"]["backend"], r["asked"]["precision"]) for r in report["results"]]
    candidates = runtime.runtime_candidates("cpu", machine.cpu_info()["isa"])
    # two passes, the second in reverse order: the default first, then last
    rows = len(asked) // 2
    assert [r["pass"] for r in report["results"]] == [0] * rows + [1] * rows
    assert asked[rows:] == asked[:rows][::-1]
    asked = asked[:rows]
    assert asked[0] == ("auto", "auto") and set(candidates) <= set(asked[1:])
    default = report["results"][0]
    assert (default["backend"], default["precision"]) == tuple(
        (default["runtime_choice"]["backend"], default["runtime_choice"]["precision"])
    )
    assert set(report["default_vs_fastest_explicit"]) == {"1p"}
    versus = report["default_vs_fastest_explicit"]["1p"]
    frame = {}  # per configuration, the whole frame's median in each pass, gathered here from the rows
    for r in report["results"]:
        key = (r["asked"]["backend"], r["asked"]["precision"])
        frame.setdefault(key, []).append(r["stages_ms"]["frame"]["median"])
    assert versus["passes"] == 2 and versus["default_ms_per_pass"] == frame[("auto", "auto")]
    assert versus["default_ms"] == pytest.approx(sum(frame[("auto", "auto")]) / 2, abs=1e-3)
    fastest = min(sum(v) / 2 for k, v in frame.items() if k != ("auto", "auto"))
    assert versus["fastest_ms"] == pytest.approx(fastest, abs=1e-3)
    assert versus["ratio"] == pytest.approx(versus["default_ms"] / fastest, abs=2e-3)
    assert report["machine"]["model"] and "isa" in report["machine"]
    # a pass count that means nothing is said, with the flag's name
    bad = subprocess.run([*cmd[:-2], "--repeat", "0"], capture_output=True, text=True, timeout=600, env=env)
    assert bad.returncode != 0 and "--repeat 0" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.skipif(importlib.util.find_spec("nncf") is None, reason="nncf not installed")
def test_bench_all_records_a_refused_candidate_and_runs_the_rest(tmp_path):
    """A candidate that refuses to start on this machine (OpenVINO int8 below its parity floor, as on an
    AVX2-only EPYC before 7-bit weights) is a row of `rejected` with the reason, said on stderr; the other
    rows still run and are compared. Asked for alone, the same configuration fails with the reason."""
    cache = tmp_path / "cache"
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    cmd = [str(Path(sys.executable).with_name("ros-fer")), "bench", "--backbone", "tiny-random", "--precision", "int8"]
    cmd += ["--detectors", "opencv", "--frames", "2", "--warmup", "1", "--batches", "1"]
    made = subprocess.run([*cmd, "--backend", "openvino"], capture_output=True, text=True, timeout=600, env=env)
    assert made.returncode == 0, made.stderr[-3000:]
    reports = list((cache / "ros_fer" / "openvino" / "int8").glob("*.json"))
    reports = [r for r in reports if r.name != "digests.json"]
    assert len(reports) == 1
    reports[0].write_text(json.dumps({**json.loads(reports[0].read_text()), "min_cosine": 0.95}))
    shutil.rmtree(cache / "ros_fer" / "choices", ignore_errors=True)
    out = tmp_path / "bench.json"
    all_rows = [*cmd, "--backend", "all", "--json", str(out)]
    res = subprocess.run(all_rows, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(out.read_text())
    (refused,) = report["rejected"]
    assert refused["asked"] == {"backend": "openvino", "precision": "int8", "detector_runtime": "auto"}
    assert "0.9500 against fp32" in refused["reason"] and "Use precision: fp32" in refused["reason"]
    assert "openvino int8, YOLO auto: " in res.stderr and "0.9500" in res.stderr
    ran = [(r["asked"]["backend"], r["backend"], r["precision"]) for r in report["results"]]
    assert ran == [("auto", "onnxruntime", "int8"), ("onnxruntime", "onnxruntime", "int8")]
    assert report["default_vs_fastest_explicit"]["1p"]["fastest_explicit"].startswith("onnxruntime int8")
    alone = subprocess.run([*cmd, "--backend", "openvino"], capture_output=True, text=True, timeout=600, env=env)
    assert alone.returncode != 0 and "0.9500 against fp32" in alone.stderr and "Traceback" not in alone.stderr


# ---- YOLO: input size and runtime --------------------------------------------------------------------------


@pytest.mark.parametrize("imgsz", [640, 480, 320])
def test_pose_boxes_come_back_in_frame_coordinates_at_every_size(imgsz):
    """A 640x480 frame at imgsz 640, 480, 320: ultralytics' letterbox scales by r and pads to multiples of 32
    (by hand: 480x360 -> pad 24 rows, 12 above; 320x240 -> pad 16 rows, 8 above). A person box at
    (100, 50)-(300, 250) in the frame, placed where the model would see it, decodes back to the frame."""
    from ros_fer.detection.yolo import decode_candidates, letterbox_geometry, pose_candidates

    got_r, got_pad, _ = letterbox_geometry(480, 640, imgsz)
    by_hand = {640: (1.0, (0, 0)), 480: (0.75, (0, 12)), 320: (0.5, (0, 8))}[imgsz]
    assert (got_r, got_pad) == by_hand
    r, (px, py) = by_hand
    x1, y1, x2, y2 = 100, 50, 300, 250
    raw = torch.zeros(1, 4 + 1 + 51, 3)
    raw[0, :4, 1] = torch.tensor([(x1 + x2) / 2 * r + px, (y1 + y2) / 2 * r + py, (x2 - x1) * r, (y2 - y1) * r])
    raw[0, 4, 1] = 0.9
    raw[0, 5:8, 1] = torch.tensor([200 * r + px, 80 * r + py, 1.0])  # the nose keypoint at (200, 80)
    rows = pose_candidates(raw, raw.shape[-1]).numpy()  # every anchor
    bodies, kps = decode_candidates(rows, 0.5, 0.7, 10, r, (px, py), 480, 640, complete=True)
    np.testing.assert_allclose(bodies[0, :4], [x1, y1, x2, y2], atol=1e-3)
    np.testing.assert_allclose(kps[0, 0], [200, 80, 1.0], atol=1e-3)
    # a threshold every anchor passes: rows that are not the whole output may miss some (None); the whole
    # output decodes, the person first (the other two anchors are empty boxes at the letterbox's corner)
    assert decode_candidates(rows, -1.0, 0.7, 10, r, (px, py), 480, 640) is None
    bodies, _ = decode_candidates(rows, -1.0, 0.7, 10, r, (px, py), 480, 640, complete=True)
    assert len(bodies) == 3
    np.testing.assert_allclose(bodies[0, :4], [x1, y1, x2, y2], atol=1e-3)


@pytest.mark.parametrize("imgsz", [320, 480, 640])
def test_the_yolo_detector_reports_frame_coordinates_at_each_imgsz(imgsz):
    """End to end through ultralytics (random pose weights, every box kept): at every input size the boxes
    spread over the 640x480 frame, not over the smaller network input."""
    from ros_fer.detection import create_detector

    detector = create_detector("yolo", "cpu", "yolo11n-pose.yaml", confidence=1e-6, runtime="torch", imgsz=imgsz)
    assert detector.imgsz == imgsz
    frame = np.ascontiguousarray(photo("zidane.jpg")[:480, :640, ::-1])
    det = detector.detect(frame)
    assert len(det.bodies) > 0
    assert det.bodies[:, [0, 2]].max() <= 640 and det.bodies[:, [1, 3]].max() <= 480
    if imgsz < 640:
        assert det.bodies[:, 2].max() > imgsz or det.bodies[:, 3].max() > imgsz * 0.75  # beyond the input's size


def test_detector_runtime_auto_measures_once_and_caches(tmp_path, monkeypatch):
    """With a real weights file (random pose weights saved by ultralytics), `auto` times torch, onnxruntime and
    OpenVINO on the sample frame, takes the fastest, and the next start reads the choice."""
    from ultralytics import YOLO

    from ros_fer.detection.pose_runners import PoseRunner
    from ros_fer.detection.yolo import YoloDetector

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    weights = tmp_path / "pose.pt"
    YOLO("yolo11n-pose.yaml").save(str(weights))
    runs = []  # OpenVINO and onnxruntime are timed as the detector would run them: through this package's runners
    real_call = PoseRunner.__call__
    monkeypatch.setattr(PoseRunner, "__call__", lambda self, rgb: runs.append(self) or real_call(self, rgb))
    first = YoloDetector(str(weights), runtime="auto", imgsz=320)
    assert set(first.choice["ms"]) == {"torch", "onnx", "openvino"} and "cached" not in first.choice
    assert first.runtime == min(first.choice["ms"], key=first.choice["ms"].get)
    runners = {type(r).__name__: r for r in runs}
    assert set(runners) == {"OpenVinoPose", "OnnxPose"} and len(set(map(id, runs))) == 2  # one each
    assert all(sum(r is each for r in runs) >= 2 for each in runners.values())  # its first run, then timed
    if first.runtime == "torch":
        assert first.runner is None
    else:  # the probe's runner kept when chosen
        assert first.runner is runners["OpenVinoPose" if first.runtime == "openvino" else "OnnxPose"]
    assert "detector_runtime auto:" in first.notes[0] and "measured now" in first.notes[0]
    again = YoloDetector(str(weights), runtime="auto", imgsz=320)
    assert again.choice["cached"] and again.runtime == first.runtime and again.choice["ms"] == first.choice["ms"]
    other_size = YoloDetector(str(weights), runtime="auto", imgsz=256)  # another input size: measured again
    assert "cached" not in other_size.choice and other_size.choice["imgsz"] == 256
    explicit = YoloDetector(str(weights), runtime="torch", imgsz=320)
    assert explicit.runtime == "torch" and explicit.choice is None


def test_detector_runtime_auto_leaves_out_a_runtime_whose_export_fails(tmp_path, monkeypatch):
    """The exports cannot be written (the YOLO cache folder's place is taken by a file): onnxruntime and OpenVINO
    are left out with the reason, said in the start's note, and the detector starts on torch."""
    from ultralytics import YOLO

    from ros_fer.detection.yolo import YoloDetector

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "cache" / "ros_fer").mkdir(parents=True)
    (tmp_path / "cache" / "ros_fer" / "yolo").write_text("not a folder")
    weights = tmp_path / "pose.pt"
    YOLO("yolo11n-pose.yaml").save(str(weights))
    det = YoloDetector(str(weights), runtime="auto", imgsz=320)
    assert det.runtime == "torch" and set(det.choice["ms"]) == {"torch"}
    assert set(det.choice["rejected"]) == {"onnx", "openvino"}
    assert all(why.startswith(("FileExistsError", "NotADirectoryError")) for why in det.choice["rejected"].values())
    assert "onnx left out (" in det.notes[0] and "openvino left out (" in det.notes[0]
    assert det.detect(np.zeros((240, 320, 3), np.uint8)).bodies.shape[1] == 5  # it runs, on torch


def test_yolo_exports_leave_the_weights_folder_as_it_was(tmp_path, monkeypatch):
    """ultralytics writes an export beside the weights file it loaded. A user's own exports of the same names
    there (their pose.onnx, their pose_openvino_model/) stay as they were; the cache gets its own, which run,
    and no scratch folder is left behind: not this start's, nor one an export killed two hours ago left (a
    kill skips the clean-up), while one touched a minute ago (another start exporting now) is left alone."""
    from ultralytics import YOLO

    from ros_fer.detection.yolo import YoloDetector, yolo_cache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    killed, busy = yolo_cache() / ".export-killed", yolo_cache() / ".export-busy"
    for scratch, age_s in ((killed, 7200), (busy, 60)):
        (scratch / "weights_openvino_model").mkdir(parents=True)
        (scratch / "weights_openvino_model" / "weights.bin").write_bytes(b"half an export")
        os.utime(scratch, (time.time() - age_s, time.time() - age_s))
    folder = tmp_path / "weights"
    (folder / "pose_openvino_model").mkdir(parents=True)
    weights = folder / "pose.pt"
    YOLO("yolo11n-pose.yaml").save(str(weights))
    (folder / "pose.onnx").write_bytes(b"the user's own ONNX export")
    (folder / "pose_openvino_model" / "pose.xml").write_text("the user's own OpenVINO export")
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    frame = np.ascontiguousarray(photo("zidane.jpg")[:480, :640, ::-1])
    for name in ("onnx", "openvino"):
        det = YoloDetector(str(weights), runtime=name, imgsz=320)
        assert det.runtime == name and det.detect(frame).bodies.shape[1] == 5
    assert {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    assert not killed.exists() and (busy / "weights_openvino_model" / "weights.bin").is_file()
    busy_or_memo = {busy.name, "digests.json"}  # the weights' digest, remembered (test below)
    assert sorted(p.name.split(".", 2)[2] for p in yolo_cache().iterdir() if p.name not in busy_or_memo) == [
        "320.dynamic.onnx",
        "320.dynamic_openvino_model",
    ]
    exports = []  # a later start reads the cached exports: ultralytics exports nothing again
    real_export = YOLO.export
    monkeypatch.setattr(YOLO, "export", lambda self, **kw: exports.append(kw) or real_export(self, **kw))
    for name in ("onnx", "openvino"):
        assert YoloDetector(str(weights), runtime=name, imgsz=320).runtime == name
    assert exports == []


def test_yolo_weights_digest_is_remembered_by_size_and_time(tmp_path, monkeypatch):
    """The YOLO weights' SHA-256 keys the detector's choice and both exports, asked up to four times a start:
    it is hashed once and remembered in the YOLO cache by path, size and modification time (checked against
    hashlib on the bytes); a *.yaml model (random weights) is `builtin`."""
    import hashlib

    from ros_fer.detection.yolo import weights_digest, yolo_cache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    weights = tmp_path / "pose.pt"
    weights.write_bytes(b"w" * 5000)
    assert weights_digest(str(weights)) == hashlib.sha256(b"w" * 5000).hexdigest()[:16]
    memo = yolo_cache() / "digests.json"
    known = json.loads(memo.read_text())
    stamp = known[str(weights.resolve())]
    known[str(weights.resolve())] = {**stamp, "sha256": "e" * 64}  # a hit reads the memo, not the file
    memo.write_text(json.dumps(known))
    assert weights_digest(str(weights)) == "e" * 16
    weights.write_bytes(b"v" * 5000)  # new weights of the same size, written later: hashed again
    os.utime(weights, ns=(stamp["mtime_ns"] + 10**9, stamp["mtime_ns"] + 10**9))
    assert weights_digest(str(weights)) == hashlib.sha256(b"v" * 5000).hexdigest()[:16]
    assert weights_digest("yolo11n-pose.yaml") == "builtin"


READ_ONLY_WEIGHTS = """
import sys
import time
from ros_fer.detection.yolo import YoloDetector
det = YoloDetector(sys.argv[1], runtime=sys.argv[2], imgsz=320)
print(det.runtime, type(det.runner).__name__)
"""


@pytest.mark.parametrize("name", ["onnx", "openvino"])
def test_yolo_exports_from_weights_in_a_read_only_folder(tmp_path, name):
    """Weights installed where the node's user may not write (a read-only bind mount, which binds root too): the
    export is made in the cache and runs."""
    from ultralytics import YOLO

    folder, cache = tmp_path / "weights", tmp_path / "cache"
    folder.mkdir()
    YOLO("yolo11n-pose.yaml").save(str(folder / "pose.pt"))
    script = tmp_path / "detector.py"
    script.write_text(READ_ONLY_WEIGHTS)
    mount = f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder}"
    if subprocess.run(["unshare", "--mount", "sh", "-c", mount], capture_output=True, timeout=30).returncode:
        pytest.skip("needs `unshare --mount` (root or CAP_SYS_ADMIN) for a read-only bind mount")
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0"}
    run = subprocess.run(
        ["unshare", "--mount", "sh", "-c", f'{mount} && ! touch {folder}/x && exec "$0" "$@"']
        + [sys.executable, str(script), str(folder / "pose.pt"), name],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split()[-2:] == [name, {"onnx": "OnnxPose", "openvino": "OpenVinoPose"}[name]]
    assert sorted(p.name for p in folder.iterdir()) == ["pose.pt"]
