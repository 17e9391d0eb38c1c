"""ONNX export of the whole image side (dynamic batch axis) and the ONNX Runtime backend."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, FerError
from ..models.base import FerModel
from .base import check_precision
from .image_side import ImageSide

INPUT = "crops"
META_KEY = "ros_fer"


def export_onnx(model: FerModel, path: str | os.PathLike[str], precision: str = "fp32", opset: int = 18) -> Path:
    """Write the image side to ONNX. The example batch is 2: with 1 the exporter would freeze the axis."""
    import onnx

    check_precision(precision)
    side = ImageSide(copy.deepcopy(model)).eval()  # a copy: halving must not touch the caller's model
    if precision == "fp16":
        side.half()
    batch = torch.export.Dim("batch", min=1, max=4096)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.onnx.export(
        side,
        (side.example(2),),
        str(tmp),
        input_names=[INPUT],
        output_names=list(side.output_names),
        dynamic_shapes=({0: batch},),
        opset_version=opset,
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    graph = onnx.load(str(tmp))
    meta = {
        "identity": model.identity(),
        "head": model.head().to_dict(),
        "outputs": list(side.output_names),
        "levels": list(model.levels),
        "image_size": model.backbone.image_size,
        "precision": precision,
    }
    del graph.metadata_props[:]
    entry = graph.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)
    onnx.save(graph, str(tmp))
    os.replace(tmp, path)
    return path


def read_onnx_meta(path: str | os.PathLike[str]) -> dict:
    import onnx

    graph = onnx.load(str(path), load_external_data=False)
    for entry in graph.metadata_props:
        if entry.key == META_KEY:
            return json.loads(entry.value)
    raise FerError(f"{path} was not exported by ros_fer (no {META_KEY!r} metadata)")


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike[str], device: str = "cpu", threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"ONNX file {self.path} does not exist; export it with `ros-fer export --format onnx`")
        self.meta = read_onnx_meta(self.path)
        self.precision = self.meta["precision"]
        self.output_names = tuple(self.meta["outputs"])
        options = ort.SessionOptions()
        # fp16 graphs crashed onnxruntime 1.31 at session creation under ORT_ENABLE_ALL; EXTENDED is safe.
        options.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
            if self.precision == "fp16"
            else ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        )
        if threads:
            options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        self.device = "cpu"
        if str(device).startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ConfigError("device cuda asked for, but this onnxruntime has no CUDAExecutionProvider")
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(self.path), options, providers=providers)

    def encode(self, crops: np.ndarray) -> dict[str, torch.Tensor]:
        outs = self.session.run(list(self.output_names), {INPUT: np.ascontiguousarray(crops, dtype=np.uint8)})
        return {n: torch.from_numpy(o).float() for n, o in zip(self.output_names, outs, strict=True)}
