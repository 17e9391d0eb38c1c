"""The `ros-fer` command: the ROS-free front door."""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import sys
from collections.abc import Sequence

from .errors import FerError, WeightsUnavailableError
from .overrides import parse_overrides

EXIT_ERROR = 2  # nothing was done: a wrong argument, input or file
EXIT_SKIPPED = 1  # `infer` answered what it could read, and skipped (and named) some frames or files
# What each command takes to run with a local weight file, where pretrained weights cannot be fetched.
OFFLINE_HINTS = {
    "params": (
        "Here: --set backbone_checkpoint=FILE (a local {backbone} weight file; the pretrained tag then steps "
        "aside), or --set backbone=tiny-random (random weights, to try the plumbing)."
    ),
    "model": (
        "Here: --backbone {backbone} --checkpoint FILE (a local weight file), or --backbone tiny-random (random "
        "weights, to try the plumbing)."
    ),
}


def _model_from_args(args: argparse.Namespace):
    """A trained checkpoint, or a method config with backbone/labels/prompts overrides."""
    from pathlib import Path

    from .labels import is_label_file
    from .models import create_model, load_model
    from .models.factory import read_checkpoint_meta

    overrides = parse_overrides(args.set)
    if args.checkpoint and not Path(args.checkpoint).is_file():
        raise FerError(f"--checkpoint {args.checkpoint}: no such file")
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


