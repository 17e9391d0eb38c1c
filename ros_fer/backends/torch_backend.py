"""PyTorch backend: CPU or CUDA; on CUDA fp16, page-locked uploads and CUDA graphs per person bucket
(`graphs.py`), and the encoder, head and softmax in one call (`scorer`)."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..head import Head
from ..models.base import FerModel
from .base import check_precision, crops_and_index, empty_outputs
from .graphs import PinnedRing, ShapeGraphs, pad_batch
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
        # fp16 / bf16: the weights themselves in that type, on a copy (the caller's model stays fp32). Never
        # CPU autocast: it measured 10x slower than fp32 (README, CPU speed); bf16 weights 2.7-3.6x faster
        # where the CPU has native bf16 (AMX, AVX512-BF16).
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)
        if dtype is not None:
            model = copy.deepcopy(model).to(dtype)
        self.side = ImageSide(model).eval().to(self.device)
        if dtype is not None:
            self.side.to(dtype)
        self.output_names = self.side.output_names
        self.cuda_graphs = cuda_graphs
        self.static = cuda_graphs  # buckets and fixed buffers; the CPU tests turn it on without graphs
        self._encoder = ShapeGraphs(self.side, capture=cuda_graphs)
        self._pinned = PinnedRing(self.device) if self.cuda else None

    def upload(self, array: np.ndarray | torch.Tensor) -> torch.Tensor:
        """`array` on this backend's device: host arrays cross once, through page-locked buffers kept per dtype
        and shape (crops, indices, whole frames); tensors already on the device stay where they are."""
        if isinstance(array, torch.Tensor):
            return array.to(self.device, non_blocking=True)
        if not self.cuda:
            return torch.from_numpy(np.ascontiguousarray(array))
        return self._pinned.upload(array)

    def _run(self, runner: ShapeGraphs, crops, index) -> tuple[torch.Tensor, ...]:
        """Static (CUDA graphs): the persons padded to their bucket run on the runner's fixed buffers (a few
        shapes, each captured once), then the real persons' rows are kept. Else the module runs as it is."""
        x, i = self.upload(crops), self.upload(index)
        if self.static:
            x, i, persons = pad_batch(x, i)
            return tuple(o[:persons] for o in runner(x, i))
        return runner.fn(x, i)

    @torch.inference_mode()
    def encode(self, crops: np.ndarray | torch.Tensor, index: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        """Host crops (numpy) or device crops (a uint8 tensor, e.g. `crops.crop_batch_tensor`)."""
        crops, index = crops_and_index(crops, index)
        if len(index) == 0:
            return empty_outputs(self, crops, index)
        outs = self._run(self._encoder, crops, index)
        return {n: o.float() for n, o in zip(self.output_names, outs, strict=True)}

    def scorer(self, head: Head, text: dict[str, torch.Tensor]) -> Scorer:
        """Encoder, head and softmax as one call (one graph per person bucket with `cuda_graphs`): crops and
        indices in, probabilities [P, C] on the device out; nothing else crosses to the host."""
        return Scorer(self, head, text)


class ScoreSide(nn.Module):
    """The image side, the head against the fixed text features, and the softmax: probabilities [B, C]."""

    def __init__(self, side: ImageSide, head: Head, text: dict[str, torch.Tensor]):
        super().__init__()
        self.side, self.head, self.text = side, head, text

    def forward(self, crops: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor]:
        feats = {n: o.float() for n, o in zip(self.side.output_names, self.side(crops, index), strict=True)}
        return (self.head(feats, self.text).float().softmax(dim=-1),)


class Scorer:
    """`TorchBackend.scorer`: probabilities of a frame's crops, the text features bound once."""

    def __init__(self, backend: TorchBackend, head: Head, text: dict[str, torch.Tensor]):
        self.backend, self.classes = backend, len(text[head.zero_shot().text_keys[0]])
        text = {k: v.to(backend.device).float() for k, v in text.items()}
        self.module = ScoreSide(backend.side, head, text)
        self.runner = ShapeGraphs(self.module, capture=backend.cuda_graphs)

    @torch.inference_mode()
    def __call__(self, crops: np.ndarray | torch.Tensor, index: np.ndarray) -> torch.Tensor:
        crops, index = crops_and_index(crops, index)
        if len(index) == 0:
            return torch.zeros((0, self.classes), device=self.backend.device)
        return self.backend._run(self.runner, crops, index)[0]
