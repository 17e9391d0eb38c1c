"""Image-side backends behind one interface (`Backend.encode(uint8 crops) -> features`)."""

from __future__ import annotations

from .base import PRECISIONS, Backend
from .image_side import ImageSide
from .onnx import (
    GRAPH_FORM,
    INT8_MIN_COSINE,
    Int8ParityError,
    OnnxRuntimeBackend,
    current_graph,
    export_onnx,
    parity_path,
    read_onnx_meta,
)
from .openvino import OpenVinoBackend
from .tensorrt import TensorRTBackend
from .torch_backend import TorchBackend

BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")

__all__ = [
    "BACKENDS",
    "GRAPH_FORM",
    "INT8_MIN_COSINE",
    "Int8ParityError",
    "PRECISIONS",
    "Backend",
    "ImageSide",
    "OnnxRuntimeBackend",
    "OpenVinoBackend",
    "TensorRTBackend",
    "TorchBackend",
    "current_graph",
    "export_onnx",
    "parity_path",
    "read_onnx_meta",
]
