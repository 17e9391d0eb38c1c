"""ONNX export of the whole image side (dynamic batch axis) and the ONNX Runtime backend."""

from __future__ import annotations

import copy
import functools
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from ..backbone import quiet_root_warnings
from ..errors import ConfigError, FerError
from ..models.base import FerModel
from ..paths import cache_dir, remembered, replace
from .base import check_precision, crops_and_index, empty_outputs
from .image_side import INDEX, ImageSide, plain_attention

INPUT = "crops"
META_KEY = "ros_fer"
# How the graph is written, in its metadata: 2 = attention written out plainly (`PlainSelfAttention`). A
# cached graph of another form is exported again (`runtime._cached_onnx`).
GRAPH_FORM = 2


def export_onnx(
    model: FerModel,
    path: str | os.PathLike[str],
    precision: str = "fp32",
    opset: int = 18,
    fp32_graph: str | os.PathLike[str] | None = None,
) -> Path:
    """Write the image side to ONNX, both input axes dynamic. int8 also writes its parity reference beside
    the graph and refuses a graph that fails parity here. int8 quantises an fp32 export of the model:
    `fp32_graph` where it is one this function wrote of this very model in the current form (the runtime's
    cached graph: a ViT-B-32 export takes ~30 s), else a fresh one."""

    check_precision(precision)
    if precision == "int8":
        return _export_int8(model, Path(path), opset, fp32_graph)
    side = ImageSide(copy.deepcopy(model)).eval()  # a copy: halving must not touch the caller's model
    plain_attention(side)  # the same numbers, in the ops OpenVINO and ONNX Runtime fuse
    if precision == "fp16":
        side.half()
    crops = torch.export.Dim("crops", min=1, max=4096)
    persons = torch.export.Dim("persons", min=1, max=4096)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.onnx.export(
        side,
        side.example(2),  # 2 persons, 2L+1 crops: neither axis may freeze, nor the two be tied
        str(tmp),
        input_names=[INPUT, INDEX],
        output_names=list(side.output_names),
        dynamic_shapes=({0: crops}, {0: persons}),
        opset_version=opset,
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    _set_meta(tmp, model, precision)
    replace(tmp, path)
    return path


# int8: weights quantised after an fp32 export, activations dynamic (uint8). Signed 7-bit weights
# (reduce_range, |w| <= 64): onnxruntime's u8s8 kernels on x86 CPUs without VNNI add pairs of u8*s8
# products in int16 (vpmaddubsw), which saturates for 8-bit weights (2*255*127 > 32767) and not for 7-bit
# ones (2*255*64 = 32640). VNNI CPUs accumulate in int32 either way. One graph holds on every x86-64 CPU.
INT8_SCHEME = {"weight_type": "QInt8", "reduce_range": True, "per_channel": False}
INT8_MIN_COSINE = 0.99  # minimum per-crop cosine of int8 features against fp32
PARITY_BATCH = 2  # persons (2L+1 crops) in the parity probe: catches saturation, ~0.1 s for ViT-B-32


class Int8ParityError(ConfigError):
    """An int8 graph's features are too far from fp32 on this machine."""

    def __init__(self, what: str, cosine: float):
        from ..machine import describe_cpu

        self.what, self.cosine, self.cpu = what, cosine, describe_cpu()
        super().__init__(
            f"{what}: int8 features reach a minimum per-crop cosine of {cosine:.4f} against fp32 on this CPU, "
            f"below the {INT8_MIN_COSINE} required ({self.cpu}). Use precision: fp32 (or precision: auto, "
            "which falls back to fp32 by itself)."
        )

    def fallback_note(self) -> str:
        """The one warning line of `precision: auto` when it falls back to fp32."""
        return (
            f"precision auto: {self.what} fails int8 parity on this CPU (minimum cosine {self.cosine:.4f} < "
            f"{INT8_MIN_COSINE}; {self.cpu}); running fp32 instead"
        )


def parity_path(onnx_path: str | os.PathLike[str]) -> Path:
    """image_side.int8.onnx -> image_side.int8.parity.safetensors (the crops and the fp32 features)."""
    return Path(onnx_path).with_suffix(".parity.safetensors")


def min_cosine(got: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """The smallest cosine over every feature vector (per crop, per level, per patch) of every output."""
    worst = 1.0
    for a, b in zip(got, reference, strict=True):
        a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
        cos = (a64 * b64).sum(-1) / np.maximum(np.linalg.norm(a64, axis=-1) * np.linalg.norm(b64, axis=-1), 1e-12)
        cos = np.where(np.isfinite(cos), cos, -1.0)  # NaN or inf: as far from the reference as can be, never passed
        worst = min(worst, float(cos.min()))
    return worst


def _session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def current_graph(meta: dict, model: FerModel) -> bool:
    """Whether a graph's metadata (`read_onnx_meta`) says it is an export of `model` in the current form:
    not another model's, nor written in an older form (a faster one exists: `GRAPH_FORM`)."""
    return meta["identity"] == model.identity() and meta.get("graph_form") == GRAPH_FORM


def _fp32_graph_of(model: FerModel, graph: str | os.PathLike[str] | None) -> bool:
    """Whether `graph` is a current (`current_graph`) fp32 export of `model`."""
    if graph is None or not Path(graph).is_file():
        return False
    try:
        meta = read_onnx_meta(graph)
    except FerError:
        return False
    return meta["precision"] == "fp32" and current_graph(meta, model)


def _export_int8(model: FerModel, path: Path, opset: int, source: str | os.PathLike[str] | None = None) -> Path:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from safetensors.numpy import save_file

    from ..machine import describe_cpu

    fp32, tmp = path.with_name(path.name + ".fp32.tmp"), path.with_name(path.name + ".tmp")
    if not _fp32_graph_of(model, source):
        source = export_onnx(model, fp32, "fp32", opset)
    try:
        graph = onnx.load(str(source))
        del graph.graph.value_info[:]  # the exporter's intermediate shapes confuse the quantiser's inference
        onnx.save(graph, str(fp32))
        with quiet_root_warnings():  # it suggests a pre-processing step on the root logger
            quantize_dynamic(
                str(fp32),
                str(tmp),
                weight_type=getattr(QuantType, INT8_SCHEME["weight_type"]),
                reduce_range=INT8_SCHEME["reduce_range"],
                per_channel=INT8_SCHEME["per_channel"],
            )
        crops, index = (t.numpy() for t in ImageSide(model).example(PARITY_BATCH, seed=0))
        feeds = {INPUT: crops, INDEX: index}
        reference = _session(fp32).run(None, feeds)
        cosine = min_cosine(_session(tmp).run(None, feeds), reference)
        if cosine < INT8_MIN_COSINE:
            raise Int8ParityError(f"int8 export of {path}", cosine)
        names = list(model.image_outputs())
        tensors = {
            "crops": crops,
            "index": index,
            **{f"reference.{n}": r.astype(np.float32) for n, r in zip(names, reference, strict=True)},
        }
        save_file(
            tensors, str(parity_path(path)), metadata={"min_cosine_at_export": f"{cosine:.6f}", "cpu": describe_cpu()}
        )
        _set_meta(tmp, model, "int8", {"int8": {**INT8_SCHEME, "export_min_cosine": round(cosine, 6)}})
        replace(tmp, path)
    finally:
        fp32.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return path


def _set_meta(path: str | os.PathLike[str], model: FerModel, precision: str, extra: dict | None = None) -> None:
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
        "graph_form": GRAPH_FORM,
        **(extra or {}),
    }
    del graph.metadata_props[:]
    entry = graph.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)
    onnx.save(graph, str(path))


