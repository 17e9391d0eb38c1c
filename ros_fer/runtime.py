"""Turn perception parameters into the runtime parts: an image-side backend, a head and a checked text
bank. `model` may be an exported folder, a trained checkpoint or a method config name. For the latter
two, the text bank is computed once and cached, so no text encoder runs per frame."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import open_clip
import torch

from .backbone import register_local_backbones
from .backends import (
    INT8_MIN_COSINE,
    Int8ParityError,
    OnnxRuntimeBackend,
    OpenVinoBackend,
    TensorRTBackend,
    TorchBackend,
    current_graph,
    export_onnx,
    parity_path,
    read_onnx_meta,
)
from .backends.openvino import keep_signal_stack
from .backends.tensorrt import import_tensorrt
from .bundle import MANIFEST, load_bundle
from .errors import ConfigError, FerError
from .head import Head
from .labels import LabelSet, load_label_set
from .machine import native_bf16
from .measured import cached_choice, key, openvino_version, package_version, said_timed_again, time_settled
from .models import FerModel, create_model, load_model
from .models.factory import read_checkpoint_meta
from .params import DEFAULTS
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
    """auto: fp16 on CUDA; on the CPU int8 with onnxruntime (checked for parity, else fp32), bf16 with
    openvino where the CPU has native bf16 (else fp32), fp32 with torch."""
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "fp16"
    if backend == "openvino":
        return "bf16" if native_bf16() else "fp32"
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
    choice: dict | None = None  # backend: auto, what the probe measured and chose (`choose_runtime`)


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


def model_from_params(params: dict, device: str) -> FerModel:
    """The torch model `params["model"]` names: a trained checkpoint, or a method config with the params'
    backbone, labels and levels."""
    model = params["model"]
    local = params["backbone_checkpoint"] or None
    if Path(model).is_file():
        if read_checkpoint_meta(model) is None:
            raise ConfigError(f"model {model} is neither a ros_fer checkpoint nor an exported folder")
        weights = {"backbone": {"pretrained": None, "checkpoint": local}} if local else None  # offline: a local file
        return load_model(model, device=device, overrides=weights).eval()
    backbone = {"name": params["backbone"], "pretrained": pretrained_tag(params), "checkpoint": local}
    overrides = {"backbone": backbone, "labels": params["labels"], "levels": list(params["levels"])}
    return create_model(model, overrides, device=device).eval()


def pretrained_tag(params: dict) -> str | None:
    """The params' pretrained tag, or None where it steps aside: a local `backbone_checkpoint` replaces it,
    and the default tag means nothing to a backbone open_clip has no pretrained weights for (tiny-random)."""
    if params["backbone_checkpoint"] or not params["pretrained"]:
        return None
    if params["pretrained"] == DEFAULTS["pretrained"]:
        register_local_backbones()
        if not open_clip.list_pretrained_tags_by_model(params["backbone"]):
            return None
    return params["pretrained"]


def _bank(params: dict, model: FerModel) -> TextBank:
    if params["text_bank"]:
        return TextBank.load(params["text_bank"]).check(model)
    path = cache_dir() / "text_banks" / f"{key(model.identity())}.safetensors"
    if path.is_file():
        return TextBank.load(path).check(model)
    bank = build_text_bank(model)  # once; later starts read the cache
    bank.save(path)
    return bank


# backend: auto. The candidates that can run here, each timed on the model actually loaded and checked against
# torch fp32 on the same crops (minimum per-crop cosine); the fastest one above its floor wins. Measured once
# per machine, model and package versions, then read from the cache.
COSINE_FLOORS = {"fp32": 0.9999, "fp16": 0.999, "bf16": 0.999, "int8": INT8_MIN_COSINE}
PROBE_PERSONS = (1, 4)  # the frames timed: one person (3 crops) and four (9 crops)


def runtime_candidates(
    device: str,
    isa,
    precision: str = "auto",
    graphs_of=("fp32", "fp16", "int8"),
    openvino: bool | None = None,
    nncf: bool | None = None,
):
    """(backend, precision) pairs `backend: auto` considers here, torch fp32 (the reference) first on the CPU.
    CUDA: torch fp16 (with CUDA graphs where on); TensorRT only when asked for by name. CPU: torch fp32,
    torch bf16 where the CPU has native bf16, OpenVINO (installed, and the model has or can export the fp32
    graph) in bf16 where the CPU has native bf16 and in fp32 elsewhere, and in int8 where NNCF is installed
    too, onnxruntime int8 where the model has (or can export) that graph. An explicit precision keeps only its
    own candidates. openvino / nncf: whether those are installed (None: look)."""
    if device.startswith("cuda"):
        return [("torch", "fp16" if precision == "auto" else precision)]
    bf16 = native_bf16(isa)
    pairs = [("torch", "fp32")] + ([("torch", "bf16")] if bf16 else [])
    if (openvino_version() is not None if openvino is None else openvino) and "fp32" in graphs_of:
        pairs.append(("openvino", "bf16" if bf16 else "fp32"))
        if package_version("nncf") is not None if nncf is None else nncf:
            pairs.append(("openvino", "int8"))
    pairs += [("onnxruntime", "int8")] if "int8" in graphs_of else []
    if precision != "auto":
        pairs = [pair for pair in pairs if pair[1] == precision] or [("torch", precision)]
    return pairs


def pick(figures: list[dict]) -> dict:
    """The fastest measured candidate at or above its cosine floor (a rejected one never wins)."""
    fit = [f for f in figures if f.get("ms") is not None and f["min_cosine"] >= COSINE_FLOORS[f["precision"]]]
    if not fit:
        raise ConfigError(f"backend auto: no candidate passed its accuracy floor here: {figures}")
    return min(fit, key=lambda f: f["ms"])


def _cosines(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> float:
    rows = [
        torch.nn.functional.cosine_similarity(got[k].float().flatten(1), ref[k].float().flatten(1), dim=1) for k in ref
    ]
    return float(torch.nan_to_num(torch.cat(rows), nan=-1.0).min())  # a NaN feature never passes a floor


def probe_frames(levels, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(crops, index) of the sample frame (real people) at each PROBE_PERSONS count."""
    from .crops import sample_crops

    return [(batch.images, batch.index) for batch in (sample_crops(p, levels, size) for p in PROBE_PERSONS)]


