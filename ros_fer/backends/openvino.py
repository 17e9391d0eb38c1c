"""OpenVINO backend: the image side's fp32 ONNX graph (the one `export_onnx` writes) compiled by OpenVINO
for the CPU, in fp32 or with bf16 inference precision where the CPU computes bf16 natively (AMX,
AVX512-BF16), or quantised to int8 by NNCF (post-training, calibrated on crops of real photographs; what is
left in floating point runs in bf16 where native, else fp32). The int8 model is made once per ONNX graph and
checked against fp32 there (per-crop cosine); the compiled model is cached by OpenVINO itself beside
ros_fer's other caches, so a later start skips both."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import json
import os
import sys
import threading
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from ..machine import int8_saturates, native_bf16
from ..paths import cache_dir, file_digest
from .base import crops_and_index, empty_outputs
from .image_side import INDEX
from .onnx import INPUT, INT8_MIN_COSINE, Int8ParityError, min_cosine, read_onnx_meta

PRECISIONS = {"fp32": "f32", "bf16": "bf16", "int8": None}  # ros_fer's name -> INFERENCE_PRECISION_HINT
CALIBRATION_PERSONS = (1, 2, 3, 4, 5, 6, 7, 8)  # the sample frame with this many people: 100 crops in all
RECIPE = "ptq-nosq"  # the quantisation recipe, in the cached int8 model's name (a new recipe: made again)


def recipe(isa=None) -> str:
    """The quantisation recipe for this CPU (`isa`: a flag list; None: this CPU's). Where int8 dot products
    saturate (`machine.int8_saturates`: no VNNI, no AMX), every MatMul and convolution gets 7-bit weights
    (NNCF's overflow fix, as onnxruntime's `reduce_range`): with NNCF's default (the first layer only) an
    AVX2-only AMD EPYC fell to a per-crop cosine of 0.9841 against fp32 (ViT-B-32), below the 0.99 floor."""
    return f"{RECIPE}-7bit" if int8_saturates(isa) else RECIPE


def import_openvino():
    try:
        import openvino
    except ImportError as exc:
        raise ConfigError(
            "backend 'openvino' needs the openvino package (pip install openvino; scripts/setup.sh installs it)"
        ) from exc
    return openvino


@functools.cache
def shared_core():
    """The one `openvino.Core` ros_fer compiles with, for the process's life: each Core loads its own CPU
    plugin, and each plugin swaps the loading thread's alternate signal stack (see `keep_signal_stack`), so
    fewer of them means fewer swaps; a plugin is also loaded once instead of per backend."""
    return import_openvino().Core()


class _SignalStack(ctypes.Structure):  # struct stack_t (Linux)
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


SIGNAL_STACK_BYTES = 256 * 1024  # AMX's signal frame alone is ~11 KiB; ample for any handler CPython runs
_SIGNAL_STACKS: dict[int, _SignalStack] = {}  # thread ident -> the stack ros_fer gave it (never unmapped)


def keep_signal_stack() -> bool:
    """Give the calling thread an alternate signal stack that ros_fer owns for the process's life, where
    OpenVINO has been loaded (True: one was set now).

    Why: OpenVINO's CPU plugin (per Core) maps a stack and makes it the thread's alternate signal stack when
    it loads, and unmaps it when the Core goes; it restores the stack it found only if its own is still the
    current one. Two Cores freed in the other order than they were made (the runtime probe's candidates,
    NNCF's calibration engines, ultralytics' OpenVINO YOLO) leave the thread's alternate stack pointing at
    unmapped memory, and CPython installs its handlers with SA_ONSTACK: the next SIGINT killed the process
    (SIGSEGV, si_code SI_KERNEL) instead of stopping the node. With a stack of ours current, no plugin
    restores anything (theirs are not current), and the handlers run on memory that stays mapped. Called
    after the parts that may load OpenVINO are built (`runtime.build_runtime`, `pipeline.detector_from_params`)."""
    if not sys.platform.startswith("linux") or "openvino" not in sys.modules:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    current = _SignalStack()
    if libc.sigaltstack(None, ctypes.byref(current)) != 0 or current.ss_flags & 1:  # SS_ONSTACK: on it now
        return False
    ident = threading.get_ident()
    ours = _SIGNAL_STACKS.get(ident)
    if ours is not None and current.ss_sp == ours.ss_sp and not current.ss_flags & 2:  # SS_DISABLE
        return False
    if ours is None:
        prot, flags = 0x1 | 0x2, 0x02 | 0x20 | 0x20000  # PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_STACK
        address = libc.mmap(None, SIGNAL_STACK_BYTES, prot, flags, -1, 0)
        if address in (None, ctypes.c_void_p(-1).value):
            return False
        ours = _SignalStack(address, 0, SIGNAL_STACK_BYTES)
        _SIGNAL_STACKS[ident] = ours
    return libc.sigaltstack(ctypes.byref(ours), None) == 0


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
            raise ConfigError(f"backend 'openvino' runs precision fp32, bf16 or int8, not {precision!r}")
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
        core = shared_core()
        if compiled_cache is None:
            _drop_unfoldered_blobs(cache_dir() / "openvino")
        # int8: the quantised layers run int8, the rest in bf16 where native, else fp32
        hint = PRECISIONS[precision] or ("bf16" if native_bf16() else "f32")
        config = {
            "PERFORMANCE_HINT": "LATENCY",  # one request at a time, every thread on it
            "INFERENCE_PRECISION_HINT": hint,
            "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads()),
            # one folder per precision: OpenVINO 2026.4 keys its cache by the model and not by this hint, so a
            # bf16 compile after an fp32 one of the same graph loaded the fp32 blob (NaN features, or fp32 speed)
            "CACHE_DIR": str(Path(compiled_cache or cache_dir() / "openvino" / "compiled") / precision),
        }
        self.source = self.path if precision != "int8" else quantized_model(self.path, self.meta, core, config)
        try:
            self.compiled = core.compile_model(str(self.source), "CPU", config)
        except RuntimeError as exc:  # OpenVINO says what it cannot do here in a RuntimeError
            raise ConfigError(f"OpenVINO could not compile {self.source} for this CPU in {precision}: {exc}") from exc
        got = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        if got != getattr(ov.Type, hint):  # OpenVINO may fall back where the CPU lacks a type
            raise ConfigError(f"OpenVINO compiled {self.source} with inference precision {got}, not {hint}")
        self.request = self.compiled.create_infer_request()
        self.outputs = [self.compiled.output(n) for n in self.output_names]
        self._check_finite()

    def _check_finite(self) -> None:
        """One person of the sample frame through the compiled model: features that are not all finite fail
        here, at start, instead of every frame scoring NaN (a bf16 compile served another precision's cached
        blob gave NaN throughout, before the cache had a folder per precision)."""
        from ..crops import sample_crops

        batch = sample_crops(1, self.meta["levels"], int(self.meta["image_size"]))
        if not all(torch.isfinite(v).all() for v in self.encode(batch.images, batch.index).values()):
            instead = "another precision (precision: fp32) or " if self.precision != "fp32" else ""
            raise ConfigError(
                f"OpenVINO's {self.precision} run of {self.source} gives features that are not finite on this CPU; "
                f"use {instead}another backend (backend: torch)"
            )

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


def _drop_unfoldered_blobs(folder: Path) -> None:
    """Compiled models that releases before the per-precision folders left directly in `folder`: never read
    again (hundreds of MB each for a real model), so removed."""
    for blob in folder.glob("*.blob"):
        with contextlib.suppress(OSError):
            blob.unlink()


def calibration_crops(levels, size: int) -> list[dict[str, np.ndarray]]:
    """NNCF's calibration set: the crops (and their index) of the sample frame, real people from photographs
    that ship with ultralytics, at each CALIBRATION_PERSONS count."""
    from ..crops import sample_crops

    batches = (sample_crops(persons, levels, size) for persons in CALIBRATION_PERSONS)
    return [{INPUT: batch.images, INDEX: batch.index} for batch in batches]


def quantized_model(onnx: Path, meta: dict, core, config: dict) -> Path:
    """The int8 OpenVINO model of an fp32 ONNX graph: NNCF post-training quantisation (transformer preset,
    SmoothQuant off: with it, crops of photographs outside the calibration set fell to a cosine of 0.988 on
    ViT-B-32, without it 0.9998), made once and cached by the graph's hash, NNCF's version and this recipe,
    then checked against fp32 on the calibration crops: a per-crop cosine below INT8_MIN_COSINE is refused
    (saying what to use instead), and the figure is kept beside the model."""
    from ..measured import package_version

    nncf_version = package_version("nncf")  # from its metadata: importing NNCF takes ~1 s, needed only to make it
    if nncf_version is None:
        raise ConfigError(
            "backend 'openvino' with precision int8 needs nncf (pip install nncf; scripts/setup.sh installs it), "
            "or use precision bf16 / fp32"
        )
    folder = cache_dir() / "openvino" / "int8"
    digest = file_digest(onnx, folder / "digests.json")
    how = recipe()
    target = folder / f"{onnx.stem}.{digest}.nncf{nncf_version}.{how}.xml"
    report = target.with_suffix(".json")
    if not (target.is_file() and report.is_file()):
        import nncf
        import openvino as ov

        calibration = calibration_crops(meta["levels"], int(meta["image_size"]))
        source = core.read_model(str(onnx))
        # NNCF draws progress bars on stdout, which `ros-fer infer` keeps for its JSON lines: kept off it
        with contextlib.redirect_stdout(io.StringIO()):
            quantized = _quantize(nncf, source, calibration, seven_bit=how.endswith("-7bit"))
        once = {k: v for k, v in config.items() if k != "CACHE_DIR"}  # compiled for this check only: not cached
        reference = core.compile_model(source, "CPU", {**once, "INFERENCE_PRECISION_HINT": "f32"})
        candidate = core.compile_model(quantized, "CPU", once)
        names = [o.get_any_name() for o in reference.outputs]
        got, want = [], []
        for feeds in calibration:
            a, b = candidate(feeds), reference(feeds)
            got += [np.array(a[candidate.output(n)], np.float32) for n in names]
            want += [np.array(b[reference.output(n)], np.float32) for n in names]
        cosine = min_cosine(got, want)
        target.parent.mkdir(parents=True, exist_ok=True)
        ov.save_model(quantized, str(target), compress_to_fp16=False)
        crops = sum(len(c[INPUT]) for c in calibration)
        report.write_text(json.dumps({"min_cosine": cosine, "onnx": str(onnx), "calibration_crops": crops}))
    cosine = json.loads(report.read_text())["min_cosine"]
    if cosine < INT8_MIN_COSINE:
        raise Int8ParityError(str(onnx), cosine)
    return target


def _quantize(nncf, source, calibration, seven_bit: bool):
    """NNCF's post-training quantisation as `quantized_model` makes it (see there and `recipe`)."""
    return nncf.quantize(
        source,
        nncf.Dataset(calibration),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(calibration),
        advanced_parameters=nncf.AdvancedQuantizationParameters(
            overflow_fix=nncf.OverflowFix.ENABLE if seven_bit else nncf.OverflowFix.FIRST_LAYER,
            smooth_quant_alphas=nncf.AdvancedSmoothQuantParameters(matmul=-1),  # -1: SmoothQuant off
        ),
    )
