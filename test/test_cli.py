"""`ros-fer precompute-text` through the installed console command, as a user runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from conftest import random_crops, tiny

from ros_fer.models import save_model
from ros_fer.text_bank import TextBank

ROS_FER = str(Path(sys.executable).with_name("ros-fer"))


def run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([ROS_FER, *args], capture_output=True, text=True, timeout=300, env={**os.environ, **env})


def test_precompute_zeroshot_bank(tmp_path):
    out = tmp_path / "zs.safetensors"
    res = run(
        "precompute-text",
        "--method",
        "zeroshot",
        "--backbone",
        "tiny-random",
        "--labels",
        "affectnet8",
        "--out",
        str(out),
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["tensors"]["classes"] == [8, 64] and summary["labels"][-1] == "contempt"
    TextBank.load(out).check(tiny("zeroshot", labels="affectnet8"))


def test_precompute_from_a_trained_checkpoint(tmp_path, targets):
    model = tiny("mlper")
    opt = torch.optim.SGD(model.trainable_parameters(), lr=0.5)
    model(random_crops(model), targets).loss.backward()
    opt.step()
    ckpt = save_model(model, tmp_path / "mlper.safetensors")
    out = tmp_path / "bank.safetensors"
    res = run("precompute-text", "--method", "mlper", "--checkpoint", str(ckpt), "--out", str(out))
    assert res.returncode == 0, res.stderr
    bank = TextBank.load(out)
    model.eval()
    assert torch.allclose(bank.tensors["classes"], model.text_features()["classes"], atol=1e-5)
    res = run("precompute-text", "--method", "mpa-fer", "--checkpoint", str(ckpt), "--out", str(out))
    assert res.returncode == 2 and "checkpoint" in res.stderr and "'mlper'" in res.stderr


def test_errors_are_one_clear_line(tmp_path):
    out = str(tmp_path / "x.safetensors")
    res = run(
        "precompute-text",
        "--method",
        "zeroshot",
        "--backbone",
        "ViT-B-32",
        "--pretrained",
        "laion2b_s34b_b79k",
        "--labels",
        "rafdb",
        "--out",
        out,
    )
    assert res.returncode == 2
    assert (
        "could not fetch pretrained weights ViT-B-32/laion2b_s34b_b79k" in res.stderr and "Traceback" not in res.stderr
    )
    res = run("precompute-text", "--method", "zeroshot", "--backbone", "tiny-random", "--labels", "nope", "--out", out)
    assert res.returncode == 2 and "unknown label set 'nope'" in res.stderr
    res = run("precompute-text", "--backbone", "tiny-random", "--out", out)
    assert res.returncode == 2 and "needs --method" in res.stderr
    assert not Path(out).exists()
