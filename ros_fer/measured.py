"""Choices made by measuring, once per machine: which runtime and precision run the image side
(`runtime.choose_runtime`) and which runtime runs YOLO (`detection.yolo`). One rule for both: time the
candidates here, keep the fastest that is accurate enough, and cache the choice under a key of everything
it depends on (CPU model, ISA flags, thread count, package versions, the model), so a later start on the same
machine costs nothing and any change measures again."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable

import numpy as np

from .paths import cache_dir, replace

ROUNDS = 5  # timed calls per candidate and input, in turn with the other candidates; the median counts


def machine_key() -> dict:
    """What any measured choice depends on besides its model: the CPU, its flags, threads and versions."""
    import onnxruntime
    import torch

    from . import __version__
    from .machine import cpu_info

    cpu = cpu_info()
    versions = {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "ros_fer": __version__}
    versions["openvino"] = openvino_version()
    versions["nncf"] = package_version("nncf")
    return {
        "cpu": cpu["model"],
        "isa": cpu["isa"],
        "threads": torch.get_num_threads(),
        "versions": versions,
    }


def openvino_version() -> str | None:
    """OpenVINO's version from its package metadata (importing it costs ~0.2 s), None where not installed."""
    return package_version("openvino")


def package_version(name: str) -> str | None:
    """An installed package's version from its metadata (nothing imported), None where not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def key(what: dict) -> str:
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cache_path(kind: str, what: dict):
    """Where the choice of `kind` (runtime, detector) for `what` on this machine is kept."""
    return cache_dir() / "choices" / kind / f"{key({**machine_key(), **what})}.json"


def cached_choice(kind: str, what: dict, measure: Callable[[], dict]) -> dict:
    """The cached choice for `what` on this machine, else `measure()`'s, written to the cache first.
    The returned dict says `cached` (its file) when it came from the cache."""
    path = cache_path(kind, what)
    if path.is_file():
        return {**json.loads(path.read_text()), "cached": str(path)}
    choice = measure()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(choice, indent=2, default=str))
    replace(tmp, path)
    return choice


def time_interleaved(calls: dict, rounds: int = ROUNDS) -> dict:
    """calls: key -> [one callable per frame]. Each runs once untimed (some runtimes finish setting up only on
    their second call), then `rounds` times in turn with every other key's, round-robin, so that a slow spell
    of a shared machine falls on all candidates alike rather than on whichever was being timed. Returns
    key -> [the median ms of each callable]."""
    for fns in calls.values():
        for fn in fns:
            fn()
    samples = {k: [[] for _ in fns] for k, fns in calls.items()}
    for _ in range(rounds):
        for k, fns in calls.items():
            for j, fn in enumerate(fns):
                start = time.perf_counter()
                fn()
                samples[k][j].append((time.perf_counter() - start) * 1e3)
    return {k: [float(np.median(s)) for s in per] for k, per in samples.items()}