def _infer(args: argparse.Namespace) -> int:
    from pathlib import Path

    import cv2
    from tqdm import tqdm

    from .annotate import draw
    from .params import load_params
    from .pipeline import Pipeline
    from .sources import Bag, BagWriter, Skipped, frames, is_bag, resolve_inputs

    params = load_params(args.config, parse_overrides(args.set))
    files = resolve_inputs(args.inputs)  # a missing path or an empty folder fails now, before the model loads
    bag_options = {"topic": args.topic, "start": args.start, "end": args.end, "every": args.every}
    bags = [f for f in files if is_bag(f)]
    frames_in_bags = 0
    for f in bags:  # each bag's topic checked now, before the model loads; read again frame by frame later
        with Bag(f, **bag_options) as bag:
            frames_in_bags += -(-len(bag) // max(1, args.every))
    if args.out_bag and len(bags) != len(files):
        raise FerError("--out-bag records the /emotion of recordings: give only bags as inputs")
    pipeline = Pipeline.from_params(params)
    for line in pipeline.notes:  # the first lines: what runs, and why
        print(f"ros-fer: {line}", file=sys.stderr)
    if line := Pipeline.describe_warm_up(pipeline.warm_up(params["warmup_frame"])):
        print(f"ros-fer: {line}", file=sys.stderr)
    for line in pipeline.warnings:
        print(f"ros-fer: warning: {line}", file=sys.stderr)
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout  # noqa: SIM115
    annotate = Path(args.annotate) if args.annotate else None
    if annotate:
        annotate.mkdir(parents=True, exist_ok=True)
    recorder = BagWriter(args.out_bag, copy_camera=not args.no_camera_copy) if args.out_bag else None
    bar = tqdm(total=frames_in_bags, unit="frame", file=sys.stderr, disable=args.no_progress or not bags)
    skipped: list[Skipped] = []
    answered = 0

    def readable(items, pulled: collections.deque):
        """The frames of one file, each noted in `pulled` as the stream takes it; a frame that cannot be
        read is named and counted as the stream reaches it, and the run goes on."""
        for item in items:
            if isinstance(item, Skipped):
                skipped.append(item)
                bar.update(1)
                tqdm.write(f"ros-fer: skipped {item}", file=sys.stderr)
                continue
            pulled.append(item)
            yield item.image

    try:
        for _, items in itertools.groupby(
            frames(files, params["max_pixels"], bag_options), key=lambda item: item.source
        ):
            pipeline.reset()  # tracks and smoothing belong to one video, image or bag, never across files
            pulled: collections.deque = collections.deque()  # frames the stream has taken, oldest first
            # Streamed: on a GPU the next frame's decode and upload overlap this frame's model.
            for result in pipeline.stream(readable(items, pulled), color="bgr"):
                frame = pulled.popleft()
                line = {"source": frame.source, "frame": frame.index}
                if frame.header is not None:  # a bag's frame: its message's stamp and frame_id
                    stamp = frame.header.stamp
                    line.update(stamp={"sec": int(stamp.sec), "nanosec": int(stamp.nanosec)})
                    line.update(frame_id=frame.header.frame_id, topic=frame.raw[0].topic)
                out.write(json.dumps({**line, **result.to_dict()}) + "\n")
                out.flush()  # each result as it is produced: a later failure loses none of them
                if recorder is not None:
                    recorder.write(frame, result, result.timings_ms["total"] / 1e3)
                answered += 1
                bar.update(1 if frame.header is not None else 0)
                if annotate:
                    name = f"{Path(frame.source).stem}_{frame.index:06d}.jpg"
                    cv2.imwrite(str(annotate / name), draw(frame.image, result))
    finally:
        bar.close()
        if recorder is not None:
            recorder.close()  # a bag of the frames answered so far, whatever ended the run
        if out is not sys.stdout:
            out.close()
    reasons = collections.Counter(s.reason for s in skipped)
    why = ", ".join(f"{r}: {n}" for r, n in sorted(reasons.items()))
    summary = f"ros-fer: {answered} frame(s) answered from {len(files)} file(s)"
    print(summary + (f"; {len(skipped)} skipped ({why})" if skipped else ""), file=sys.stderr)
    if recorder is not None:
        print(f"ros-fer: /emotion recorded in {recorder.path}", file=sys.stderr)
    return EXIT_SKIPPED if skipped else 0


def _adapt(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .adapt import adapt, describe
    from .params import load_params

    overrides = parse_overrides(args.set)
    if args.labels:
        overrides["labels"] = args.labels
    params = load_params(args.config, overrides)
    if (args.images is None) == (args.bag is None) or (args.bag is None) != (args.ranges is None):
        raise FerError("give the examples as --images DIR, or as --bag RECORDING with --ranges FILE")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.force:
        raise FerError(f"--out {out} exists and is not empty (it may hold a model); pass --force to replace it")
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
        bag=args.bag,
        ranges=args.ranges,
        topic=args.topic,
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
    p = sub.add_parser(
        "infer",
        help="run the perception pipeline on images, folders or videos (no ROS)",
        description="One JSON line per frame, written as each is answered. A file or frame that cannot be read "
        "(unreadable, truncated, too large) is named on standard error, counted, and skipped; the run goes on.",
        epilog=f"exit status: 0 every frame answered; {EXIT_SKIPPED} finished, but some frames or files were "
        f"skipped (named above the summary); {EXIT_ERROR} nothing run (a wrong argument, a missing input, an "
        "empty folder, a model that cannot load)",
    )
    p.add_argument("inputs", nargs="+", help="image files, folders of images, video files, glob patterns")
    p.add_argument("--config", default=None, help="a params file like config/fer.yaml (default: built-in defaults)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="parameter override (repeatable)")
    p.add_argument("--annotate", metavar="DIR", help="write each frame with boxes and labels drawn into DIR")
    p.add_argument("--out", help="write the JSON lines to this file instead of standard output")
    bag = p.add_argument_group("ROS 2 bags (a rosbag2 folder, or its .mcap / .db3 file)")
    bag.add_argument("--topic", help="the camera topic (default: the bag's only Image/CompressedImage topic)")
    bag.add_argument("--start", type=float, help="seconds from the bag's start to begin at")
    bag.add_argument("--end", type=float, help="seconds from the bag's start to stop at")
    bag.add_argument("--every", type=int, default=1, help="answer one camera message in N")
    bag.add_argument(
        "--out-bag",
        metavar="PATH",
        help="record /emotion (ros_fer_msgs/EmotionArray, stamped with the camera's headers) and the camera topic "
        "into a new rosbag2 folder: PATH.db3 SQLite, otherwise MCAP",
    )
    bag.add_argument("--no-camera-copy", action="store_true", help="--out-bag: /emotion only")
    bag.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_infer)

    p = sub.add_parser("adapt", help="few-shot: adapt a model to a few labelled images per state (Tip-Adapter)")
    p.add_argument("--images", help="a folder with one folder of images per state (+ boxes.json)")
    p.add_argument("--bag", help="a ROS 2 recording (rosbag2 folder, .mcap or .db3) instead of --images")
    p.add_argument("--ranges", help="with --bag: a YAML file of time ranges per state, e.g. happy: [[12.0, 15.5]]")
    p.add_argument("--topic", help="with --bag: the camera topic (default: the bag's only image topic)")
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
    p.add_argument("--force", action="store_true", help="replace what an existing --out folder holds")
    p.set_defaults(func=_adapt)

    p = sub.add_parser("bench", help="time the pipeline's stages and the encoder's throughput (JSON)")
    p.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "torch", "onnxruntime", "openvino", "tensorrt", "all"],
        help="all: the default (auto) beside every candidate its probe considers here, one run",
    )
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
    p.add_argument(
        "--detector-runtime",
        nargs="+",
        default=["auto"],
        choices=["auto", "torch", "onnx", "openvino", "all"],
        help="YOLO's runtime on the CPU; several (or all: auto beside each) are timed side by side",
    )
    p.add_argument("--detector-imgsz", type=int, default=640, help="YOLO's input size (320, 480, 640, ...)")
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
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="PASSES",
        help="run every configuration this many times, every other pass in reverse order; the comparisons "
        "take each configuration's median over the passes (a shared machine's slow spells and a row's place "
        "in the run then fall on all alike)",
    )
    p.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="FRAMES",
        help="also run the whole frame this many times under torch's profiler and report the costliest "
        "operations per frame (host and GPU time, calls, kernel launches): where the time goes",
    )
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
    except WeightsUnavailableError as exc:
        hint = OFFLINE_HINTS["model" if args.command in ("precompute-text", "export") else "params"]
        print(f"ros-fer: error: {exc.with_hint(hint)}", file=sys.stderr)
    except FerError as exc:
        print(f"ros-fer: error: {exc}", file=sys.stderr)
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
