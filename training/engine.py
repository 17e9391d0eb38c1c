"""The training loop: one process, or several under torchrun with DistributedDataParallel (gloo on CPU,
NCCL on CUDA); mixed precision on CUDA; checkpoints every N steps and every epoch; resume; best by val."""

from __future__ import annotations

import csv
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler

from ros_fer.errors import ConfigError
from ros_fer.models import FerModel, create_model

from .checkpoint import load_training_state, save_training_state
from .config import model_overrides
from .datasets.adapters import load_split
from .datasets.multilevel import MultiLevelCrops, fill_split_boxes


@torch.no_grad()
def predict(model: FerModel, dataset, batch: int, device, amp_dtype=None, workers: int = 0):
    """Predicted classes [N], image features [N, F] and class probabilities [N, C] over a dataset of
    (crops, label), in order."""
    model.eval()
    text = model.text_features()
    probs, feats = [], []
    for x, _ in DataLoader(dataset, batch_size=max(1, batch), num_workers=workers):
        with torch.autocast(torch.device(device).type, dtype=amp_dtype, enabled=amp_dtype is not None):
            image = model.encode_image(x.to(device))
            probs.append(model.classify(image, text).float().softmax(-1).cpu())
        f = image.get("global", image.get("levels"))
        feats.append(f.reshape(len(x), -1).float().cpu())
    prob = torch.cat(probs).numpy()
    return prob.argmax(-1), torch.cat(feats).numpy(), prob


class EpochSampler(Sampler[int]):
    """A seeded permutation per epoch (or class-balanced draws, as DAN trains on AffectNet), cut to whole
    global batches and dealt round-robin to the ranks; `start` skips batches already trained (resume)."""

    def __init__(
        self, labels: list[int], batch: int, rank: int = 0, world: int = 1, seed: int = 0, balanced: bool = False
    ):
        self.labels, self.batch, self.rank, self.world, self.seed, self.balanced = (
            labels,
            batch,
            rank,
            world,
            seed,
            balanced,
        )
        self.epoch, self.start = 0, 0

    def _order(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        n = len(self.labels)
        if not self.balanced:
            return torch.randperm(n, generator=g)
        counts = np.bincount(self.labels)
        weights = torch.tensor([1.0 / counts[y] for y in self.labels], dtype=torch.double)
        return torch.multinomial(weights, n, replacement=True, generator=g)

    def steps(self) -> int:
        return len(self.labels) // (self.batch * self.world)

    def __iter__(self):
        order = self._order()[: self.steps() * self.batch * self.world]
        mine = order[self.rank :: self.world].tolist()
        return iter(mine[self.start * self.batch :])

    def __len__(self) -> int:
        return (self.steps() - self.start) * self.batch


def setup_distributed(device: str = "auto") -> tuple[int, int, torch.device]:
    """(rank, world size, device). `device` (train.device): auto (CUDA where present), cuda or cpu; under
    torchrun, CUDA runs NCCL with one GPU per process, the CPU runs gloo."""
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"train.device must be auto, cpu or cuda, got {device!r}")
    cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda asked for, but torch sees no CUDA device; use train.device=cpu")
    if "RANK" not in os.environ:
        return 0, 1, torch.device("cuda" if cuda else "cpu")
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", 0))
    if cuda:
        gpus, per_node = torch.cuda.device_count(), int(os.environ.get("LOCAL_WORLD_SIZE", world))
        if per_node > gpus:
            raise ConfigError(
                f"{per_node} training processes on this node but {gpus} CUDA device(s): one GPU per process. "
                f"Use torchrun --nproc_per_node {gpus} (or fewer), or train.device=cpu for gloo on the CPU."
            )
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        return rank, world, torch.device("cuda", local)
    dist.init_process_group("gloo")
    return rank, world, torch.device("cpu")


def make_optimizer(params, t: dict) -> torch.optim.Optimizer:
    kind = t.get("optimizer", "sgd")
    if kind == "sgd":
        return torch.optim.SGD(
            params, lr=t["lr"], momentum=t.get("momentum", 0.9), weight_decay=t.get("weight_decay", 0.0)
        )
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=t["lr"], weight_decay=t.get("weight_decay", 0.0))
    raise ValueError(f"unknown optimizer {kind!r} (sgd, adamw)")


def make_scheduler(optimizer, t: dict):
    s = t.get("scheduler", {"kind": "exponential", "gamma": 0.9})
    if s["kind"] == "exponential":  # lr x gamma after each epoch (MLPER: 0.9)
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=s.get("gamma", 0.9))
    if s["kind"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t["epochs"])
    raise ValueError(f"unknown scheduler {s['kind']!r} (exponential, cosine)")


