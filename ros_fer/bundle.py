"""An exported model folder (models/<name>/): what the node loads. manifest.json names the files:
the checkpoint (torch backend), the text bank, the ONNX image side per precision, and records the
model identity and head, so an ONNX or TensorRT run needs no torch model at all."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from . import __version__
from .backends import BACKENDS, OnnxRuntimeBackend, OpenVinoBackend, TensorRTBackend, TorchBackend, export_onnx
from .backends.tensorrt import import_tensorrt
from .errors import ConfigError
from .head import CACHE_KEYS, Head
from .models import FerModel, load_model, save_model
from .paths import replace
from .text_bank import TextBank, build_text_bank

BUNDLE_FORMAT = "ros_fer.bundle/1"
MANIFEST = "manifest.json"


def export_bundle(
    model: FerModel, out: str | os.PathLike[str], precisions: tuple[str, ...] = ("fp32",), onnx: bool = True
) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_model(model, out / "model.safetensors")
    build_text_bank(model).save(out / "text_bank.safetensors")
    if "int8" in precisions and "fp32" not in precisions:
        precisions = ("fp32", *precisions)  # where int8 fails parity on a robot's CPU, auto falls back to it
    files = {p: f"image_side.{p}.onnx" for p in precisions} if onnx else {}
    for precision, name in files.items():
        export_onnx(model, out / name, precision)  # int8: parity-checked here, its reference written beside
    manifest = {
        "format": BUNDLE_FORMAT,
        "version": __version__,
        "identity": model.identity(),
        "label_set": model.labels.to_dict(),
        "head": model.head().to_dict(),
        "outputs": list(model.image_outputs()),
        "levels": list(model.levels),
        "image_size": model.backbone.image_size,
        "model": "model.safetensors",
        "text_bank": "text_bank.safetensors",
        "onnx": files,
    }
    write_manifest(out, manifest)
    return out


def write_manifest(out: Path, manifest: dict) -> None:
    """manifest.json, atomically: a folder is never left with half a manifest."""
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    replace(tmp, out / MANIFEST)


CACHE_FORMAT = "ros_fer.cache/1"


@dataclass
class Bundle:
    path: Path
    manifest: dict
    head: Head
    bank: TextBank
    cache: dict[str, torch.Tensor] = field(default_factory=dict)  # a cache head's keys and values

    def text(self, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """What the head reads: the text bank's class features, and a cache head's examples."""
        return {k: v.to(device) for k, v in {**self.bank.tensors, **self.cache}.items()}

    @property
    def levels(self) -> tuple[str, ...]:
        return tuple(self.manifest["levels"])

    @property
    def image_size(self) -> int:
        return int(self.manifest["image_size"])

    @property
    def labels(self) -> list[str]:
        return list(self.manifest["identity"]["labels"])

    def load_model(self, device: str = "cpu") -> FerModel:
        return load_model(self.path / self.manifest["model"], device=device).eval()

    def onnx_path(self, precision: str) -> Path:
        name = self.manifest["onnx"].get(precision)
        if not name:
            raise ConfigError(
                f"bundle {self.path} has no {precision} ONNX graph (has {sorted(self.manifest['onnx'])}); "
                f"re-export with `ros-fer export --precision {precision}`"
            )
        return self.path / name

    def backend(self, kind: str, device: str = "cpu", precision: str = "fp32", **options):
        """The image-side backend `kind` for this bundle (torch, onnxruntime, openvino or tensorrt)."""
        if kind == "torch":
            return TorchBackend(self.load_model(device), device, precision, options.get("cuda_graphs", False))
        if kind == "onnxruntime":
            return OnnxRuntimeBackend(self.onnx_path(precision), device, options.get("threads"))
        if kind == "openvino":  # OpenVINO lowers precision itself; fp32 ONNX is the exact source
            return OpenVinoBackend(self.onnx_path("fp32"), precision, device, options.get("threads"))
        if kind == "tensorrt":
            import_tensorrt()  # say it is missing before anything touches CUDA
            if not torch.cuda.is_available():
                raise ConfigError("backend 'tensorrt' needs a CUDA device; torch sees none")
            onnx = self.onnx_path("fp32")  # TensorRT lowers precision itself; fp32 ONNX is the exact source
            reference = lambda: TorchBackend(self.load_model("cuda"), "cuda", "fp32").encode  # noqa: E731
            return TensorRTBackend(onnx, self.path / "engines", precision, options.get("max_batch", 48), reference)
        raise ConfigError(f"unknown backend {kind!r}; choose one of {BACKENDS}")


def load_bundle(path: str | os.PathLike[str], bank: str | os.PathLike[str] | None = None) -> Bundle:
    """Read a bundle; `bank` swaps in another text bank (checked against the bundle's model)."""
    path = Path(path)
    manifest_file = path / MANIFEST
    if not manifest_file.is_file():
        raise ConfigError(f"{path} is not an exported model folder (no {MANIFEST}); create one with `ros-fer export`")
    manifest = json.loads(manifest_file.read_text())
    if manifest.get("format") != BUNDLE_FORMAT:
        raise ConfigError(f"{manifest_file}: format {manifest.get('format')!r}, want {BUNDLE_FORMAT}")
    head = Head.from_dict(manifest["head"])
    text_bank = TextBank.load(bank or path / manifest["text_bank"]).check_identity(manifest["identity"], head.text_keys)
    cache = read_cache(path / manifest["cache"], manifest) if head.kind == "cache" else {}
    return Bundle(path=path, manifest=manifest, head=head, bank=text_bank, cache=cache)


def cache_width(manifest: dict) -> int:
    """The length of a cache key: the embedding, or every level's side by side for a `levels` head."""
    levels = len(manifest["levels"]) if manifest["head"].get("base") == "levels" else 1
    return levels * int(manifest["identity"]["embed_dim"])


def write_cache(path: Path, keys: torch.Tensor, values: torch.Tensor, meta: dict) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tensors = {CACHE_KEYS[0]: keys.detach().float().contiguous().cpu(), CACHE_KEYS[1]: values.float().cpu()}
    save_file(tensors, str(tmp), metadata={"format": CACHE_FORMAT, "meta": json.dumps(meta)})
    replace(tmp, path)
    return path


def read_cache(path: Path, manifest: dict) -> dict[str, torch.Tensor]:
    """A cache head's examples, checked against the folder: keys [N, width], values one-hot [N, classes]."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            fmt = (fh.metadata() or {}).get("format")
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ConfigError(f"cache {path} is not a readable safetensors file: {exc}") from exc
    if fmt != CACHE_FORMAT:
        raise ConfigError(f"{path}: format {fmt!r}, want {CACHE_FORMAT}")
    classes, width = len(manifest["identity"]["labels"]), cache_width(manifest)
    keys, values = (tensors.get(k) for k in CACHE_KEYS)
    problems = [f"missing tensor {k!r}" for k in CACHE_KEYS if k not in tensors]
    if not problems:
        n = keys.shape[0]
        if keys.ndim != 2 or keys.shape[1] != width or n == 0:
            problems.append(f"{CACHE_KEYS[0]!r} is {list(keys.shape)}, want [examples > 0, {width}]")
        if tuple(values.shape) != (n, classes) or not bool(((values == 0) | (values == 1)).all()):
            problems.append(f"{CACHE_KEYS[1]!r} is {list(values.shape)}, want one-hot [{n}, {classes}]")
    if problems:
        raise ConfigError(f"cache {path} does not fit the model folder {path.parent}: " + "; ".join(problems))
    return tensors
