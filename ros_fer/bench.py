"""`ros-fer bench`: per-stage latency of the whole frame (decode, detection, crop and resize, encoding,
head, tracking), the model-only floor (detector, encoder and head back to back on the same inputs), the
glue ratio, and encoder throughput in person-frames/s at several batch sizes. Random backbone weights
by default, so it runs offline; speed does not depend on the weights."""

from __future__ import annotations

import gc
import json
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from . import __version__
from .backends.image_side import dense_index
from .crops import associate, crop_batch, crop_workers, sample_crops
from .crops import sample_frame as bench_frame
from .detection import Detections
from .errors import ConfigError
from .machine import machine
from .params import load_params
from .paths import write_whole
from .pipeline import Pipeline, person_boxes
from .tracking import Tracker

BATCHES = (1, 3, 12, 48)
FRAME = (640, 480)  # the sample frame's size (crops.SAMPLE_FRAME)


def stats(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples)
    return {"median": round(float(np.median(a)), 3), "p95": round(float(np.percentile(a, 95)), 3), "n": len(a)}


def _timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, (time.perf_counter() - t) * 1e3


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class KnownBoxes:
    """A detector that runs (and is timed) as usual, its finds replaced by the bench frame's known people: for
    random-weight detectors that find nobody. Host and device detection alike."""

    def __init__(self, detector, known: Detections):
        self.detector, self.known, self.name = detector, known, detector.name
        self.warnings = list(getattr(detector, "warnings", ()))
        # what the start's warm-up asks of a detector (YOLO's graph per frame size is captured there)
        self.cuda_graphs = bool(getattr(detector, "cuda_graphs", False))

    def detect(self, rgb: np.ndarray) -> Detections:
        self.detector.detect(rgb)
        return self.known

    def detect_tensor(self, frame, keypoint_score: float = 0.5) -> Detections | None:
        inner = getattr(self.detector, "detect_tensor", None)
        return None if inner is None or inner(frame, keypoint_score) is None else self.known


