"""An exported model folder (models/<name>/): what the node loads. manifest.json names the files:
the checkpoint (torch backend), the text bank, the ONNX image side per precision, and records the
model identity and head, so an ONNX or TensorRT run needs no torch model at all."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from . import __version__
from .backends import BACKENDS, OnnxRuntimeBackend, TensorRTBackend, TorchBackend, export_onnx
from .backends.tensorrt import import_tensorrt
from .errors import ConfigError
from .head import Head
from .models import FerModel, load_model, save_model
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
        "head": model.head().to_dict(),
        "outputs": list(model.image_outputs()),
        "levels": list(model.levels),
        "image_size": model.backbone.image_size,
        "model": "model.safetensors",
        "text_bank": "text_bank.safetensors",
        "onnx": files,
    }
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, out / MANIFEST)
    return out


@dataclass
class Bundle:
    path: Path
    manifest: dict
    head: Head
    bank: TextBank

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
        """The image-side backend `kind` for this bundle (torch, onnxruntime or tensorrt)."""
        if kind == "torch":
            return TorchBackend(self.load_model(device), device, precision, options.get("cuda_graphs", False))
        if kind == "onnxruntime":
            return OnnxRuntimeBackend(self.onnx_path(precision), device, options.get("threads"))
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
    return Bundle(path=path, manifest=manifest, head=head, bank=text_bank)
