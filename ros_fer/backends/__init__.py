"""Image-side backends behind one interface (`Backend.encode(uint8 crops) -> features`)."""

from __future__ import annotations

from .base import PRECISIONS, Backend
from .image_side import ImageSide
from .onnx import OnnxRuntimeBackend, export_onnx, read_onnx_meta
from .tensorrt import TensorRTBackend
from .torch_backend import TorchBackend

BACKENDS = ("torch", "onnxruntime", "tensorrt")

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "Backend",
    "ImageSide",
    "OnnxRuntimeBackend",
    "TensorRTBackend",
    "TorchBackend",
    "export_onnx",
    "read_onnx_meta",
]
