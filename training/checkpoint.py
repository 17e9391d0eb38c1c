"""Training checkpoints without pickle: the model through ros_fer's save_model (safetensors + config), and
the optimizer, scheduler, RNG and loop state as safetensors tensors + a JSON skeleton. Written atomically;
the JSON goes last and names the step the other files hold, so a half-written checkpoint is never taken."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ros_fer.errors import CheckpointError
from ros_fer.models import FerModel, save_model
from ros_fer.paths import replace


def _flatten(obj, tensors: dict[str, torch.Tensor], prefix: str = "t"):
    """Replace tensors inside nested dicts/lists with {"__tensor__": key}; collect them in `tensors`."""
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}.{len(tensors)}"
        tensors[key] = obj.detach().contiguous().cpu()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[_flatten(k, tensors, prefix), _flatten(v, tensors, prefix)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [_flatten(v, tensors, prefix) for v in obj]
    return obj


def _unflatten(obj, tensors: dict[str, torch.Tensor]):
    if isinstance(obj, dict) and "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if isinstance(obj, dict) and "__dict__" in obj:
        return {_unflatten(k, tensors): _unflatten(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def save_training_state(out: Path, name: str, model: FerModel, optimizer, scheduler, state: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    save_model(model, out / f"{name}.safetensors")
    tensors: dict[str, torch.Tensor] = {}
    skeleton = {
        "optimizer": _flatten(optimizer.state_dict(), tensors, "opt"),
        "scheduler": _flatten(scheduler.state_dict(), tensors, "sched"),
        "rng": _flatten({"torch": torch.get_rng_state()}, tensors, "rng"),
    }
    tmp = out / f"{name}.state.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"global_step": str(state["global_step"])})
    replace(tmp, out / f"{name}.state.safetensors")
    tmp = out / f"{name}.state.json.tmp"
    tmp.write_text(json.dumps({**skeleton, "state": state}))
    replace(tmp, out / f"{name}.state.json")


def load_training_state(out: Path, name: str, model: FerModel, optimizer, scheduler) -> dict:
    """Restore model, optimizer, scheduler and RNG in place; return the loop state."""
    meta_file = out / f"{name}.state.json"
    if not meta_file.is_file():
        raise CheckpointError(f"nothing to resume in {out}: no {meta_file.name}")
    meta = json.loads(meta_file.read_text())
    step = meta["state"]["global_step"]
    with safe_open(str(out / f"{name}.state.safetensors"), framework="pt") as fh:
        if fh.metadata().get("global_step") != str(step):
            raise CheckpointError(
                f"{out}: optimizer state is from step {fh.metadata().get('global_step')}, loop state from {step}"
            )
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    weights = out / f"{name}.safetensors"
    with safe_open(str(weights), framework="pt") as fh:
        saved_config = json.loads(fh.metadata()["config"])
        state_dict = {k: fh.get_tensor(k) for k in fh.keys()}
    if saved_config != model.config:
        diff = sorted(k for k in set(saved_config) | set(model.config) if saved_config.get(k) != model.config.get(k))
        raise CheckpointError(f"cannot resume {weights}: its model config differs in {diff}")
    expected = model.state_dict()
    wrong = [k for k in state_dict if k not in expected or expected[k].shape != state_dict[k].shape]
    if wrong:
        raise CheckpointError(f"cannot resume {weights}: tensors {wrong[:5]} do not fit the model")
    model.load_state_dict(state_dict, strict=False)
    optimizer.load_state_dict(_unflatten(meta["optimizer"], tensors))
    scheduler.load_state_dict(_unflatten(meta["scheduler"], tensors))
    torch.set_rng_state(_unflatten(meta["rng"], tensors)["torch"])
    return meta["state"]