def probe_runtimes(make, pairs, levels, size: int) -> tuple[dict, dict]:
    """Each candidate built and compared with the first (torch fp32) on the sample frame's crops (minimum
    per-crop cosine), then all timed there in turn (`time_settled`: a close call timed again); (the choice, the
    backends built)."""
    from .machine import describe_cpu

    frames = probe_frames(levels, size)
    figures, built, reference = [], {}, None
    for kind, prec in pairs:
        row = {"backend": kind, "precision": prec, "ms": None, "min_cosine": None}
        try:
            backend = make(kind, prec)
        except FerError as exc:  # int8 failing its export parity, a graph the folder lacks: not a candidate
            figures.append({**row, "rejected": str(exc)})
            continue
        outs = [backend.encode(crops, index) for crops, index in frames]
        reference = reference or outs  # torch fp32 comes first
        row["min_cosine"] = round(min(_cosines(o, r) for o, r in zip(outs, reference, strict=True)), 6)
        if row["min_cosine"] < COSINE_FLOORS[prec]:
            row["rejected"] = f"min cosine {row['min_cosine']} < {COSINE_FLOORS[prec]}"
        built[(kind, prec)] = backend
        figures.append(row)
    calls = {pair: [lambda c=c, i=i, b=b: b.encode(c, i) for c, i in frames] for pair, b in built.items()}
    eligible = {(f["backend"], f["precision"]) for f in figures if not f.get("rejected")}  # what `pick` may take
    timed, settled = time_settled(calls, eligible)
    for pair, per_frame in timed.items():
        row = next(f for f in figures if (f["backend"], f["precision"]) == pair)
        row["ms"] = round(sum(per_frame), 2)
        row["ms_per_frame"] = {str(p): round(ms, 2) for p, ms in zip(PROBE_PERSONS, per_frame, strict=True)}
    best = pick(figures)
    choice = {"backend": best["backend"], "precision": best["precision"], "probed": True}
    if settled:  # a close call: these two timed again, alone
        choice["timed_again"] = [" ".join(pair) for pair in settled]
    return {**choice, "machine": describe_cpu(), "persons": list(PROBE_PERSONS), "figures": figures}, built


def choose_runtime(make, identity: dict, device: str, precision: str, graphs_of, levels, size: int):
    """`backend: auto`: (the chosen backend, what was measured). One candidate: taken as it is. Else the cached
    choice for this machine, model and versions, or a probe (a few seconds, once): each candidate timed on
    the sample frame's crops and compared with torch fp32, the fastest above its floor taken."""
    from .machine import cpu_info

    pairs = runtime_candidates(device, cpu_info()["isa"], precision, graphs_of)
    if len(pairs) == 1:
        return make(*pairs[0]), {"backend": pairs[0][0], "precision": pairs[0][1], "probed": False, "figures": []}
    built: dict = {}

    def measure() -> dict:
        choice, made = probe_runtimes(make, pairs, levels, size)
        built.update(made)
        return choice

    what = {"model": identity, "device": device, "candidates": pairs}
    choice = cached_choice("runtime", what, measure)
    pair = (choice["backend"], choice["precision"])
    return built.get(pair) or make(*pair), choice


