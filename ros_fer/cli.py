"""The `ros-fer` command: the ROS-free front door."""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import sys
from collections.abc import Sequence

from .errors import FerError
from .models.factory import parse_overrides


def _model_from_args(args: argparse.Namespace):
    """A trained checkpoint, or a method config with backbone/labels/prompts overrides."""
    from .labels import is_label_file
    from .models import create_model, load_model
    from .models.factory import read_checkpoint_meta

    overrides = parse_overrides(args.set)
    if args.checkpoint and read_checkpoint_meta(args.checkpoint) is not None:
        relabel = bool(args.labels) and is_label_file(args.labels)  # your states, scored by the trained model
        if relabel:
            overrides["labels"] = args.labels
        model = load_model(args.checkpoint, device=args.device, overrides=overrides)
        labels = None if relabel else args.labels
        for given, have, flag in ((args.method, model.method, "method"), (labels, model.labels.name, "labels")):
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
    report = {"out": str(out), "format": args.format, "files": sorted(p.name for p in out.iterdir())}
    if "int8" in precisions and args.format != "torch":  # what the parity probe measured on this machine
        from .backends import read_onnx_meta

        report["int8_min_cosine"] = read_onnx_meta(out / "image_side.int8.onnx")["int8"]["export_min_cosine"]
    print(json.dumps(report))
    return 0


def _frames(inputs: Sequence[str]):
    """(source, index, BGR frame) from image files, folders of images, and video files."""
    from pathlib import Path

    import cv2

    from .image_conv import IMAGE_SUFFIXES

    for item in inputs:
        path = Path(item)
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() else [path]
        for file in files:
            if not file.is_file():
                raise FerError(f"input {file} does not exist")
            if file.suffix.lower() in IMAGE_SUFFIXES:
                frame = cv2.imread(str(file), cv2.IMREAD_COLOR)
                if frame is None:
                    raise FerError(f"cannot read image {file}")
                yield str(file), 0, frame
                continue
            video = cv2.VideoCapture(str(file))
            if not video.isOpened():
                raise FerError(f"cannot open {file} as an image or a video")
            index = 0
            while True:
                ok, frame = video.read()
                if not ok:
                    break
                yield str(file), index, frame
                index += 1
            video.release()


def _noting(items, pulled: collections.deque):
    """The frames of (source, index, frame) items, each noted in `pulled` as it is taken."""
    for _, index, frame in items:
        pulled.append((index, frame))
        yield frame


def _infer(args: argparse.Namespace) -> int:
    from pathlib import Path

    import cv2

    from .annotate import draw
    from .params import load_params
    from .pipeline import Pipeline

    params = load_params(args.config, parse_overrides(args.set))
    pipeline = Pipeline.from_params(params)
    for line in pipeline.warnings:
        print(f"ros-fer: warning: {line}", file=sys.stderr)
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout  # noqa: SIM115
    annotate = Path(args.annotate) if args.annotate else None
    if annotate:
        annotate.mkdir(parents=True, exist_ok=True)
    try:
        for source, items in itertools.groupby(_frames(args.inputs), key=lambda item: item[0]):
            pipeline.reset()  # tracks and smoothing belong to one video or image, never across files
            pulled: collections.deque = collections.deque()  # frames the stream has taken, oldest first
            # Streamed: on a GPU the next frame's decode and upload overlap this frame's model.
            for result in pipeline.stream(_noting(items, pulled), color="bgr"):
                index, frame = pulled.popleft()
                out.write(json.dumps({"source": source, "frame": index, **result.to_dict()}) + "\n")
                out.flush()
                if annotate:
                    name = f"{Path(source).stem}_{index:06d}.jpg"
                    cv2.imwrite(str(annotate / name), draw(frame, result))
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def _adapt(args: argparse.Namespace) -> int:
    from .adapt import adapt, describe
    from .params import load_params

    overrides = parse_overrides(args.set)
    if args.labels:
        overrides["labels"] = args.labels
    params = load_params(args.config, overrides)
    summary = adapt(
        args.model,
        args.images,
        args.out,
        params,
        hold_out=args.hold_out,
        finetune_epochs=args.finetune_epochs,
        seed=args.seed,
        precisions=tuple(args.precision.split(",")),
        progress=not args.no_progress,
    )
    print(describe(summary), file=sys.stderr)
    print(json.dumps(summary))
    return 0