def run_bench(
    params: dict,
    frames: int = 50,
    warmup: int = 5,
    persons: int = 1,
    batches=BATCHES,
    boxes: str = "detected",
    profile: int = 0,
) -> dict:
    """Time one configuration on the pipeline's own path (the node's: host, or the GPU-resident frame).
    - stages_ms: decode (with the upload), detect, crops, encode, head, track, each waited for (synchronised);
      `frame`: the whole frame as `Pipeline.process` runs it from JPEG bytes, nothing synchronised in between;
    - raw_frame_ms: the same frame as a camera's raw bgr8 image (what the node gets from an Image topic: no
      decode), timed in turn with the JPEG frame, and its ratio to the floor;
    - host_crops_one_thread_ms: host crops only: the crops stage again on one thread (the stage's own
      `threads.host_crops` share them), timed in turn with it, each right after a detection of the frame, so a
      machine shows what the threads gain;
    - streamed_ms: frames back to back (`Pipeline.stream`: each decode and upload overlaps the previous frame);
    - model_only_ms: detector and scorer back to back on the same inputs (the floor), and frame / floor;
    - start_s: building the pipeline (`Pipeline.from_params`, the node's configure before its warm-up): the
      first row of a configuration on a machine includes its probe, later ones read the cached choice.
    boxes: `detected` (the detector's own) or `known` (the frame's known people, while the detector still runs
    and is timed: for random-weight detectors that find nobody).
    profile: that many more whole frames under torch's profiler (`profile_frames`), reported as `profile`."""
    t_start = time.perf_counter()
    pipeline = Pipeline.from_params(params)  # as the node's configure builds it (a probe runs once per machine)
    start_s = time.perf_counter() - t_start
    rt, device = pipeline.runtime, pipeline.runtime.backend.device
    frame, known = bench_frame(persons)
    jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    found = len(associate(pipeline.detector.detect(np.ascontiguousarray(frame[:, :, ::-1])), *FRAME[::-1], persons))
    detector_choice = getattr(pipeline.detector, "choice", None)  # detector_runtime auto: what it measured
    detector_runtime = getattr(pipeline.detector, "runtime", None)  # YOLO's runtime (torch, onnx, openvino)
    if boxes == "known":
        pipeline.detector = KnownBoxes(pipeline.detector, known)
    # As the node starts: warmed up (graphs captured), then the first frame with this many people.
    warmed = pipeline.warm_up(f"{FRAME[0]}x{FRAME[1]}")
    _, first_frame = _timed(pipeline.process, jpeg)
    stages: dict[str, list[float]] = {k: [] for k in ("decode", "detect", "crops", "encode", "head", "track")}
    whole: list[float] = []
    raw: list[float] = []
    floor: list[float] = []
    one_thread: list[float] = []
    tracker = Tracker(rt.labels.classes)
    batch = loaded = people = None
    for i in range(warmup + frames):
        # Stage by stage, each stage waited for.
        t = time.perf_counter()
        loaded = pipeline.load(pipeline.decode(jpeg))
        _sync(device)
        t_dec = (time.perf_counter() - t) * 1e3
        det, t_det = _timed(pipeline.detect, loaded)
        people = associate(det, FRAME[1], FRAME[0], persons, pipeline.keypoint_score)
        t = time.perf_counter()
        batch = pipeline.crop(loaded.rgb, people, loaded.tensor)
        _sync(device)
        t_crop = (time.perf_counter() - t) * 1e3
        if not pipeline.device_crops:  # host crops on one thread too, right after a detection as the stage's
            pipeline.detect(loaded)  # (right after the stage's, they found its pixels in the cache)
            t_one = _one_thread_crops(loaded.rgb, people, rt)
        t = time.perf_counter()
        feats = rt.backend.encode(batch.images, batch.index)
        _sync(device)
        t_enc = (time.perf_counter() - t) * 1e3
        t = time.perf_counter()
        with torch.inference_mode():
            probs = rt.head(feats, rt.text).float().softmax(-1).cpu().numpy()
        t_head = (time.perf_counter() - t) * 1e3
        _, t_track = _timed(tracker.update, person_boxes(people), probs)
        # The whole frame as the node runs it: JPEG bytes in, results out.
        _, t_frame = _timed(pipeline.process, jpeg)
        _, t_raw = _timed(pipeline.process, frame)  # a raw bgr8 Image's pixels, as the node gets them
        # The floor: detector and scorer back to back on the same inputs, nothing else.
        t = time.perf_counter()
        pipeline.detect(loaded)
        if people:
            pipeline.probabilities(batch)
        _sync(device)
        t_floor = (time.perf_counter() - t) * 1e3
        if i >= warmup:
            for key, value in zip(stages, (t_dec, t_det, t_crop, t_enc, t_head, t_track), strict=True):
                stages[key].append(value)
            whole.append(t_frame)
            raw.append(t_raw)
            floor.append(t_floor)
            if not pipeline.device_crops:
                one_thread.append(t_one)
    t = time.perf_counter()
    for _ in pipeline.stream(jpeg for _ in range(frames)):
        pass
    streamed = (time.perf_counter() - t) * 1e3 / max(frames, 1)
    frame_stats, raw_stats, model_only = stats(whole), stats(raw), stats(floor)
    profiled = profile_frames(pipeline.process, jpeg, profile) if profile > 0 else None
    backend = rt.backend
    context = "context" in rt.levels
    return {
        "asked": {
            "backend": params["backend"],
            "precision": params["precision"],
            "detector_runtime": params["detector_runtime"],
        },
        "backend": backend.name,
        "precision": backend.precision,
        "device": device,
        "cuda_graphs": bool(getattr(backend, "cuda_graphs", False)),
        "model": rt.description,
        "levels": list(rt.levels),
        "image_size": rt.image_size,
        "detector": pipeline.detector.name,
        "detector_runtime": detector_runtime,
        "boxes": boxes,
        "persons": persons,
        "persons_found": found,
        "encoder_crops_per_frame": len(batch.images),
        "crops_on": "device" if pipeline.device_crops else "host",
        "decoded_on": "device" if isinstance(pipeline.decode(jpeg), torch.Tensor) else "host",
        "detected_on": pipeline.detected_on,
        "frames": frames,
        "stages_ms": {**{k: stats(v) for k, v in stages.items()}, "frame": frame_stats},
        "host_crops_one_thread_ms": stats(one_thread) if one_thread else None,
        "start_s": round(start_s, 3),
        "warm_up": warmed,
        "first_frame_ms": round(first_frame, 3),
        "first_frame_over_median": round(first_frame / frame_stats["median"], 3),
        "streamed_ms_per_frame": round(streamed, 3),
        "model_only_ms": model_only,
        "frame_over_model_only": round(frame_stats["median"] / model_only["median"], 3),
        "raw_frame_ms": raw_stats,
        "raw_frame_over_model_only": round(raw_stats["median"] / model_only["median"], 3),
        "encoder_person_frames_per_s": _throughput(rt, batches),
        # as frames run it: one context crop per frame of that many persons (None without a context level)
        "encoder_person_frames_per_s_shared_context": _throughput(rt, batches, True) if context else None,
        "context_sharing": _sharing(rt, loaded.host(), people) if people else None,
        "profile": profiled,
        "threads": _threads(backend),
        "warnings": list(pipeline.warnings),
        "runtime_choice": rt.choice,  # backend auto: what the probe measured and chose
        "detector_choice": detector_choice,
        "machine": machine(),
        "versions": versions(),
    }


