"""PyTorch eager backend: CPU or CUDA; on CUDA fp16, pinned host memory and optional CUDA graphs."""

from __future__ import annotations

import copy

import numpy as np
import torch

from ..errors import ConfigError
from ..models.base import FerModel
from .base import check_precision, crops_and_index, empty_outputs
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
        self._graphs: dict[tuple, tuple] = {}
        self._pinned: dict[tuple, torch.Tensor] = {}

    def upload(self, array: np.ndarray | torch.Tensor) -> torch.Tensor:
        """`array` on this backend's device: host arrays cross once, through a pinned buffer kept per dtype and
        shape (crops, indices, whole frames); tensors already on the device stay where they are."""
        if isinstance(array, torch.Tensor):
            return array.to(self.device, non_blocking=True)
        host = torch.from_numpy(np.ascontiguousarray(array))
        if not self.cuda:
            return host
        key = (host.dtype, tuple(host.shape))
        pinned = self._pinned.get(key)
        if pinned is None:
            pinned = self._pinned[key] = torch.empty(host.shape, dtype=host.dtype, pin_memory=True)
        pinned.copy_(host)
        return pinned.to(self.device, non_blocking=True)

    def _graph(self, crops_shape: tuple[int, ...], index_shape: tuple[int, ...]):
        """Capture the forward once per input shape (crops and persons), then replay it."""
        key = (crops_shape, index_shape)
        if key not in self._graphs:
            static_crops = torch.zeros(crops_shape, dtype=torch.uint8, device=self.device)
            static_index = torch.zeros(index_shape, dtype=torch.int64, device=self.device)
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream), torch.inference_mode():
                for _ in range(3):  # warm-up outside the graph (cuBLAS handles, autotuning)
                    self.side(static_crops, static_index)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.inference_mode():
                static_out = self.side(static_crops, static_index)
            self._graphs[key] = (graph, (static_crops, static_index), static_out)
        return self._graphs[key]

    @torch.inference_mode()
    def encode(self, crops: np.ndarray | torch.Tensor, index: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        """Host crops (numpy) or device crops (a uint8 tensor, e.g. `crops.crop_batch_tensor`)."""
        crops, index = crops_and_index(crops, index)
        if len(index) == 0:
            return empty_outputs(self, crops, index)
        x, i = self.upload(crops), self.upload(index)
        if self.cuda_graphs:
            graph, (static_crops, static_index), static_out = self._graph(tuple(x.shape), tuple(i.shape))
            static_crops.copy_(x)
            static_index.copy_(i)
            graph.replay()
            outs = tuple(o.clone() for o in static_out)
        else:
            outs = self.side(x, i)
        return {n: o.float() for n, o in zip(self.output_names, outs, strict=True)}
