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

ROUNDS = 6  # timed calls per candidate and input, in turn with the other candidates (`balanced_orders`: every
# order of 3); the median counts
CLOSE = 0.10  # the two fastest within this of each other: a close call, timed again (`time_settled`)
SETTLE_ROUNDS = 12  # the rounds of that second timing, the two alone


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
    of a shared machine falls on all candidates alike rather than on whichever was being timed. The rounds
    take their orders from `balanced_orders`, so each key follows each other key equally often: what one
    leaves running after its call (onnxruntime's or OpenMP's threads still spinning) slows whichever comes
    next, and that is then not always the same one. Returns key -> [the median ms of each callable]."""
    for fns in calls.values():
        for fn in fns:
            fn()
    samples = {k: [[] for _ in fns] for k, fns in calls.items()}
    keys = list(calls)
    if not keys:
        return {}
    orders = balanced_orders(len(keys))
    for i in range(rounds):
        for k in (keys[x] for x in orders[i % len(orders)]):
            for j, fn in enumerate(calls[k]):
                start = time.perf_counter()
                fn()
                samples[k][j].append((time.perf_counter() - start) * 1e3)
    return {k: [float(np.median(s)) for s in per] for k, per in samples.items()}


def time_settled(calls: dict, eligible=None) -> tuple[dict, list]:
    """`time_interleaved`'s figures, with a close call settled: where the two fastest of the `eligible` keys
    (None: all; a candidate below its accuracy floor is timed, for the record, but can never be chosen)
    came within CLOSE of each other (each key's callables summed), a shared machine's noise would pick between
    them, so those two are timed again, alone, SETTLE_ROUNDS rounds, and those figures replace theirs.
    Returns (key -> [the median ms of each callable], the keys timed again: none or the two)."""
    figures = time_interleaved(calls)
    ranked = sorted((k for k in figures if eligible is None or k in eligible), key=lambda k: sum(figures[k]))
    if len(ranked) < 2 or sum(figures[ranked[1]]) > sum(figures[ranked[0]]) * (1 + CLOSE):
        return figures, []
    pair = ranked[:2]
    figures.update(time_interleaved({k: calls[k] for k in pair}, rounds=SETTLE_ROUNDS))
    return figures, pair


def said_timed_again(choice: dict) -> str:
    """The log line's words for a choice whose close call was timed again (`time_settled`), '' for one that
    was not."""
    again = " and ".join(choice.get("timed_again", []))
    return f"; {again} within {CLOSE:.0%}: timed again, {SETTLE_ROUNDS} rounds" if again else ""


def balanced_orders(n: int) -> list[list[int]]:
    """Orders of 0..n-1 in which each ordered pair (a, then b) stands next to each other equally often: the
    rows of a balanced (Williams) Latin square, n rows for an even n, 2n for an odd one (its rows reversed
    as well)."""
    first, low, high = [0], 1, n - 1
    while low <= high:
        first.append(low)
        if low != high:
            first.append(high)
        low, high = low + 1, high - 1
    rows = [[(x + r) % n for x in first[:n]] for r in range(n)]
    return rows + [row[::-1] for row in rows] if n % 2 else rows
