"""Text-feature banks: every class text feature the runtime needs, precomputed once, so no text
encoder runs on the robot. Stored as safetensors with JSON metadata naming what they belong to."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from . import __version__
from .errors import BankMismatchError
from .models.base import FerModel
from .paths import replace

BANK_FORMAT = "ros_fer.text_bank/1"
# Identity fields a bank must share with its model, with the words the error uses for each.
CHECKED = {
    "method": "method",
    "backbone": "backbone",
    "weights": "backbone weights",
    "checkpoint": "trained checkpoint (sha256)",
    "embed_dim": "embedding size",
    "labels": "label order",
    "levels": "crop levels",
    "prompts_sha256": "prompt file (sha256)",
}


@dataclass
class TextBank:
    tensors: dict[str, torch.Tensor]  # e.g. classes [C, D], level.face [C, D]; L2-normalised
    meta: dict

    @property
    def labels(self) -> list[str]:
        return list(self.meta["labels"])

    def save(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tensors = {k: v.detach().float().contiguous().cpu() for k, v in self.tensors.items()}
        save_file(tensors, str(tmp), metadata={"format": BANK_FORMAT, "meta": json.dumps(self.meta)})
        replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> TextBank:
        path = Path(path)
        if not path.is_file():
            raise BankMismatchError(f"text bank {path} does not exist; build one with `ros-fer precompute-text`")
        try:
            with safe_open(str(path), framework="pt", device=str(device)) as fh:
                header = fh.metadata() or {}
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise BankMismatchError(f"text bank {path} is not a readable safetensors file: {exc}") from exc
        if header.get("format") != BANK_FORMAT:
            raise BankMismatchError(
                f"{path} is not a ros_fer text bank (format {header.get('format')!r}, want {BANK_FORMAT})"
            )
        meta = json.loads(header["meta"])
        meta["path"] = str(path)
        return cls(tensors=tensors, meta=meta)

    def check(self, model: FerModel) -> TextBank:
        """Raise, naming every mismatch, unless this bank was built for `model`; returns self."""
        return self.check_identity(model.identity(), model.text_keys())

    def check_identity(self, ident: dict, text_keys: tuple[str, ...]) -> TextBank:
        """The same check against a recorded identity (an exported bundle, an ONNX file's metadata)."""
        where = self.meta.get("path", "text bank")
        problems = [
            f"{words}: bank has {self.meta.get(key)!r}, model has {ident.get(key)!r}"
            for key, words in CHECKED.items()
            if self.meta.get(key) != ident.get(key)
        ]
        n, d = len(ident["labels"]), ident["embed_dim"]
        for key in text_keys:
            tensor = self.tensors.get(key)
            if tensor is None:
                problems.append(f"missing tensor {key!r} (has {sorted(self.tensors)})")
            elif tuple(tensor.shape) != (n, d):
                problems.append(f"tensor {key!r} is {list(tensor.shape)}, want [{n}, {d}]")
        if problems:
            raise BankMismatchError(
                f"text bank {where} does not belong to this model ({ident['method']} on {ident['backbone']}): "
                + "; ".join(problems)
                + ". Rebuild it with `ros-fer precompute-text` for this model."
            )
        return self

    def to(self, device: str | torch.device) -> TextBank:
        return TextBank({k: v.to(device) for k, v in self.tensors.items()}, dict(self.meta))


def build_text_bank(model: FerModel) -> TextBank:
    """Encode every class text feature of `model` (in eval mode, no gradients)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            tensors = {k: torch.nn.functional.normalize(v.float(), dim=-1) for k, v in model.text_features().items()}
    finally:
        model.train(was_training)
    meta = {**model.identity(), "version": __version__, "prompts": str(model.prompts.path), "tensors": sorted(tensors)}
    return TextBank(tensors=tensors, meta=meta)
