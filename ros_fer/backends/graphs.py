"""Static-shape replay for the GPU frame: a function run on fixed input buffers, one set per input shape,
captured once as a CUDA graph and replayed (a ViT-L-14 forward at one person: ~18 ms of kernel launches
eager, ~2 ms replayed on an H100). Persons are padded up to a few bucket sizes so a frame with 1..8 people
needs at most four graphs. Off CUDA the same buffers and padding run eagerly, so the CPU tests exercise
everything but the capture itself."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch

BUCKETS = (1, 2, 4, 8)  # persons per graph; beyond the last, multiples of it


def bucket(persons: int) -> int:
    """The graph size `persons` people run in: the next of BUCKETS, beyond it the next multiple of its last."""
    for size in BUCKETS:
        if persons <= size:
            return size
    step = BUCKETS[-1]
    return -(-persons // step) * step


def crops_for(persons: int, levels: int, crops: int) -> int:
    """How many crops a bucket of `persons` holds: each person's own crops and one shared crop (P(L-1)+1,
    a frame's shared context) when the frame's crops fit that, else L per person (nothing shared)."""
    shared = persons * (levels - 1) + 1
    return shared if crops <= shared else persons * levels


def pad_batch(crops: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(crops, index) with the persons padded up to their bucket and the crops to the bucket's count:
    extra persons point at crop 0, extra crops are black. Returns the padded pair and the real person count;
    every model here encodes each crop and each person on its own, so the real rows are unchanged."""
    persons, levels = index.shape
    size = bucket(persons)
    n = crops_for(size, levels, len(crops))
    if size == persons and n == len(crops):
        return crops, index, persons
    padded_crops = crops.new_zeros((n, *crops.shape[1:]))
    padded_crops[: len(crops)] = crops
    padded_index = index.new_zeros((size, levels))
    padded_index[:persons] = index
    return padded_crops, padded_index, persons


class ShapeGraphs:
    """`fn(*inputs) -> tuple of tensors`, run on static input buffers kept per input shape and dtype. With
    `capture` (CUDA), each shape's call is captured once as a CUDA graph (after a few warm-up calls on a side
    stream: cuBLAS handles, autotuning) and replayed; all graphs share one memory pool, as they never run at
    once. Without it, the same buffers run eagerly. Outputs are cloned: the next call overwrites the buffers."""

    def __init__(self, fn: Callable[..., tuple[torch.Tensor, ...]], capture: bool, warmup: int = 3):
        self.fn, self.capture, self.warmup = fn, capture, warmup
        self.entries: dict[tuple, tuple] = {}
        self._pool = None
        self.failed: list[tuple] = []  # input shapes whose capture failed (they run eagerly)

    def _make(self, inputs: tuple[torch.Tensor, ...]) -> tuple:
        static = tuple(torch.zeros_like(x) for x in inputs)
        for s, x in zip(static, inputs, strict=True):
            s.copy_(x)  # warm-up and capture on real values (a graph of zeros could take another code path)
        # Only CUDA tensors are captured: a graph of host tensors would replay stale output.
        if not (self.capture and all(x.is_cuda for x in inputs)):
            return static, None, None
        device = inputs[0].device  # the tensors' device, not the current one (cuda:N)
        try:
            with torch.cuda.device(device):
                side = torch.cuda.Stream(device=device)
                side.wait_stream(torch.cuda.current_stream(device))
                with torch.cuda.stream(side), torch.inference_mode():
                    for _ in range(self.warmup):
                        self.fn(*static)
                torch.cuda.current_stream(device).wait_stream(side)
                if self._pool is None:
                    self._pool = torch.cuda.graph_pool_handle()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=self._pool), torch.inference_mode():
                    outputs = self.fn(*static)
        except RuntimeError as exc:  # an op or driver that refuses capture: eager for this shape, said once
            if not self.failed:
                warnings.warn(f"CUDA graph capture failed ({str(exc).splitlines()[0]}); running eagerly", stacklevel=2)
            self.failed.append(tuple(x.shape for x in inputs))
            return static, None, None
        return static, graph, outputs

    @staticmethod
    def key(inputs: tuple[torch.Tensor, ...]) -> tuple:
        """What one entry (buffers, and on CUDA one graph) serves: the inputs' shapes and dtypes."""
        return tuple((tuple(x.shape), x.dtype) for x in inputs)

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        key = self.key(inputs)
        entry = self.entries.get(key)
        if entry is None:
            entry = self.entries[key] = self._make(inputs)
        static, graph, outputs = entry
        for s, x in zip(static, inputs, strict=True):
            s.copy_(x)
        if graph is None:
            with torch.inference_mode():
                return tuple(o.clone() for o in self.fn(*static))
        graph.replay()
        return tuple(o.clone() for o in outputs)


class PinnedRing:
    """Host arrays to the device through page-locked buffers, two per shape and dtype used in turn: a copy
    may still be in flight from one (non_blocking, on any stream) while the next frame fills the other.
    Each buffer waits for its last copy's event before it is written again."""

    def __init__(self, device: str, slots: int = 2):
        self.device, self.slots = device, slots
        self._rings: dict[tuple, list] = {}
        self._turn: dict[tuple, int] = {}

    def upload(self, array: np.ndarray) -> torch.Tensor:
        host = torch.from_numpy(np.ascontiguousarray(array))
        key = (host.dtype, tuple(host.shape))
        ring = self._rings.setdefault(key, [])
        turn = self._turn.get(key, 0)
        self._turn[key] = (turn + 1) % self.slots
        if len(ring) <= turn:
            ring.append([torch.empty(host.shape, dtype=host.dtype, pin_memory=True), None])
        slot = ring[turn]
        if slot[1] is not None:
            slot[1].synchronize()  # its previous copy has left
        slot[0].copy_(host)
        out = slot[0].to(self.device, non_blocking=True)
        slot[1] = torch.cuda.Event()
        slot[1].record()
        return out
