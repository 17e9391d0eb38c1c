"""TensorRT backend: an fp16 engine built from the exported ONNX, cached by TensorRT version, GPU name
and model hash (a stale engine after an upgrade is rebuilt, never loaded), and checked against a
reference at build time: an engine that fails parity is deleted and refused."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, FerError
from ..paths import file_sha256
from .base import check_precision, crops_and_index, empty_outputs
from .image_side import INDEX
from .onnx import INPUT, read_onnx_meta

PARITY_TOL = {"fp32": 1e-3, "fp16": 1e-2}
MISSING = (
    "backend 'tensorrt' asked for, but the `tensorrt` Python package is not installed. NVIDIA serves it from "
    "its own index: `pip install tensorrt --extra-index-url https://pypi.nvidia.com` (matching your CUDA), "
    "or use backend 'onnxruntime' or 'torch'."
)


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise ConfigError(MISSING) from exc
    return trt


def engine_key(onnx_sha256: str, trt_version: str, gpu: str, precision: str, max_batch: int) -> str:
    text = json.dumps([onnx_sha256, trt_version, gpu, precision, max_batch])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _torch_dtype(trt, dtype) -> torch.dtype:
    table = {
        trt.DataType.FLOAT: torch.float32,
        trt.DataType.HALF: torch.float16,
        trt.DataType.UINT8: torch.uint8,
        trt.DataType.INT64: torch.int64,
    }
    return table[dtype]


class TensorRTBackend:
    name = "tensorrt"

    def __init__(
        self,
        onnx_path: str | os.PathLike[str],
        cache_dir: str | os.PathLike[str],
        precision: str = "fp16",
        max_batch: int = 48,
        reference: Callable[[], Callable[[np.ndarray], dict[str, torch.Tensor]]] | None = None,
        device: str = "cuda",
    ):
        trt = import_tensorrt()
        if not torch.cuda.is_available():
            raise ConfigError("backend 'tensorrt' needs a CUDA device; torch sees none")
        self.trt = trt
        self.device = device if device.startswith("cuda") else "cuda"
        self.precision = check_precision(precision)
        if self.precision == "int8":
            raise ConfigError("TensorRT int8 needs calibration data, which ros_fer does not ship; use fp16")
        self.meta = read_onnx_meta(onnx_path)
        self.output_names = tuple(self.meta["outputs"])
        self.levels, self.size = len(self.meta["levels"]), int(self.meta["image_size"])
        self.max_batch = max_batch
        self.logger = trt.Logger(trt.Logger.WARNING)
        gpu = torch.cuda.get_device_name(torch.device(self.device))
        key = engine_key(file_sha256(onnx_path), trt.__version__, gpu, precision, max_batch)
        cache = Path(cache_dir)
        cache.mkdir(parents=True, exist_ok=True)
        stem = Path(onnx_path).stem
        self.engine_path = cache / f"{stem}.{key}.engine"
        built = not self.engine_path.is_file()
        if built:
            for stale in cache.glob(f"{stem}.*.engine"):  # other TensorRT, GPU or model: useless now
                stale.unlink()
            self._build(Path(onnx_path))
        runtime = trt.Runtime(self.logger)
        self.engine = runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self.engine is None:
            self.engine_path.unlink(missing_ok=True)
            raise FerError(f"TensorRT could not load engine {self.engine_path}; it was removed, retry to rebuild")
        self.context = self.engine.create_execution_context()
        if built and reference is not None:  # the reference model is loaded only when an engine is built
            self._check_parity(reference())

    def _build(self, onnx_path: Path) -> None:
        trt = self.trt
        builder = trt.Builder(self.logger)
        network = builder.create_network(0)  # TensorRT 10: networks are explicit-batch
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse(onnx_path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise FerError(f"TensorRT could not parse {onnx_path}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 4 << 30)
        if self.precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        crop, n, opt = (self.size, self.size, 3), self.levels, min(4, self.max_batch)
        profile.set_shape(INPUT, (1, *crop), (opt * n, *crop), (self.max_batch * n, *crop))
        profile.set_shape(INDEX, (1, n), (opt, n), (self.max_batch, n))
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise FerError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
        tmp = self.engine_path.with_name(self.engine_path.name + ".tmp")
        tmp.write_bytes(bytes(serialized))
        os.replace(tmp, self.engine_path)

    def _check_parity(self, reference: Callable[[np.ndarray], dict[str, torch.Tensor]]) -> None:
        crops = np.random.default_rng(0).integers(0, 256, (2, self.levels, self.size, self.size, 3), dtype=np.uint8)
        ours, theirs = self.encode(crops), reference(crops)
        diff = max(float((ours[n].cpu() - theirs[n].float().cpu()).abs().max()) for n in self.output_names)
        tol = PARITY_TOL[self.precision]
        record = {"max_abs_diff": diff, "tolerance": tol, "trt": self.trt.__version__}
        self.engine_path.with_suffix(".parity.json").write_text(json.dumps(record))
        if not diff <= tol:
            self.engine_path.unlink(missing_ok=True)
            raise FerError(
                f"TensorRT engine refused: max abs difference {diff:.3g} to torch exceeds {tol} ({self.precision})"
            )

    @torch.inference_mode()
    def encode(self, crops: np.ndarray, index: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        crops, index = crops_and_index(crops, index)
        if len(index) == 0:
            return empty_outputs(self, crops, index)
        if not 1 <= len(index) <= self.max_batch:
            raise ConfigError(f"TensorRT engine takes 1..{self.max_batch} persons per call, got {len(index)}")
        inputs = {
            INPUT: torch.from_numpy(np.ascontiguousarray(crops)).to(self.device, non_blocking=True),
            INDEX: torch.from_numpy(np.ascontiguousarray(index)).to(self.device, non_blocking=True),
        }
        for name, tensor in inputs.items():
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        outs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = _torch_dtype(self.trt, self.engine.get_tensor_dtype(name))
            outs[name] = torch.empty(shape, dtype=dtype, device=self.device)
            self.context.set_tensor_address(name, outs[name].data_ptr())
        stream = torch.cuda.current_stream(torch.device(self.device))
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise FerError("TensorRT execution failed")
        stream.synchronize()
        return {n: t.float() for n, t in outs.items()}
