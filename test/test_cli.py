"""`ros-fer precompute-text` through the installed console command, as a user runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
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


def test_infer_with_an_exported_folder_scores_like_the_model_it_came_from(tmp_path):
    """`model: <exported folder>` (the runtime's bundle branch) through `ros-fer infer`, on the torch and the
    onnxruntime backends, against the in-memory model the folder was exported from."""
    import cv2
    import numpy as np
    import ultralytics

    from ros_fer.bundle import export_bundle
    from ros_fer.crops import associate, crop_batch
    from ros_fer.detection import OpenCVDetector

    model = tiny("mlper").eval()
    export_bundle(model, tmp_path / "m", ("fp32",))
    image = Path(ultralytics.__file__).parent / "assets" / "zidane.jpg"
    rgb = cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB)
    persons = associate(OpenCVDetector().detect(rgb), *rgb.shape[:2], 8)
    crops = torch.from_numpy(crop_batch(rgb, persons, model.levels, model.backbone.image_size).dense())
    with torch.no_grad():
        x = crops.permute(0, 1, 4, 2, 3).float() / 255
        mean = torch.tensor(model.backbone.mean).view(1, 1, 3, 1, 1)
        std = torch.tensor(model.backbone.std).view(1, 1, 3, 1, 1)
        expected = model((x - mean) / std).logits.softmax(-1).numpy()  # the model's own forward
    for backend in ("torch", "onnxruntime"):
        res = run(
            "infer",
            str(image),
            "--set",
            f"model={tmp_path / 'm'}",
            "--set",
            f"backend={backend}",
            XDG_CACHE_HOME=str(tmp_path / "cache"),
        )
        assert res.returncode == 0, res.stderr[-2000:]
        persons_out = json.loads(res.stdout.splitlines()[0])["persons"]
        assert len(persons_out) == len(persons) >= 1
        scores = np.array([p["scores"] for p in persons_out])
        np.testing.assert_allclose(scores, expected, atol=2e-4)  # the JSON rounds to 4 decimals


def test_text_bank_cache_is_reused_at_the_second_start(tmp_path, monkeypatch):
    import ros_fer.runtime as runtime_module
    from ros_fer.params import load_params

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    params = load_params(None, {"backbone": "tiny-random", "pretrained": ""})
    first = runtime_module.build_runtime(params)
    banks = list((tmp_path / "cache" / "ros_fer" / "text_banks").glob("*.safetensors"))
    assert len(banks) == 1
    stamp = banks[0].stat().st_mtime_ns

    def rebuilt(_model):
        raise AssertionError("the text bank was rebuilt instead of read from the cache")

    monkeypatch.setattr(runtime_module, "build_text_bank", rebuilt)
    second = runtime_module.build_runtime(params)
    assert banks[0].stat().st_mtime_ns == stamp
    assert set(second.text) == set(first.text) and all(torch.equal(second.text[k], first.text[k]) for k in first.text)
    with pytest.raises(AssertionError, match="rebuilt"):  # another label set: another bank, built anew
        runtime_module.build_runtime({**params, "labels": "rafdb"})