def _one_thread_crops(rgb: np.ndarray, people, rt) -> float:
    """ms to cut the frame's host crops on one thread (what the crops stage's threads gain)."""
    t = time.perf_counter()
    crop_batch(rgb, people, rt.levels, rt.image_size, workers=1)
    return (time.perf_counter() - t) * 1e3


def profile_frames(process, frame, frames: int, top: int = 30) -> dict:
    """`process(frame)` run `frames` times under torch's profiler (host, and CUDA where there is a GPU): the
    `top` operations by host time of their own, per frame (calls, host ms, device ms), and per frame the
    kernel launches and graph replays the host issued and the device time of all kernels."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch_profile(activities=activities) as prof:
        for _ in range(frames):
            process(frame)
        if cuda:
            torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        device_us = getattr(e, "self_device_time_total", None)
        if device_us is None:  # older torch
            device_us = getattr(e, "self_cuda_time_total", 0.0)
        rows.append(
            {
                "name": e.key,
                "calls": round(e.count / frames, 2),
                "host_ms": round(e.self_cpu_time_total / 1e3 / frames, 4),
                "device_ms": round(device_us / 1e3 / frames, 4),
            }
        )
    calls = {r["name"]: r["calls"] for r in rows}
    launches = sum(v for k, v in calls.items() if k in ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel"))
    return {
        "frames": frames,
        "kernel_launches_per_frame": round(launches, 2),
        "graph_replays_per_frame": calls.get("cudaGraphLaunch", 0.0),
        "host_syncs_per_frame": round(
            sum(v for k, v in calls.items() if k in ("cudaStreamSynchronize", "cudaDeviceSynchronize")), 2
        ),
        "device_ms_per_frame": round(sum(r["device_ms"] for r in rows), 4),
        "top_by_host_ms": sorted(rows, key=lambda r: -r["host_ms"])[:top],
        "top_by_device_ms": sorted(rows, key=lambda r: -r["device_ms"])[:top] if cuda else [],
    }


def _rate(rt, persons: int, images: np.ndarray, index: np.ndarray) -> float:
    """Person-frames per second of the encoder on these crops."""
    device = rt.backend.device
    for _ in range(2):
        rt.backend.encode(images, index)
    _sync(device)
    reps = max(3, min(20, 96 // max(persons, 1)))
    t = time.perf_counter()
    for _ in range(reps):
        rt.backend.encode(images, index)
    _sync(device)
    return round(persons * reps / (time.perf_counter() - t), 2)


def _throughput(rt, batches, shared: bool = False) -> dict[str, float]:
    """Encoder person-frames/s at several batch sizes, each person with its own crops (no sharing), or with
    `shared` as one frame of that many persons runs it: the sample frame's crops (`crops.sample_crops`), one
    context crop for all."""
    out = {}
    for batch in batches:
        if shared:
            frame = sample_crops(batch, rt.levels, rt.image_size)
            images, index = frame.images, frame.index
        else:
            shape = (batch, len(rt.levels), rt.image_size, rt.image_size, 3)
            images, index = dense_index(np.random.default_rng(batch).integers(0, 256, shape, np.uint8))
        out[str(batch)] = _rate(rt, batch, images, index)
    return out


def _sharing(rt, rgb: np.ndarray, people) -> dict:
    """The frame's crops encoded with the context crop shared (once per frame) and without (once per person)."""
    shared = crop_batch(rgb, people, rt.levels, rt.image_size)
    unshared = dense_index(shared.dense())
    return {
        "crops_shared": len(shared.images),
        "crops_unshared": len(unshared[0]),
        "person_frames_per_s_shared": _rate(rt, len(people), shared.images, shared.index),
        "person_frames_per_s_unshared": _rate(rt, len(people), *unshared),
    }