def _model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", choices=["mlper", "mpa-fer", "zeroshot"], help="method (its default config)")
    p.add_argument("--config", help="a config name under config/models/ or a YAML path (instead of --method)")
    p.add_argument("--backbone", help="open_clip model name, e.g. ViT-B-32, ViT-B-16, ViT-L-14, tiny-random")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--pretrained", help="open_clip pretrained tag, e.g. openai (fetched once, cached)")
    weights.add_argument("--checkpoint", help="a trained ros_fer checkpoint, or a local open_clip weight file")
    p.add_argument(
        "--labels", help="label set (rafdb, affectnet8, ferplus, caers, ...) or a label file of your states (YAML)"
    )
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
    p.add_argument(
        "--precision",
        default="fp32",
        help="comma-separated: fp32, fp16, int8 (ONNX graphs; int8 is checked against fp32 here and adds fp32)",
    )
    p.add_argument("--out", required=True, help="output folder, e.g. models/mlper-rafdb/")
    p.set_defaults(func=_export)
    p = sub.add_parser("infer", help="run the perception pipeline on images, folders or videos (no ROS)")
    p.add_argument("inputs", nargs="+", help="image files, folders of images, video files")
    p.add_argument("--config", default=None, help="a params file like config/fer.yaml (default: built-in defaults)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="parameter override (repeatable)")
    p.add_argument("--annotate", metavar="DIR", help="write each frame with boxes and labels drawn into DIR")
    p.add_argument("--out", help="write the JSON lines to this file instead of standard output")
    p.set_defaults(func=_infer)

    p = sub.add_parser("adapt", help="few-shot: adapt a model to a few labelled images per state (Tip-Adapter)")
    p.add_argument("--images", required=True, help="a folder with one folder of images per state (+ boxes.json)")
    p.add_argument("--model", required=True, help="a method config name, a trained checkpoint or an exported folder")
    p.add_argument("--out", required=True, help="the adapted model folder to write, e.g. models/my-room/")
    p.add_argument("--labels", help="the label set or label file (YAML) when --model is a config name")
    p.add_argument("--config", default=None, help="a params file like config/fer.yaml (backbone, detector, ...)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="parameter override (repeatable)")
    p.add_argument("--hold-out", type=float, default=0.25, help="share of each state's images that picks alpha, beta")
    p.add_argument("--finetune-epochs", type=int, default=0, help="also train the cache keys (Tip-Adapter-F), e.g. 20")
    p.add_argument("--precision", default="fp32", help="ONNX graphs to export when --model is not a folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_adapt)

    p = sub.add_parser("bench", help="time the pipeline's stages and the encoder's throughput (JSON)")
    p.add_argument("--backend", default="torch", choices=["torch", "onnxruntime", "tensorrt", "all"])
    p.add_argument("--backbone", default="ViT-B-32")
    p.add_argument("--pretrained", default="", help="a pretrained tag (default: random weights; speed is the same)")
    p.add_argument("--model", help="a config name, exported folder or checkpoint instead of zero-shot")
    p.add_argument("--config", default=None, help="a params file like config/fer.yaml")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--persons", type=int, nargs="+", default=[1], help="persons in the frame, e.g. 1 4 8")
    p.add_argument(
        "--detectors", nargs="+", default=["auto"], choices=["auto", "yolo", "opencv"], help="detectors to time"
    )
    p.add_argument("--detector-runtime", default="auto", choices=["auto", "torch", "onnx"])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 3, 12, 48], help="encoder throughput batch sizes")
    p.add_argument("--person-weights", help="YOLO weights for the yolo detector (e.g. yolo11n-pose.yaml: random)")
    p.add_argument(
        "--boxes",
        default="detected",
        choices=["detected", "known"],
        help="crops from the detector's boxes, or from the frame's known people (the detector still runs)",
    )
    p.add_argument(
        "--cuda-graphs", choices=["auto", "on", "off"], help="override the config's cuda_graphs (before/after)"
    )
    p.add_argument("--frames", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--json", metavar="OUT", help="also write the report to this file")
    p.set_defaults(func=lambda a: __import__("ros_fer.bench", fromlist=["main_bench"]).main_bench(a))

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
