"""PyTorch eager backend: CPU or CUDA; on CUDA fp16, pinned host memory and optional CUDA graphs."""

from __future__ import annotations

import copy

import numpy as np
import torch

from ..errors import ConfigError
from ..models.base import FerModel
from .base import check_precision, empty_outputs
from .image_side import ImageSide


class TorchBackend:
    name = "torch"

    def __init__(self, model: FerModel, device: str = "cpu", precision: str = "fp32", cuda_graphs: bool = False):
        self.device = str(device)
        self.precision = check_precision(precision)
        if self.precision == "int8":
            raise ConfigError(
                "int8 is an onnxruntime precision (dynamically quantised ONNX); use fp32 or fp16 with torch"
            )
        self.cuda = self.device.startswith("cuda")
        if self.cuda and not torch.cuda.is_available():
            raise ConfigError(f"device {self.device!r} asked for, but torch sees no CUDA device")
        if cuda_graphs and not self.cuda:
            raise ConfigError("CUDA graphs need a CUDA device")
        if self.precision == "fp16":  # on a copy: the caller's model stays fp32
            model = copy.deepcopy(model).half()
        self.side = ImageSide(model).eval().to(self.device)
        if self.precision == "fp16":
            self.side.half()
        self.output_names = self.side.output_names
        self.cuda_graphs = cuda_graphs
        self._graphs: dict[tuple[int, ...], tuple[torch.cuda.CUDAGraph, torch.Tensor, tuple[torch.Tensor, ...]]] = {}
        self._pinned: dict[tuple[int, ...], torch.Tensor] = {}

    def _upload(self, crops: np.ndarray) -> torch.Tensor:
        host = torch.from_numpy(np.ascontiguousarray(crops))
        if not self.cuda:
            return host
        pinned = self._pinned.get(host.shape)
        if pinned is None:
            pinned = self._pinned[host.shape] = torch.empty(host.shape, dtype=torch.uint8, pin_memory=True)
        pinned.copy_(host)
        return pinned.to(self.device, non_blocking=True)

    def _graph(self, shape: tuple[int, ...]):
        """Capture the forward once per input shape (batch size), then replay it."""
        if shape not in self._graphs:
            static_in = torch.zeros(shape, dtype=torch.uint8, device=self.device)
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream), torch.inference_mode():
                for _ in range(3):  # warm-up outside the graph (cuBLAS handles, autotuning)
                    self.side(static_in)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.inference_mode():
                static_out = self.side(static_in)
            self._graphs[shape] = (graph, static_in, static_out)
        return self._graphs[shape]

    @torch.inference_mode()
    def encode(self, crops: np.ndarray) -> dict[str, torch.Tensor]:
        if len(crops) == 0:
            return empty_outputs(self, crops)
        x = self._upload(crops)
        if self.cuda_graphs:
            graph, static_in, static_out = self._graph(tuple(x.shape))
            static_in.copy_(x)
            graph.replay()
            outs = tuple(o.clone() for o in static_out)
        else:
            outs = self.side(x)
        return {n: o.float() for n, o in zip(self.output_names, outs, strict=True)}