def _threads(backend) -> dict:
    """The thread settings the encoder ran with (onnxruntime: 0 = one per core), and the host crops'."""
    out = {"torch_intra_op": torch.get_num_threads(), "host_crops": crop_workers()}
    session = getattr(backend, "session", None)
    if session is not None:
        out["onnxruntime_intra_op"] = session.get_session_options().intra_op_num_threads
    if backend.name == "openvino":
        out["openvino_threads"] = int(backend.compiled.get_property("INFERENCE_NUM_THREADS"))
    return out


def versions() -> dict:
    import onnxruntime
    import open_clip

    out = {
        "ros_fer": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "onnxruntime": onnxruntime.__version__,
        "opencv": cv2.__version__,
    }
    from .measured import openvino_version

    if openvino := openvino_version():
        out["openvino"] = openvino
    try:
        import tensorrt

        out["tensorrt"] = tensorrt.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        out["cuda"] = torch.version.cuda
    return out


STAGES = ("decode", "detect", "crops", "encode", "head", "track")


def table(reports: list[dict]) -> list[str]:
    """README rows (medians, ms) for every result of `ros-fer bench` reports: each row names its backbone,
    persons, backend, precision, device and detector; the throughput columns are the batches measured."""
    results = [r for report in reports for r in report["results"]]
    batches = sorted({int(b) for r in results for b in r["encoder_person_frames_per_s"]})
    columns = [
        "backbone, persons",
        "backend, precision, device",
        "detector",
        "cuda_graphs",
        *STAGES,
        "whole frame (p95)",
        "raw bgr8 frame (p95)",
        "first frame",
        "streamed",
        "floor",
        "frame / floor",
        f"person-frames/s (batch {' / '.join(map(str, batches))}; frames: one context crop a frame)",
    ]
    rows = [f"| {' | '.join(columns)} |", "|" + "---|" * len(columns)]
    for r in results:
        st, rate = r["stages_ms"], r["encoder_person_frames_per_s"]
        backbone = r["model"].split(" on ")[-1].split(" (")[0]
        cells = [
            f"{backbone}, {r['persons']}",
            ("auto: " if r.get("asked", {}).get("backend") == "auto" else "")
            + f"{r['backend']} {r['precision']}, {r['device']}",
            r["detector"],
            "on" if r.get("cuda_graphs") else "off",
            *(f"{st[k]['median']:.2f}" for k in STAGES),
            f"{st['frame']['median']:.2f} ({st['frame']['p95']:.2f})",
            f"{r['raw_frame_ms']['median']:.2f} ({r['raw_frame_ms']['p95']:.2f})" if "raw_frame_ms" in r else "-",
            f"{r['first_frame_ms']:.2f}" if "first_frame_ms" in r else "-",
            f"{r['streamed_ms_per_frame']:.2f}",
            f"{r['model_only_ms']['median']:.2f}",
            f"{r['frame_over_model_only']:.2f}",
            " / ".join(str(rate.get(str(b), "-")) for b in batches) + _shared_cell(r, batches),
        ]
        rows.append(f"| {' | '.join(cells)} |")
    return rows


