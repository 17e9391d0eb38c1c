"""ONNX export of the whole image side (dynamic batch axis) and the ONNX Runtime backend."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import torch

from ..backbone import quiet_root_warnings
from ..errors import ConfigError, FerError
from ..models.base import FerModel
from .base import check_precision
from .image_side import ImageSide

INPUT = "crops"
META_KEY = "ros_fer"


def export_onnx(model: FerModel, path: str | os.PathLike[str], precision: str = "fp32", opset: int = 18) -> Path:
    """Write the image side to ONNX. The example batch is 2: with 1 the exporter would freeze the axis."""

    check_precision(precision)
    if precision == "int8":  # weights quantised after an fp32 export; activations stay float (dynamic)
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        path = Path(path)
        fp32 = export_onnx(model, path.with_name(path.name + ".fp32.tmp"), "fp32", opset)
        graph = onnx.load(str(fp32))
        del graph.graph.value_info[:]  # the exporter's intermediate shapes confuse the quantiser's inference
        onnx.save(graph, str(fp32))
        tmp = path.with_name(path.name + ".tmp")
        with quiet_root_warnings():  # it suggests a pre-processing step on the root logger
            quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8)
        fp32.unlink()
        _set_meta(tmp, model, precision)
        os.replace(tmp, path)
        return path
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
    _set_meta(tmp, model, precision)
    os.replace(tmp, path)
    return path


def _set_meta(path: str | os.PathLike[str], model: FerModel, precision: str) -> None:
    """Record what the graph is (identity, head, outputs) inside the ONNX file itself."""
    import onnx

    graph = onnx.load(str(path))
    meta = {
        "identity": model.identity(),
        "head": model.head().to_dict(),
        "outputs": list(model.image_outputs()),
        "levels": list(model.levels),
        "image_size": model.backbone.image_size,
        "precision": precision,
    }
    del graph.metadata_props[:]
    entry = graph.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)
    onnx.save(graph, str(path))


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
