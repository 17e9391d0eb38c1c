"""Turn perception parameters into the runtime parts: an image-side backend, a head and a checked text
bank. `model` may be an exported folder, a trained checkpoint or a method config name. For the latter
two, the text bank is computed once and cached, so no text encoder runs per frame."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .backends import (
    Int8ParityError,
    OnnxRuntimeBackend,
    TensorRTBackend,
    TorchBackend,
    export_onnx,
    parity_path,
    read_onnx_meta,
)
from .backends.tensorrt import import_tensorrt
from .bundle import MANIFEST, load_bundle
from .errors import ConfigError
from .head import Head
from .labels import LabelSet, load_label_set
from .models import FerModel, create_model, load_model
from .models.factory import read_checkpoint_meta
from .paths import cache_dir
from .text_bank import TextBank, build_text_bank


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but torch sees no CUDA device")
    return device


def graphs_on(params: dict, device: str) -> bool:
    """`cuda_graphs`: on, off, or auto (on for CUDA)."""
    return params["cuda_graphs"] == "on" or (params["cuda_graphs"] == "auto" and device.startswith("cuda"))


def resolve_precision(precision: str, device: str, backend: str = "torch") -> str:
    """auto: fp16 on CUDA; on the CPU int8 with onnxruntime (checked for parity, else fp32), fp32 with torch."""
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "fp16"
    return "int8" if backend == "onnxruntime" else "fp32"


def _parity_fallback(make, precision: str, auto: bool, warnings: list[str]):
    """make(precision); under `precision: auto`, an int8 graph that fails parity here gives fp32 instead,
    with one warning line. An explicit int8 fails with the measured figure and the fall-back to take."""
    try:
        return make(precision)
    except Int8ParityError as exc:
        if not (auto and precision == "int8"):
            raise
        warnings.append(exc.fallback_note())
        return make("fp32")


@dataclass
class Runtime:
    backend: object
    head: Head
    text: dict[str, torch.Tensor]
    labels: LabelSet
    levels: tuple[str, ...]
    image_size: int
    description: str
    warnings: list[str] = field(default_factory=list)  # said once at start by the front doors


def _label_set(manifest: dict) -> LabelSet:
    """An exported folder's label set: carried whole in its manifest (older folders: by name, labels.yaml)."""
    identity = manifest["identity"]
    if "label_set" in manifest:
        labels = LabelSet.from_dict(manifest["label_set"])
    else:
        labels = load_label_set(identity["label_set"])
    if list(labels.classes) != list(identity["labels"]):
        raise ConfigError(
            f"label set {labels.name!r} ({list(labels.classes)}) does not match the model's {identity['labels']}"
        )
    return labels


def _key(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def model_from_params(params: dict, device: str) -> FerModel:
    """The torch model `params["model"]` names: a trained checkpoint, or a method config with the params'
    backbone, labels and levels."""
    model = params["model"]
    if Path(model).is_file():
        if read_checkpoint_meta(model) is None:
            raise ConfigError(f"model {model} is neither a ros_fer checkpoint nor an exported folder")
        return load_model(model, device=device).eval()
    backbone = {
        "name": params["backbone"],
        "pretrained": params["pretrained"] or None,
        "checkpoint": params["backbone_checkpoint"] or None,
    }
    overrides = {"backbone": backbone, "labels": params["labels"], "levels": list(params["levels"])}
    return create_model(model, overrides, device=device).eval()


def _bank(params: dict, model: FerModel) -> TextBank:
    if params["text_bank"]:
        return TextBank.load(params["text_bank"]).check(model)
    path = cache_dir() / "text_banks" / f"{_key(model.identity())}.safetensors"
    if path.is_file():
        return TextBank.load(path).check(model)
    bank = build_text_bank(model)  # once; later starts read the cache
    bank.save(path)
    return bank


def build_runtime(params: dict) -> Runtime:
    device = resolve_device(params["device"])
    kind = params["backend"]
    auto = params["precision"] == "auto"
    precision = resolve_precision(params["precision"], device, kind)
    graphs = graphs_on(params, device)
    warnings: list[str] = []
    if kind == "tensorrt":
        import_tensorrt()
    target = Path(params["model"])
    if (target / MANIFEST).is_file():
        bundle = load_bundle(target, bank=params["text_bank"] or None)
        if auto and precision == "int8" and "int8" not in bundle.manifest["onnx"]:
            precision = "fp32"  # auto takes the best graph the folder has
        backend = _parity_fallback(
            lambda p: bundle.backend(kind, device, p, cuda_graphs=graphs), precision, auto, warnings
        )
        identity = bundle.manifest["identity"]
        return Runtime(
            backend,
            bundle.head,
            bundle.text(backend.device),
            _label_set(bundle.manifest),
            bundle.levels,
            bundle.image_size,
            f"{identity['method']} bundle {target}",
            warnings,
        )
    model = model_from_params(params, device if kind == "torch" else "cpu")
    bank = _bank(params, model)
    if kind == "torch":
        backend = TorchBackend(model, device, precision, graphs)
    elif kind == "onnxruntime":
        backend = _parity_fallback(
            lambda p: OnnxRuntimeBackend(_cached_onnx(model, p), device), precision, auto, warnings
        )
    else:
        reference = lambda: TorchBackend(model.to(device), device, "fp32").encode  # noqa: E731
        onnx = _cached_onnx(model, "fp32")  # TensorRT lowers precision itself
        backend = TensorRTBackend(onnx, cache_dir() / "engines", precision, reference=reference, device=device)
    text = {k: v.to(backend.device) for k, v in bank.tensors.items()}
    ident = model.identity()
    desc = f"{ident['method']} on {ident['backbone']} ({ident['weights']})"
    return Runtime(backend, model.head(), text, model.labels, model.levels, model.backbone.image_size, desc, warnings)


def _cached_onnx(model: FerModel, precision: str) -> Path:
    """The image side exported once per model identity and precision, then reused."""
    onnx = cache_dir() / "onnx" / f"{_key(model.identity())}.{precision}.onnx"
    stale = not onnx.is_file() or read_onnx_meta(onnx)["identity"] != model.identity()
    if precision == "int8":  # an int8 graph of an older export carries no parity reference
        stale = stale or not parity_path(onnx).is_file()
    if stale:
        export_onnx(model, onnx, precision)
    return onnx
