"""The perception parameters, in one place: names, types, defaults and descriptions. The node declares
them as ROS parameters with these descriptors; `ros-fer infer` reads the same config/fer.yaml."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .overrides import key_paths, nearest
from .yaml_loader import load_yaml

NODE = "fer_node"


@dataclass(frozen=True)
class Param:
    name: str
    default: object
    description: str
    choices: tuple[str, ...] = ()


PARAMS: tuple[Param, ...] = (
    Param(
        "model", "zeroshot", "a method config name (config/models/), an exported model folder, or a trained checkpoint"
    ),
    Param("backbone", "ViT-B-32", "open_clip backbone when `model` is a config name"),
    Param(
        "pretrained",
        "openai",
        "open_clip pretrained tag (fetched once by open_clip, then cached); '' = random weights; ignored when "
        "backbone_checkpoint is set, and the default tag by a backbone without pretrained weights (tiny-random)",
    ),
    Param("backbone_checkpoint", "", "a local open_clip weight file (offline robots); `pretrained` then steps aside"),
    Param("text_bank", "", "a precomputed text bank; '' = the exported folder's, or computed once at start and cached"),
    Param(
        "labels",
        "basic7",
        "label set when `model` is a config name: a built-in set (config/labels.yaml), a label file of your "
        "states under config/states/ (robot) or a path to one (YAML)",
    ),
    Param("levels", ["face", "body", "context"], "crop levels when `model` is a config name"),
    Param(
        "backend",
        "auto",
        "image encoder backend; auto: measured once per machine and model (torch fp32, torch bf16 weights and "
        "OpenVINO bf16 where the CPU has native bf16, else OpenVINO fp32, onnxruntime int8; CUDA: torch fp16), the "
        "fastest within its accuracy floor, cached",
        ("auto", "torch", "onnxruntime", "openvino", "tensorrt"),
    ),
    Param("device", "auto", "cpu, cuda, cuda:N or auto (cuda when available)"),
    Param(
        "precision",
        "auto",
        "fp32, fp16, bf16 (torch weights; OpenVINO, on CPUs with native bf16), int8 (onnxruntime: 7-bit weights "
        "checked against fp32 at load), auto (backend auto: the probe's choice; CUDA fp16; CPU onnxruntime: int8, "
        "falling back to fp32 with a warning where it fails that check; CPU openvino: bf16 where native, else fp32; "
        "CPU torch: fp32)",
        ("auto", "fp32", "fp16", "bf16", "int8"),
    ),
    Param(
        "cuda_graphs",
        "auto",
        "torch backend: CUDA graphs for the encoder, head and softmax (one per person bucket: 1, 2, 4, 8, then "
        "multiples of 8) and the YOLO pose forward (one per frame size); auto = on for CUDA, off on the CPU",
        ("auto", "on", "off"),
    ),
    Param(
        "detector",
        "auto",
        "auto: the YOLO pose model of person_weights (fetched once, cached; GPU where present), OpenCV's Haar "
        "faces with one warning where it cannot be had; yolo: YOLO or an error; opencv: Haar faces",
        ("auto", "yolo", "opencv"),
    ),
    Param(
        "person_weights",
        "yolo11n-pose.pt",
        "ultralytics weights: a pose model (faces from head keypoints) or a COCO model (person class); a path "
        "or an asset name, looked up in ~/.cache/ros_fer/yolo and fetched there once",
    ),
    Param("face_weights", "", "ultralytics weights of a face model that refines the faces (optional)"),
    Param(
        "detector_runtime",
        "auto",
        "how YOLO runs on the CPU: torch, onnx (ultralytics' ONNX export on onnxruntime, cached), openvino "
        "(ultralytics' OpenVINO export, cached) or auto (the fastest as measured, once per machine and weights); "
        "CUDA always runs torch",
        ("auto", "torch", "onnx", "openvino"),
    ),
    Param(
        "detector_imgsz",
        640,
        "YOLO's input size (a multiple of 32): 320-480 detects 2-3.5x faster on the CPU and sees people at 1-3 m, "
        "but misses small, far people; boxes and keypoints come back in frame coordinates at every size",
    ),
    Param("keypoint_score", 0.5, "a pose keypoint counts for the face box when its score is at least this"),
    Param("detector_confidence", 0.4, "minimum detection score"),
    Param("hog_bodies", False, "with the OpenCV detector, also find bodies with its HOG people detector"),
    Param("profile_faces", False, "with the OpenCV detector, also look for faces in profile (about 4x slower)"),
    Param("detector_max_side", 640, "with the OpenCV detector, frames are scaled down to this many pixels first"),
    Param("max_persons", 8, "at most this many persons per frame, closest first"),
    Param(
        "warmup_frame",
        "640x480",
        "the camera's frame size, WIDTHxHEIGHT: on CUDA with cuda_graphs, YOLO's graph for this size and the "
        "encoder's graph for every person bucket up to max_persons are captured while the node configures (and "
        "before `ros-fer infer`'s first frame), so no frame pauses for a capture; '' = capture at first use",
    ),
    Param("smoothing", 0.6, "weight of the past in the per-track moving average of probabilities (0 = none)"),
    Param("hysteresis", 0.1, "a track's label changes only when another class leads it by more than this"),
    Param("unknown_threshold", 0.35, "below this smoothed confidence the label is 'unknown'"),
    Param("track_buffer", 30, "frames a lost track is kept"),
    Param("valence_arousal", True, "publish valence/arousal from the label set's mapping (NaN when off)"),
    Param("max_rate", 15.0, "most frames per second processed; newer frames replace waiting ones"),
    Param(
        "max_pixels",
        4096 * 4096,
        "frames with more pixels are refused on arrival, compressed ones from their header before decoding",
    ),
    Param("max_expression_publishers", 32, "REP-155: at most this many per-face expression publishers at once"),
    Param("compressed", False, "subscribe to sensor_msgs/CompressedImage instead of Image"),
    Param("debug_image", True, "publish ~/debug_image (only while someone subscribes)"),
    Param(
        "autostart",
        True,
        "fer_node configures and activates itself at start; false: it waits, unconfigured, for a lifecycle "
        "manager (configure loads the model, activate subscribes, deactivate pauses, cleanup frees the model)",
    ),
)
DEFAULTS = {p.name: p.default for p in PARAMS}
# What `ros2 param set` changes on a running node, from the next frame on; the rest needs a reload
# (lifecycle cleanup + configure, or a restart).
RUNTIME = (
    "smoothing",
    "hysteresis",
    "unknown_threshold",
    "max_persons",
    "detector_confidence",
    "keypoint_score",
    "valence_arousal",
    "max_rate",
    "max_pixels",
    "debug_image",
)


def load_params(path: str | Path | None = None, overrides: dict | None = None) -> dict:
    """Defaults, then the `fer_node.ros__parameters` of a params file, then overrides; unknown keys fail."""
    values = dict(DEFAULTS)
    if path:
        with open(path, encoding="utf-8") as fh:
            data = load_yaml(fh) or {}
        section = data.get(NODE, data.get("/**", {})).get("ros__parameters", {})
        values.update(section)
    values.update(overrides or {})
    # `--set backbone.checkpoint=X` parses as a nested key: the parameters are flat, so name it as typed
    dotted = [f"{k}.{path}" for k, v in values.items() if isinstance(v, dict) for path in key_paths(v)]
    unknown = sorted(set(values) - set(DEFAULTS)) + dotted[:1]
    if unknown:
        named = "; ".join(f"{name!r}{nearest(name, DEFAULTS)}" for name in unknown)
        raise ConfigError(f"unknown parameter(s): {named}; known: {', '.join(sorted(DEFAULTS))}")
    for p in PARAMS:
        if values[p.name] is None and isinstance(p.default, str):
            values[p.name] = ""  # `key=` on the command line, `key:` in YAML
        if p.choices and values[p.name] not in p.choices:
            raise ConfigError(f"parameter {p.name} must be one of {list(p.choices)}, got {values[p.name]!r}")
        if isinstance(p.default, float) and isinstance(values[p.name], int) and not isinstance(values[p.name], bool):
            values[p.name] = float(values[p.name])
        if type(values[p.name]) is not type(p.default):
            raise ConfigError(f"parameter {p.name} must be a {type(p.default).__name__}, got {values[p.name]!r}")
    return values


def unknown_overrides(given, declared) -> list[str]:
    """Names given to the node (`-p name:=value`, a params file) that it does not declare: ROS ignores them
    silently, so the node names them. `declared(name)`: the node's own check (use_sim_time and the like)."""
    return sorted(n for n in given if n not in DEFAULTS and not declared(n) and not n.startswith("qos_overrides."))