def _shared_cell(result: dict, batches: list[int]) -> str:
    """The throughput with one context crop a frame, where the report measured it: ' (frames: a / b)'."""
    shared = result.get("encoder_person_frames_per_s_shared_context")
    return f" (frames: {' / '.join(str(shared.get(str(b), '-')) for b in batches)})" if shared else ""


def main_table(paths: list[str]) -> int:
    """`python -m ros_fer.bench table REPORT.json ...`: the README's performance rows, machine first."""
    reports = [json.loads(Path(p).read_text()) for p in paths]
    for m in {json.dumps(r["machine"], sort_keys=True) for r in reports}:
        print(f"<!-- machine: {m} -->")
    print("\n".join(table(reports)))
    return 0


def _is_default(result: dict) -> bool:
    """A run of the default settings: backend auto and detector_runtime auto."""
    return result["asked"]["backend"] == "auto" and result["asked"].get("detector_runtime", "auto") == "auto"


def bench_runs(backend: str, precision: str, detector_runtimes, device: str, isa) -> list[tuple[str, str, str]]:
    """(backend, precision, detector_runtime) of each run. `all` on either axis: the default (auto) beside every
    candidate its probe weighs here, one axis varied at a time while the other stays auto."""
    from .detection.yolo import runtime_candidates as detector_candidates
    from .runtime import runtime_candidates

    encoders = [(backend, precision)]
    if backend == "all":
        encoders = [("auto", precision), *runtime_candidates(device, isa, precision)]
        if device == "cpu" and precision in ("auto", "fp32"):
            encoders.append(("onnxruntime", "fp32"))
    detectors = list(dict.fromkeys(detector_runtimes))
    if "all" in detectors:
        detectors = ["auto", *detector_candidates()]
    runs = [(b, p, detectors[0]) for b, p in encoders]
    runs += [(encoders[0][0], encoders[0][1], d) for d in detectors[1:]]
    return runs


def _config(result: dict) -> tuple:
    """What a row asked for: the same configuration in every pass of `--repeat`."""
    asked = result["asked"]
    return (result["persons"], result["detector"], asked["backend"], asked["precision"], asked.get("detector_runtime"))


def _across_passes(results: list[dict]) -> list[dict]:
    """One entry per configuration (first seen first): its rows' whole-frame and encode medians, and their
    median across the passes of `--repeat` (a single pass: its own figures)."""
    rows: dict[tuple, dict] = {}
    for r in results:
        row = rows.setdefault(_config(r), {"result": r, "frame": [], "encode": []})
        row["frame"].append(r["stages_ms"]["frame"]["median"])
        row["encode"].append(r["stages_ms"]["encode"]["median"])
    return [
        {**row, "frame_ms": float(np.median(row["frame"])), "encode_ms": float(np.median(row["encode"]))}
        for row in rows.values()
    ]


def compare(results: list[dict]) -> dict:
    """Side by side, per person count: each configuration's encoder speed-up over torch fp32, and the default
    (`backend: auto`) against the fastest explicit option measured in the same run (whole frame). With
    `--repeat`, each configuration's figure is the median over the passes (rows in alternating order)."""
    out: dict = {"encoder_speedup_over_torch_fp32": {}, "default_vs_fastest_explicit": {}}
    configs = _across_passes(results)
    for persons in sorted({r["persons"] for r in results}):
        runs = [c for c in configs if c["result"]["persons"] == persons]
        default = next((c for c in runs if _is_default(c["result"])), None)
        explicit = [c for c in runs if not _is_default(c["result"])]
        base = next(
            (c for c in explicit if (c["result"]["backend"], c["result"]["precision"]) == ("torch", "fp32")), None
        )
        for c in runs:
            r = c["result"]
            same_detector = base is not None and r["asked"].get("detector_runtime") == base["result"]["asked"].get(
                "detector_runtime"
            )
            if same_detector and c is not base:
                name = f"{r['asked']['backend']}:{r['backend']}-{r['precision']}-{persons}p"
                out["encoder_speedup_over_torch_fp32"][name] = round(base["encode_ms"] / c["encode_ms"], 3)
        if default is not None and explicit:
            best = min(explicit, key=lambda c: c["frame_ms"])
            d, b = default["result"], best["result"]
            out["default_vs_fastest_explicit"][f"{persons}p"] = {
                "default": f"{d['backend']} {d['precision']}, YOLO {d.get('detector_runtime')}",
                "default_ms": round(default["frame_ms"], 3),
                "fastest_explicit": f"{b['backend']} {b['precision']}, YOLO {b.get('detector_runtime')}",
                "fastest_ms": round(best["frame_ms"], 3),
                "ratio": round(default["frame_ms"] / best["frame_ms"], 3),
                "passes": len(default["frame"]),
                "default_ms_per_pass": default["frame"],
                "fastest_ms_per_pass": best["frame"],
            }
    return out