def read_onnx_meta(path: str | os.PathLike[str]) -> dict:
    """ros_fer's metadata of an exported graph. Parsing the graph takes ~0.4 s for ViT-B-32, and every start
    reads it: remembered for the process by path, inode, size and modification time, and across starts in
    the cache (`paths.remembered`: `onnx/meta.json`, by path, size and modification time)."""
    stat = os.stat(path)
    return copy.deepcopy(_onnx_meta(str(Path(path).resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns))


@functools.lru_cache(maxsize=32)
def _onnx_meta(path: str, inode: int, size: int, mtime_ns: int) -> dict:
    return remembered(Path(path), cache_dir() / "onnx" / "meta.json", "meta", lambda: _parse_meta(path), _is_meta)


def _is_meta(value) -> bool:
    return isinstance(value, dict) and isinstance(value.get("outputs"), list) and "precision" in value


def _parse_meta(path: str) -> dict:
    import onnx

    graph = onnx.load(path, load_external_data=False)
    for entry in graph.metadata_props:
        if entry.key == META_KEY:
            return json.loads(entry.value)
    raise FerError(f"{path} was not exported by ros_fer (no {META_KEY!r} metadata)")


def session_options(threads: int | None = None):
    """onnxruntime session options as this package makes every session (the encoder's, YOLO's runner):
    `threads` intra-op threads (None or 0: onnxruntime's default, one per core) that sleep after each run.
    onnxruntime's threads spin after each run by default, on the cores YOLO and tracking need next: a frame's
    detection took 104 ms beside a spinning int8 encoder against 66-72 ms beside torch (README)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


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
        options = session_options(threads)
        # fp16 graphs crashed onnxruntime 1.31 at session creation under ORT_ENABLE_ALL; EXTENDED is safe.
        options.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
            if self.precision == "fp16"
            else ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        )
        providers = ["CPUExecutionProvider"]
        self.device = "cpu"
        if str(device).startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ConfigError("device cuda asked for, but this onnxruntime has no CUDAExecutionProvider")
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        self.parity: dict | None = self.check_int8() if self.precision == "int8" else None

    def check_int8(self) -> dict:
        """Run the int8 graph on the crops of its parity reference, here, and compare with the fp32 features
        recorded at export. Raises Int8ParityError below INT8_MIN_COSINE (e.g. saturating kernels)."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        ref_file = parity_path(self.path)
        if not ref_file.is_file():
            raise ConfigError(
                f"int8 graph {self.path} has no parity reference ({ref_file.name} beside it); "
                "re-export it with `ros-fer export --precision int8`"
            )
        try:
            tensors = load_file(str(ref_file))
        except (SafetensorError, OSError) as exc:
            raise ConfigError(f"parity reference {ref_file} is not a readable safetensors file: {exc}") from exc
        keys = ["crops", "index"] + [f"reference.{n}" for n in self.output_names]
        missing = [k for k in keys if k not in tensors]
        if missing:
            raise ConfigError(f"parity reference {ref_file}: missing tensor(s) {missing}; expected {keys}")
        start = time.perf_counter()
        got = self.session.run(list(self.output_names), {INPUT: tensors["crops"], INDEX: tensors["index"]})
        cosine = min_cosine(got, [tensors[k] for k in keys[2:]])
        if cosine < INT8_MIN_COSINE:
            raise Int8ParityError(f"int8 graph {self.path}", cosine)
        return {"min_cosine": round(cosine, 6), "ms": round((time.perf_counter() - start) * 1e3, 1)}

    def encode(self, crops: np.ndarray, index: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        crops, index = crops_and_index(crops, index)
        if len(index) == 0:
            return empty_outputs(self, crops, index)
        feeds = {INPUT: np.ascontiguousarray(crops, dtype=np.uint8), INDEX: np.ascontiguousarray(index)}
        outs = self.session.run(list(self.output_names), feeds)
        return {n: torch.from_numpy(o).float() for n, o in zip(self.output_names, outs, strict=True)}
