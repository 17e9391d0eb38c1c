"""Training throughput: images/s of a full training step (all losses, backward, optimiser) against the
bare image backbone's forward+backward on the same batch of crops.

    python training/throughput.py --config mlper --backbone ViT-B-32 --batch 16 --steps 3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from ros_fer.machine import machine  # noqa: E402
from ros_fer.models import create_model  # noqa: E402


def timed(fn, steps: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="mlper")
    ap.add_argument("--backbone", default="ViT-B-32")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument(
        "--amp",
        choices=["auto", "bf16", "fp16", "off"],
        default="auto",
        help="autocast as train.py (auto: bf16 on CUDA)",
    )
    args = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    amp = ("bf16" if device == "cuda" else "off") if args.amp == "auto" else args.amp
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)

    def autocast():
        return torch.autocast(device, dtype=dtype, enabled=dtype is not None)

    model = create_model(args.config, {"backbone": {"name": args.backbone, "pretrained": None}}, device=device).train()
    size, levels = model.backbone.image_size, len(model.levels)
    x = torch.randn(args.batch, levels, 3, size, size, device=device)
    y = torch.randint(0, len(model.labels), (args.batch,), device=device)
    opt = torch.optim.SGD(model.trainable_parameters(), lr=1e-6, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = model(x, y).loss
        loss.backward()
        opt.step()

    visual = model.clip.visual

    def bare():
        # Backward to the input too: a frozen encoder (MPA-FER) has no parameter gradient, yet its prompts need
        # the same backward pass through every layer.
        visual.zero_grad(set_to_none=True)
        images = x.flatten(0, 1).detach().requires_grad_(True)
        with autocast():
            out = visual(images)
        out.float().sum().backward()

    t_step, t_bare = timed(step, args.steps), timed(bare, args.steps)
    report = {
        "config": args.config,
        "backbone": args.backbone,
        "device": device,
        "batch": args.batch,
        "levels": levels,
        "train_images_per_s": args.batch / t_step,
        "bare_backbone_images_per_s": args.batch / t_bare,
        "train_step_over_bare": t_step / t_bare,
        "amp": amp,
        "machine": machine(),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