def main_bench(args) -> int:
    from .machine import cpu_info
    from .runtime import resolve_device

    if args.repeat < 1:
        raise ConfigError(f"--repeat {args.repeat}: give the number of passes, 1 or more")
    graphs = {"cuda_graphs": args.cuda_graphs} if args.cuda_graphs else {}
    # --backend all / --detector-runtime all: the default beside every candidate its probe weighs here
    runs = bench_runs(
        args.backend, args.precision, args.detector_runtime, resolve_device(args.device), cpu_info()["isa"]
    )
    overrides = {"backbone": args.backbone, "pretrained": args.pretrained or "", "device": args.device}
    if args.model:
        overrides["model"] = args.model
    if args.person_weights:
        overrides["person_weights"] = args.person_weights
    results: list[dict] = []
    rejected: list[dict] = []  # rows whose configuration refused to start here (an int8 parity floor, ...)
    here = machine()  # once: on a GPU it asks nvidia-smi, and the report is written after every row

    def report() -> dict:
        return {"machine": here, "results": results, **compare(results), "rejected": rejected}

    several = len(runs) > 1
    # --repeat: every row again, odd passes in reverse order, so that neither a row's place in the run nor a
    # slow spell of a shared machine falls on one configuration; compare() takes the median over passes
    for rep in range(args.repeat):
        for persons in args.persons:
            for detector in args.detectors:
                for backend, precision, detector_runtime in runs if rep % 2 == 0 else runs[::-1]:
                    params = load_params(
                        args.config,
                        {
                            **overrides,
                            "backend": backend,
                            "precision": precision,
                            "detector": detector,
                            "detector_runtime": detector_runtime,
                            "detector_imgsz": args.detector_imgsz,
                            "max_persons": max(persons, 1),
                            **graphs,
                        },
                    )
                    # cyclic garbage the rows before left (~8,800 objects a pipeline build; the pipelines themselves
                    # go by reference count) collected now, not by the collector in the middle of a timed row
                    gc.collect()
                    try:
                        row = run_bench(
                            params, args.frames, args.warmup, persons, tuple(args.batches), args.boxes, args.profile
                        )
                    except ConfigError as exc:
                        if not several:  # the one configuration asked for: its error, as the node would say it
                            raise
                        # a candidate refused here (below its accuracy floor, a package missing), as the probe
                        # refuses it: said, recorded, and the other rows still run
                        print(f"ros-fer bench: {backend} {precision}, YOLO {detector_runtime}: {exc}", file=sys.stderr)
                        asked = {"backend": backend, "precision": precision, "detector_runtime": detector_runtime}
                        reason = {"persons": persons, "detector": detector, "asked": asked, "reason": str(exc)}
                        rejected.append(reason | {"pass": rep})
                        continue
                    results.append(row | {"pass": rep})
                    if args.json:  # after every row: a run that stops later keeps the rows it finished
                        write_whole(Path(args.json), json.dumps(report(), indent=2))
    text = json.dumps(report(), indent=2)
    if args.json:
        write_whole(Path(args.json), text)
    print(text)
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] != "table":
        sys.exit("usage: python -m ros_fer.bench table REPORT.json [REPORT.json ...]")
    sys.exit(main_table(sys.argv[2:]))
