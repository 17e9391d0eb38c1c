"""`ros-fer bench`: per-stage latency of the whole frame (decode, detection, crop and resize, encoding,
head, tracking), the model-only floor (detector, encoder and head back to back on the same inputs), the
glue ratio, and encoder throughput in person-frames/s at several batch sizes. Random backbone weights
by default, so it runs offline; speed does not depend on the weights."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from . import __version__
from .backends.image_side import dense_index
from .crops import associate, crop_batch
from .detection import Detections
from .machine import machine
from .params import load_params
from .pipeline import Pipeline
from .tracking import Tracker

BATCHES = (1, 3, 12, 48)
FRAME = (640, 480)


TILE = (40, 720, 820, 1180)  # y1, y2, x1, x2 in zidane.jpg: Ancelotti, a frontal face the Haar detector finds
TILE_FACE = (102, 70, 250, 218)  # his face box inside the tile (x1, y1, x2, y2)


def bench_frame(persons: int) -> tuple[np.ndarray, Detections]:
    """A 640x480 BGR frame with `persons` real people (head-and-shoulders tiles of ultralytics' zidane.jpg),
    and where they are: the known face and body boxes, for timing the encoder at a fixed person count."""
    import ultralytics

    photo = cv2.imread(str(Path(ultralytics.__file__).parent / "assets" / "zidane.jpg"))
    person = photo[TILE[0] : TILE[1], TILE[2] : TILE[3]]
    cols = int(np.ceil(np.sqrt(persons)))
    rows = int(np.ceil(persons / cols))
    cell_w, cell_h = FRAME[0] // cols, FRAME[1] // rows
    frame = np.full((FRAME[1], FRAME[0], 3), 90, np.uint8)
    scale = min(cell_w / person.shape[1], cell_h / person.shape[0])
    tile = cv2.resize(person, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    faces, bodies = [], []
    for i in range(persons):
        r, c = divmod(i, cols)
        y, x = r * cell_h + (cell_h - tile.shape[0]) // 2, c * cell_w + (cell_w - tile.shape[1]) // 2
        frame[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
        bodies.append([x, y, x + tile.shape[1], y + tile.shape[0], 1.0])
        f = np.asarray(TILE_FACE, np.float32) * scale
        faces.append([x + f[0], y + f[1], x + f[2], y + f[3], 1.0])
    known = Detections(np.asarray(faces, np.float32).reshape(-1, 5), np.asarray(bodies, np.float32).reshape(-1, 5))
    return frame, known


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


def run_bench(
    params: dict, frames: int = 50, warmup: int = 5, persons: int = 1, batches=BATCHES, boxes: str = "detected"
) -> dict:
    """Time one configuration. boxes: `detected` (the detector's own) or `known` (the frame's known people,
    while the detector still runs and is timed: for random-weight detectors that find nobody)."""
    pipeline = Pipeline.from_params(params)
    rt, device = pipeline.runtime, pipeline.runtime.backend.device
    frame, known = bench_frame(persons)
    jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])[1]
    found = len(associate(pipeline.detector.detect(np.ascontiguousarray(frame[:, :, ::-1])), *FRAME[::-1], persons))
    stages: dict[str, list[float]] = {k: [] for k in ("decode", "detect", "crops", "encode", "head", "track", "frame")}
    floor: list[float] = []
    tracker = Tracker(rt.labels.classes)
    batch = None
    for i in range(warmup + frames):
        # The whole frame, stage by stage, as the node runs it (decode included).
        t0 = time.perf_counter()
        bgr, t_dec = _timed(cv2.imdecode, jpeg, cv2.IMREAD_COLOR)
        rgb = bgr[:, :, ::-1]
        det, t_det = _timed(pipeline.detector.detect, rgb)
        people = associate(known if boxes == "known" else det, FRAME[1], FRAME[0], persons, pipeline.keypoint_score)
        t = time.perf_counter()
        batch = pipeline.crop(rgb, people)  # where the pipeline cuts them: device (upload included) or host
        _sync(device)
        t_crop = (time.perf_counter() - t) * 1e3
        t = time.perf_counter()
        feats = rt.backend.encode(batch.images, batch.index)
        _sync(device)
        t_enc = (time.perf_counter() - t) * 1e3
        t = time.perf_counter()
        probs = rt.head(feats, rt.text).softmax(-1).cpu().numpy()
        t_head = (time.perf_counter() - t) * 1e3
        _, t_track = _timed(tracker.update, np.stack([p.body for p in people]) if people else np.zeros((0, 5)), probs)
        t_frame = (time.perf_counter() - t0) * 1e3
        # The floor: detector, encoder and head back to back on the same inputs, nothing else.
        t = time.perf_counter()
        pipeline.detector.detect(rgb)
        out = rt.head(rt.backend.encode(batch.images, batch.index), rt.text)
        _sync(device)
        del out
        t_floor = (time.perf_counter() - t) * 1e3
        if i >= warmup:
            for key, value in zip(stages, (t_dec, t_det, t_crop, t_enc, t_head, t_track, t_frame), strict=True):
                stages[key].append(value)
            floor.append(t_floor)
    whole, model_only = stats(stages["frame"]), stats(floor)
    return {
        "backend": rt.backend.name,
        "precision": rt.backend.precision,
        "device": device,
        "model": rt.description,
        "levels": list(rt.levels),
        "image_size": rt.image_size,
        "detector": pipeline.detector.name,
        "boxes": boxes,
        "persons": persons,
        "persons_found": found,
        "encoder_crops_per_frame": len(batch.images),
        "crops_on": "device" if pipeline.device_crops else "host",
        "frames": frames,
        "stages_ms": {k: stats(v) for k, v in stages.items()},
        "model_only_ms": model_only,
        "frame_over_model_only": round(whole["median"] / model_only["median"], 3),
        "encoder_person_frames_per_s": _throughput(rt, batches),
        "context_sharing": _sharing(rt, rgb, people) if people else None,
        "threads": _threads(rt.backend),
        "warnings": list(pipeline.warnings),
        "machine": machine(),
        "versions": versions(),
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


def _throughput(rt, batches) -> dict[str, float]:
    """Encoder person-frames/s at several batch sizes, each person with its own crops (no sharing)."""
    out = {}
    for batch in batches:
        shape = (batch, len(rt.levels), rt.image_size, rt.image_size, 3)
        out[str(batch)] = _rate(rt, batch, *dense_index(np.random.default_rng(batch).integers(0, 256, shape, np.uint8)))
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
    """The thread settings the encoder ran with (onnxruntime: 0 = one per core)."""
    out = {"torch_intra_op": torch.get_num_threads()}
    session = getattr(backend, "session", None)
    if session is not None:
        out["onnxruntime_intra_op"] = session.get_session_options().intra_op_num_threads
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
    try:
        import tensorrt

        out["tensorrt"] = tensorrt.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        out["cuda"] = torch.version.cuda
    return out


def main_bench(args) -> int:
    from .runtime import resolve_device

    runs = [(args.backend, args.precision)]
    if args.backend == "all":
        cpu = resolve_device(args.device) == "cpu"
        ort = "fp32" if cpu and args.precision == "auto" else args.precision  # auto would pick int8 on the CPU
        runs = [("torch", args.precision), ("onnxruntime", ort)] + ([("onnxruntime", "int8")] if cpu else [])
    overrides = {"backbone": args.backbone, "pretrained": args.pretrained or "", "device": args.device}
    if args.model:
        overrides["model"] = args.model
    if args.person_weights:
        overrides["person_weights"] = args.person_weights
    results = []
    for persons in args.persons:
        for detector in args.detectors:
            for backend, precision in runs:
                params = load_params(
                    args.config,
                    {
                        **overrides,
                        "backend": backend,
                        "precision": precision,
                        "detector": detector,
                        "detector_runtime": args.detector_runtime,
                        "max_persons": max(persons, 1),
                    },
                )
                results.append(run_bench(params, args.frames, args.warmup, persons, tuple(args.batches), args.boxes))
    report: dict = {"machine": machine(), "results": results}
    torch_runs = [r for r in results if r["backend"] == "torch"]
    if torch_runs and len(results) > 1:
        base = torch_runs[0]["stages_ms"]["encode"]["median"]
        report["encoder_speedup_over_torch"] = {
            f"{r['backend']}-{r['precision']}-{r['persons']}p": round(base / r["stages_ms"]["encode"]["median"], 3)
            for r in results
            if r["backend"] != "torch" and r["persons"] == torch_runs[0]["persons"]
        }
    text = json.dumps(report, indent=2)
    if args.json:
        Path(args.json).write_text(text)
    print(text)
    return 0
