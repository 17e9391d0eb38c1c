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


def test_infer_on_images_folder_and_video(tmp_path):
    import cv2
    import ultralytics

    assets = Path(ultralytics.__file__).parent / "assets"
    frame = cv2.resize(cv2.imread(str(assets / "zidane.jpg")), (640, 360))
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 360))
    for _ in range(3):
        writer.write(frame)
    writer.release()
    out, annotated = tmp_path / "out.jsonl", tmp_path / "annotated"
    res = run(
        "infer",
        str(assets),
        str(video),
        "--set",
        "backbone=tiny-random",
        "--set",
        "pretrained=",
        "--out",
        str(out),
        "--annotate",
        str(annotated),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
    )
    assert res.returncode == 0, res.stderr[-2000:]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(Path(r["source"]).name, r["frame"]) for r in lines] == [
        ("bus.jpg", 0),
        ("zidane.jpg", 0),
        ("clip.avi", 0),
        ("clip.avi", 1),
        ("clip.avi", 2),
    ]
    video_ids = [[p["track_id"] for p in r["persons"]] for r in lines[2:]]
    assert video_ids[1] == video_ids[2] and min(video_ids[2]) >= 0  # tracked within the video
    assert len(list(annotated.glob("*.jpg"))) == 5


def test_bench_writes_its_report(tmp_path):
    report = tmp_path / "bench.json"
    res = run(
        "bench",
        "--backbone",
        "tiny-random",
        "--frames",
        "3",
        "--warmup",
        "1",
        "--json",
        str(report),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
    )
    assert res.returncode == 0, res.stderr[-2000:]
    r = json.loads(report.read_text())["results"][0]
    assert set(r["stages_ms"]) == {"decode", "detect", "crops", "encode", "head", "track", "frame"}
    assert r["persons_found"] == 1 and r["frame_over_model_only"] > 0
    assert set(r["encoder_person_frames_per_s"]) == {"1", "3", "12", "48"} and r["versions"]["torch"]
