"""OpenVINO backend: the image side's fp32 ONNX graph (the one `export_onnx` writes) compiled by OpenVINO
for the CPU, in fp32 or with bf16 inference precision where the CPU computes bf16 natively (AMX,
AVX512-BF16). The compiled model is cached by OpenVINO itself beside ros_fer's other caches, so a later start
skips the compilation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from ..machine import native_bf16
from ..paths import cache_dir
from .base import crops_and_index, empty_outputs
from .image_side import INDEX
from .onnx import INPUT, read_onnx_meta

PRECISIONS = {"fp32": "f32", "bf16": "bf16"}  # ros_fer's name -> OpenVINO's INFERENCE_PRECISION_HINT


def import_openvino():
    try:
        import openvino
    except ImportError as exc:
        raise ConfigError(
            "backend 'openvino' needs the openvino package (pip install openvino; scripts/setup.sh installs it)"
        ) from exc
    return openvino


class OpenVinoBackend:
    name = "openvino"

    def __init__(
        self,
        path: str | os.PathLike[str],
        precision: str = "fp32",
        device: str = "cpu",
        threads: int | None = None,
        compiled_cache: str | os.PathLike[str] | None = None,
    ):
        ov = import_openvino()
        if str(device) != "cpu":
            raise ConfigError(f"backend 'openvino' runs on the CPU (device cpu), not {device!r}")
        if precision not in PRECISIONS:
            raise ConfigError(f"backend 'openvino' runs precision fp32 or bf16, not {precision!r}")
        if precision == "bf16" and not native_bf16():
            raise ConfigError(
                "backend 'openvino' with precision bf16 needs a CPU with native bf16 (amx_bf16 or avx512_bf16), "
                "which this one lacks: use precision fp32"
            )
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"ONNX file {self.path} does not exist; export it with `ros-fer export --format onnx`")
        self.meta = read_onnx_meta(self.path)
        if self.meta["precision"] != "fp32":
            raise ConfigError(
                f"backend 'openvino' compiles the fp32 ONNX graph (it lowers precision itself); {self.path} is "
                f"{self.meta['precision']}"
            )
        self.device, self.precision = "cpu", precision
        self.output_names = tuple(self.meta["outputs"])
        core = ov.Core()
        config = {
            "PERFORMANCE_HINT": "LATENCY",  # one request at a time, every thread on it
            "INFERENCE_PRECISION_HINT": PRECISIONS[precision],
            "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads()),
            "CACHE_DIR": str(compiled_cache or cache_dir() / "openvino"),
        }
        try:
            self.compiled = core.compile_model(str(self.path), "CPU", config)
        except RuntimeError as exc:  # OpenVINO says what it cannot do here in a RuntimeError
            raise ConfigError(f"OpenVINO could not compile {self.path} for this CPU in {precision}: {exc}") from exc
        got = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        if got != getattr(ov.Type, PRECISIONS[precision]):  # OpenVINO may fall back where the CPU lacks a type
            raise ConfigError(f"OpenVINO compiled {self.path} with inference precision {got}, not {precision}")
        self.request = self.compiled.create_infer_request()
        self.outputs = [self.compiled.output(n) for n in self.output_names]

    def encode(self, crops: np.ndarray, index: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        crops, index = crops_and_index(crops, index)
        if len(index) == 0:
            return empty_outputs(self, crops, index)
        feeds = {INPUT: np.ascontiguousarray(crops, dtype=np.uint8), INDEX: np.ascontiguousarray(index)}
        outs = self.request.infer(feeds)
        # the request's output tensors are reused by the next call: copied out
        return {
            n: torch.from_numpy(np.array(outs[o], np.float32))
            for n, o in zip(self.output_names, self.outputs, strict=True)
        }