class Trainer:
    def __init__(self, cfg: dict, out: Path, resume: bool = False, log=print):
        self.cfg, self.out, self.log = cfg, Path(out), log
        t = cfg["train"]
        self.rank, self.world, self.device = setup_distributed(str(t.get("device", "auto")))
        torch.manual_seed(t.get("seed", 0))
        if t.get("deterministic", False):  # bit-identical reruns (with a fixed thread count); slower kernels
            torch.use_deterministic_algorithms(True)
        self.model: FerModel = create_model(cfg["model"]["config"], model_overrides(cfg), device=self.device)
        labels = self.model.labels
        data = cfg["data"]
        self.train_split = load_split(data, "train", labels)
        self.val_split = load_split(data, "val", labels)
        # The papers' final runs: the whole train split (validation images included) for the epoch count a
        # validation run chose (set train.epochs to it); no validation, best.safetensors = the last epoch.
        self.full_train_split = bool(t.get("full_train_split", False))
        if self.full_train_split:
            self.train_split.samples = self.train_split.samples + self.val_split.samples
            self.val_split.samples = []
        for split in (self.train_split, self.val_split):
            counts = fill_split_boxes(split, data, log=self.log) if self.rank == 0 else None
            if self.world > 1:  # rank 0 detected and cached; the others read the cache
                dist.barrier()
                if self.rank:
                    fill_split_boxes(split, data, log=lambda *_: None)
            if self.rank == 0:
                self.log(f"{split.summary()}; boxes {counts}")
        self.train_split.require_images(f"data {data.get('root', data.get('dataset'))}")
        bb = self.model.backbone
        aug = t.get("augment", {})
        self.train_set = MultiLevelCrops(
            self.train_split.samples, self.model.levels, bb.image_size, bb.mean, bb.std, aug, t.get("seed", 0)
        )
        self.val_set = MultiLevelCrops(self.val_split.samples, self.model.levels, bb.image_size, bb.mean, bb.std)
        self.batch = int(t["batch_size"]) // self.world  # batch_size is global
        if self.batch * self.world != int(t["batch_size"]):
            raise ValueError(f"batch_size {t['batch_size']} does not split over {self.world} processes")
        self.sampler = EpochSampler(
            [s.label for s in self.train_split.samples],
            self.batch,
            self.rank,
            self.world,
            t.get("seed", 0),
            bool(data.get("balanced", False)),
        )
        params = self.model.trainable_parameters()
        n_params = sum(p.numel() for p in params)
        if self.rank == 0:
            self.log(
                f"trainable parameters: {n_params:,} ({self.model.trainable_bytes() / 1e6:.3f} MB) of "
                f"{sum(p.numel() for p in self.model.parameters()):,}"
            )
        self.optimizer = make_optimizer(params, t)
        self.scheduler = make_scheduler(self.optimizer, t)
        self.state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_acc": -1.0, "best_epoch": 0}
        if resume and (self.out / "last.state.json").is_file():
            self.state = load_training_state(self.out, "last", self.model, self.optimizer, self.scheduler)
            if self.rank == 0:
                self.log(f"resumed from step {self.state['global_step']} (in epoch {self.state['epoch'] + 1})")
        self.net = self.model
        if self.world > 1:
            self.net = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.writer = None
        self.amp = bool(t.get("amp", True)) and self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if self.amp and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)

    # -- logging ----------------------------------------------------------------------------
    def _log_row(self, row: dict, name: str = "log.csv") -> None:
        """One row of a CSV log (log.csv: a training step; val.csv: an epoch's validation), same scalars to
        TensorBoard. Each file keeps the columns of its first row."""
        if self.rank != 0:
            return
        path = self.out / name
        new = not path.is_file()
        with open(path, "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
        if self.writer is not None:
            for key, value in row.items():
                if key not in ("global_step", "epoch") and isinstance(value, float):
                    self.writer.add_scalar(key, value, row["global_step"])

    def _save(self, name: str) -> None:
        if self.rank == 0:
            save_training_state(self.out, name, self.model, self.optimizer, self.scheduler, self.state)
        if self.world > 1:
            dist.barrier()

    # -- loop -------------------------------------------------------------------------------
    def validate(self) -> float:
        pred, _, _ = predict(
            self.model,
            self.val_set,
            self.batch,
            self.device,
            self.amp_dtype if self.amp else None,
            self.cfg["train"].get("num_workers", 0),
        )
        labels = np.array([s.label for s in self.val_set.samples])
        return float((pred == labels).mean()) if len(labels) else 0.0

    def fit(self) -> dict:
        t = self.cfg["train"]
        self.out.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            (self.out / "config.json").write_text(json.dumps(self.cfg, indent=2))
        self.writer = None
        if self.rank == 0 and t.get("tensorboard", True):
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tensorboard"))
        save_every, max_steps = int(t.get("save_every_steps", 0)), int(t.get("max_steps", 0))
        epochs = int(t["epochs"])
        workers = int(t.get("num_workers", 0))
        progress = None
        try:
            from tqdm import tqdm

            progress = tqdm if self.rank == 0 and t.get("progress", True) else None
        except ImportError:
            pass
        started, images = time.perf_counter(), 0
        if max_steps and self.state["global_step"] >= max_steps:  # resuming a run that already reached it
            return self._finish(started, images)
        self._build_prototypes()
        while self.state["epoch"] < epochs:
            epoch = self.state["epoch"]
            self.sampler.epoch, self.sampler.start = epoch, self.state["step_in_epoch"]
            self.train_set.set_epoch(epoch)
            loader = DataLoader(
                self.train_set,
                batch_size=self.batch,
                sampler=self.sampler,
                num_workers=workers,
                drop_last=True,
                pin_memory=self.device.type == "cuda",
            )
            self.net.train()
            batches = progress(loader, desc=f"epoch {epoch + 1}/{epochs}", leave=False) if progress else loader
            for x, y in batches:
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
                    out = self.net(x, y)
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(out.loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.state["global_step"] += 1
                self.state["step_in_epoch"] += 1
                images += len(y) * self.world
                row = {
                    "global_step": self.state["global_step"],
                    "epoch": epoch + 1,  # counted from 1, as people count, everywhere a user reads it
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "loss": float(out.loss.detach()),
                }
                row.update({f"loss/{k}": float(v.detach()) for k, v in out.losses.items()})
                row.update({f"extra/{k}": float(v) for k, v in out.extras.items()})
                self._log_row(row)
                if not math.isfinite(row["loss"]):
                    raise FloatingPointError(f"loss is {row['loss']} at step {self.state['global_step']}")
                if save_every and self.state["global_step"] % save_every == 0:
                    self._save("last")
                if max_steps and self.state["global_step"] >= max_steps:
                    self._save("last")
                    return self._finish(started, images)
            self.state["epoch"] += 1
            self.state["step_in_epoch"] = 0
            self.scheduler.step()
            if self.full_train_split:  # nothing held out to choose by: the last epoch is the model
                if self.rank == 0:
                    self.state["best_epoch"] = epoch + 1
                    save_training_state(self.out, "best", self.model, self.optimizer, self.scheduler, self.state)
                self._save("last")
                continue
            acc = self.validate() if self.rank == 0 else 0.0
            if self.rank == 0:
                self._log_row({"global_step": self.state["global_step"], "epoch": epoch + 1, "val_acc": acc}, "val.csv")
                self.log(f"epoch {epoch + 1}/{epochs}: val accuracy {acc:.4f}")
            if acc > self.state["best_acc"] and self.rank == 0:
                self.state["best_acc"], self.state["best_epoch"] = acc, epoch + 1
                save_training_state(self.out, "best", self.model, self.optimizer, self.scheduler, self.state)
            self._save("last")
        return self._finish(started, images)

    @torch.no_grad()
    def _build_prototypes(self) -> None:
        """MPA-FER with `prototypes: precomputed`: class means of the frozen encoder's features over the whole
        training set, un-augmented, once before the first epoch (a resumed run has them in its checkpoint).
        Every rank runs the same pass, so the all-reduced sums stay in step."""
        model = self.model
        if not model.needs_prototypes():
            return
        bb = model.backbone
        plain = MultiLevelCrops(self.train_split.samples, model.levels, bb.image_size, bb.mean, bb.std)
        loader = DataLoader(plain, batch_size=self.batch, num_workers=int(self.cfg["train"].get("num_workers", 0)))
        was_training = model.training
        model.eval()
        for x, y in loader:
            model.accumulate_prototypes(x.to(self.device), y.to(self.device))
        model.train(was_training)
        counts = (model.proto_count / self.world).long().tolist()  # every rank added the whole set
        self.log(f"prototypes: {sum(counts)} training images, per class {counts}")

    def _finish(self, started: float, images: int) -> dict:
        seconds = time.perf_counter() - started
        result = {**self.state, "seconds": seconds, "images_per_s": images / max(seconds, 1e-9), "out": str(self.out)}
        result["full_train_split"] = self.full_train_split
        if self.rank == 0:
            (self.out / "result.json").write_text(json.dumps(result, indent=2))
            if self.writer is not None:
                self.writer.close()
        if self.world > 1:
            dist.barrier()
            dist.destroy_process_group()
        return result