def describe_choice(choice: dict | None) -> str:
    """One line for the logs and `ros-fer infer`: what `backend: auto` chose and from what figures."""
    if not choice:
        return ""
    chosen = f"{choice['backend']} {choice['precision']}"
    if not choice.get("probed"):
        return f"backend auto: {chosen} (the one candidate here)"
    rows = ", ".join(
        f"{f['backend']} {f['precision']} "
        + (f"{f['ms']:.0f} ms, cosine {f['min_cosine']:.4f}" if f.get("ms") is not None else "not built")
        + (" (rejected)" if f.get("rejected") else "")
        for f in choice["figures"]
    )
    when = f"measured at the first start, cached in {choice['cached']}" if choice.get("cached") else "measured now"
    return f"backend auto: {chosen} on {choice['machine']}; {when}: {rows}{said_timed_again(choice)}"


def build_runtime(params: dict) -> Runtime:
    device = resolve_device(params["device"])
    kind, asked = params["backend"], params["precision"]
    graphs = graphs_on(params, device)
    warnings: list[str] = []
    if kind == "tensorrt":
        import_tensorrt()
    target = Path(params["model"])
    if (target / MANIFEST).is_file():
        bundle = load_bundle(target, bank=params["text_bank"] or None)
        graphs_of = tuple(bundle.manifest["onnx"])

        def make(k: str, p: str):
            return bundle.backend(k, device, p, cuda_graphs=graphs)

        identity = bundle.manifest["identity"]
        parts = (bundle.head, bundle.text(), _label_set(bundle.manifest), bundle.levels, bundle.image_size)
        desc = f"{identity['method']} bundle {target}"
    else:
        model = model_from_params(params, device if kind in ("torch", "auto") else "cpu")
        bank = _bank(params, model)
        graphs_of = ("fp32", "fp16", "int8")  # exported on demand, cached

        def make(k: str, p: str):
            if k == "torch":
                return TorchBackend(model, device, p, graphs)
            if k == "onnxruntime":
                return OnnxRuntimeBackend(_cached_onnx(model, p), device)
            if k == "openvino":  # OpenVINO lowers precision itself; fp32 ONNX is the exact source
                return OpenVinoBackend(_cached_onnx(model, "fp32"), p, device)
            reference = lambda: TorchBackend(model.to(device), device, "fp32").encode  # noqa: E731
            onnx = _cached_onnx(model, "fp32")  # TensorRT lowers precision itself
            return TensorRTBackend(onnx, cache_dir() / "engines", p, reference=reference, device=device)

        identity = model.identity()
        parts = (model.head(), bank.tensors, model.labels, model.levels, model.backbone.image_size)
        desc = f"{identity['method']} on {identity['backbone']} ({identity['weights']})"
    choice = None
    if kind == "auto":
        backend, choice = choose_runtime(make, identity, device, asked, graphs_of, parts[3], parts[4])
    else:
        precision = resolve_precision(asked, device, kind)
        if asked == "auto" and precision == "int8" and "int8" not in graphs_of:
            precision = "fp32"  # auto takes the best graph the folder has
        backend = _parity_fallback(lambda p: make(kind, p), precision, asked == "auto", warnings)
    head, text, labels, levels, size = parts
    text = {k: v.to(backend.device) for k, v in text.items()}
    keep_signal_stack()  # the probe's OpenVINO candidates, freed in any order, left it unmapped (see there)
    return Runtime(backend, head, text, labels, levels, size, desc, warnings, choice)


def _cached_onnx(model: FerModel, precision: str) -> Path:
    """The image side exported once per model identity and precision, then reused."""
    onnx = cache_dir() / "onnx" / f"{key(model.identity())}.{precision}.onnx"
    stale = not onnx.is_file() or not current_graph(read_onnx_meta(onnx), model)
    if precision == "int8":  # an int8 graph of an older export carries no parity reference
        stale = stale or not parity_path(onnx).is_file()
    if stale:  # int8 quantises the cached fp32 graph where there is one (export_onnx checks it is this model's)
        export_onnx(model, onnx, precision, fp32_graph=onnx.with_name(f"{key(model.identity())}.fp32.onnx"))
    return onnx
