"""The `ros-fer` command: the ROS-free front door."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import yaml

from .errors import FerError


def parse_overrides(pairs: Sequence[str]) -> dict:
    """`a.b=value` pairs (values parsed as YAML) into a nested dict."""
    out: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise FerError(f"override {pair!r} is not key=value")
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return out


def _model_from_args(args: argparse.Namespace):
    """A trained checkpoint, or a method config with backbone/labels/prompts overrides."""
    from .models import create_model, load_model
    from .models.factory import read_checkpoint_meta

    overrides = parse_overrides(args.set)
    if args.checkpoint and read_checkpoint_meta(args.checkpoint) is not None:
        model = load_model(args.checkpoint, device=args.device, overrides=overrides)
        for given, have, flag in ((args.method, model.method, "method"), (args.labels, model.labels.name, "labels")):
            if given and given != have:
                raise FerError(f"--{flag} {given!r} but checkpoint {args.checkpoint} is {have!r}")
        return model
    if args.backbone:
        overrides.setdefault("backbone", {}).update(
            {"name": args.backbone, "pretrained": args.pretrained, "checkpoint": args.checkpoint}
        )
    elif args.pretrained or args.checkpoint:
        raise FerError("--pretrained/--checkpoint (open_clip weights) need --backbone NAME")
    for key in ("labels", "prompts"):
        if getattr(args, key):
            overrides[key] = getattr(args, key)
    if args.levels:
        overrides["levels"] = args.levels.split(",")
    model = create_model(args.config or args.method, overrides, device=args.device)
    if model.method == "mpa-fer":
        print("warning: no trained MPA-FER checkpoint given; the soft prompts are untrained", file=sys.stderr)
    return model


def _precompute_text(args: argparse.Namespace) -> int:
    from .text_bank import build_text_bank

    model = _model_from_args(args)
    bank = build_text_bank(model)
    path = bank.save(args.out)
    summary = {
        "out": str(path),
        "method": model.method,
        "backbone": model.backbone.spec.name,
        "weights": model.backbone.weights,
        "labels": bank.labels,
        "tensors": {k: list(v.shape) for k, v in bank.tensors.items()},
    }
    print(json.dumps(summary))
    return 0


def _export(args: argparse.Namespace) -> int:
    from .bundle import export_bundle, load_bundle

    model = _model_from_args(args).eval()
    precisions = tuple(args.precision.split(","))
    out = export_bundle(model, args.out, precisions, onnx=args.format != "torch")
    if args.format == "tensorrt":  # build (and parity-check) the engine now, not on the robot's first frame
        for precision in precisions:
            load_bundle(out).backend("tensorrt", "cuda", precision)
    print(json.dumps({"out": str(out), "format": args.format, "files": sorted(p.name for p in out.iterdir())}))
    return 0


def _model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", choices=["mlper", "mpa-fer", "zeroshot"], help="method (its default config)")
    p.add_argument("--config", help="a config name under config/models/ or a YAML path (instead of --method)")
    p.add_argument("--backbone", help="open_clip model name, e.g. ViT-B-32, ViT-B-16, ViT-L-14, tiny-random")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--pretrained", help="open_clip pretrained tag, e.g. openai (fetched once, cached)")
    weights.add_argument("--checkpoint", help="a trained ros_fer checkpoint, or a local open_clip weight file")
    p.add_argument("--labels", help="label set, e.g. rafdb, affectnet8, ferplus, caers")
    p.add_argument("--prompts", help="prompt file name under config/prompts/ or a YAML path")
    p.add_argument("--levels", help="comma-separated crop levels, e.g. face,body,context")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--device", default="cpu")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ros-fer", description="Emotion perception with vision-language models.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("precompute-text", help="write the class text features a model needs at run time")
    _model_arguments(p)
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.set_defaults(func=_precompute_text)

    p = sub.add_parser("export", help="write a model folder the node loads (checkpoint, text bank, ONNX)")
    _model_arguments(p)
    p.add_argument("--format", choices=["onnx", "tensorrt", "torch"], default="onnx")
    p.add_argument("--precision", default="fp32", help="comma-separated: fp32, fp16 (ONNX graphs / engines)")
    p.add_argument("--out", required=True, help="output folder, e.g. models/mlper-rafdb/")
    p.set_defaults(func=_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("precompute-text", "export") and not (args.method or args.config or args.checkpoint):
        parser.error(f"{args.command} needs --method, --config or a trained --checkpoint")
    try:
        return args.func(args)
    except FerError as exc:
        print(f"ros-fer: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
