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


def _precompute_text(args: argparse.Namespace) -> int:
    from .models import create_model, load_model
    from .models.factory import read_checkpoint_meta
    from .text_bank import build_text_bank

    overrides = parse_overrides(args.set)
    if args.checkpoint and read_checkpoint_meta(args.checkpoint) is not None:
        model = load_model(args.checkpoint, device=args.device, overrides=overrides)
        for given, have, what in ((args.method, model.method, "method"), (args.labels, model.labels.name, "label set")):
            if given and given != have:
                raise FerError(f"--{what.split()[0]} {given!r} but checkpoint {args.checkpoint} is {have!r}")
    else:
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
    bank = build_text_bank(model)
    path = bank.save(args.out)
    shapes = {k: list(v.shape) for k, v in bank.tensors.items()}
    print(
        json.dumps(
            {
                "out": str(path),
                "method": model.method,
                "backbone": model.backbone.spec.name,
                "weights": model.backbone.weights,
                "labels": bank.labels,
                "tensors": shapes,
            }
        )
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ros-fer", description="Emotion perception with vision-language models.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("precompute-text", help="write the class text features a model needs at run time")
    p.add_argument("--method", choices=["mlper", "mpa-fer", "zeroshot"], help="method (its default config)")
    p.add_argument("--config", help="a config name under config/models/ or a YAML path (instead of --method)")
    p.add_argument("--backbone", help="open_clip model name, e.g. ViT-B-32, ViT-L-14, tiny-random")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--pretrained", help="open_clip pretrained tag, e.g. openai (fetched once, cached)")
    weights.add_argument("--checkpoint", help="a trained ros_fer checkpoint, or a local open_clip weight file")
    p.add_argument("--labels", help="label set, e.g. rafdb, affectnet8, ferplus, caers")
    p.add_argument("--prompts", help="prompt file name under config/prompts/ or a YAML path")
    p.add_argument("--levels", help="comma-separated crop levels, e.g. face,body,context")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.set_defaults(func=_precompute_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "precompute-text" and not (args.method or args.config or args.checkpoint):
        parser.error("precompute-text needs --method, --config or a trained --checkpoint")
    try:
        return args.func(args)
    except FerError as exc:
        print(f"ros-fer: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
