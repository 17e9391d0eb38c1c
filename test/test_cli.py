"""`ros-fer precompute-text` through the installed console command, as a user runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
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
        "--profile",
        "2",
        "--json",
        str(report),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
    )
    assert res.returncode == 0, res.stderr[-2000:]
    r = json.loads(report.read_text())["results"][0]
    # the profiled frames: the encoder's matrix products are among the operations that took host time
    names = {row["name"] for row in r["profile"]["top_by_host_ms"]}
    assert r["profile"]["frames"] == 2 and names & {"aten::mm", "aten::addmm", "aten::linear", "aten::bmm"}, names
    assert set(r["stages_ms"]) == {"decode", "detect", "crops", "encode", "head", "track", "frame"}
    assert r["persons_found"] == 1 and r["frame_over_model_only"] > 0
    # the frame as a raw bgr8 image too (the node's Image topic: no JPEG decode), timed in the same frames
    assert r["raw_frame_ms"]["n"] == 3 and r["raw_frame_ms"]["median"] > 0 and r["raw_frame_over_model_only"] > 0
    # host crops: the crops stage on one thread too, in the same frames, beside the stage's thread count
    assert r["host_crops_one_thread_ms"]["n"] == 3 and r["host_crops_one_thread_ms"]["median"] > 0
    assert r["threads"]["host_crops"] == r["threads"]["torch_intra_op"] >= 1
    # the first frame after the start's warm-up (on the CPU nothing to warm), timed apart from the rest
    assert r["warm_up"] == {} and r["first_frame_ms"] > 0 and r["first_frame_over_median"] > 0
    assert 0 < r["start_s"] < 600  # the pipeline's build, as the node's configure runs it
    assert set(r["encoder_person_frames_per_s"]) == {"1", "3", "12", "48"} and r["versions"]["torch"]
    assert set(r["encoder_person_frames_per_s_shared_context"]) == {"1", "3", "12", "48"}
    assert all(v > 0 for v in r["encoder_person_frames_per_s_shared_context"].values())


def test_bench_times_the_one_thread_crops_right_after_a_detection(tmp_path, monkeypatch):
    """The bench cuts each frame's host crops twice, on the stage's threads and on one thread, each right after
    a detection of the frame. Timed right after the stage's own crops, the one-thread crops found the frame's
    pixels in the cache: they measured faster than two threads in 38 of 40 rows on machine B, while in the
    pipeline's process, the two in turn after a detection, two threads were faster."""
    import ros_fer.bench as bench
    from ros_fer.params import load_params
    from ros_fer.pipeline import Pipeline

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    events = []
    detect, crop, crop_batch = Pipeline.detect, Pipeline.crop, bench.crop_batch
    monkeypatch.setattr(Pipeline, "detect", lambda self, *a: events.append("detect") or detect(self, *a))
    monkeypatch.setattr(Pipeline, "crop", lambda self, *a: events.append("stage") or crop(self, *a))
    one = lambda *a, **k: events.append(k.get("workers")) or crop_batch(*a, **k)  # noqa: E731
    monkeypatch.setattr(bench, "crop_batch", one)
    params = load_params(None, {"backbone": "tiny-random", "pretrained": "", "detector": "opencv"})
    r = bench.run_bench(params, frames=3, warmup=2, persons=1, batches=(1,), boxes="known")
    assert r["host_crops_one_thread_ms"]["n"] == 3 and r["crops_on"] == "host"
    # what came just before each one-thread cut
    before = [events[i - 1] for i, e in enumerate(events) if e == 1]
    assert before == ["detect"] * 5  # five frames: two warm-up, three timed


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
    params = load_params(None, {"backbone": "tiny-random", "pretrained": "", "backend": "torch"})
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


STATES = """\
name: classroom
states:
  engaged:
    face: eyes on the worksheet
    body: leaning over the desk
    context: a maths lesson
    valence: 0.5
    arousal: 0.4
    rep155: excited
  in_pain:
    adjective: in pain
    prompt: a photo of a person wincing in pain.
  bored: a photo of a {adjective} child yawning.
"""


def test_a_label_file_through_precompute_text_infer_and_export(tmp_path):
    """A user's label file of robot states: the text bank holds open_clip's own features of the prompts
    written out by hand; `ros-fer infer` answers in the user's states; an exported folder carries them
    whole, so it loads (torch and ONNX Runtime alike) after the file is gone."""
    import open_clip
    import torch.nn.functional as F

    from ros_fer.params import load_params
    from ros_fer.runtime import build_runtime

    states = tmp_path / "states.yaml"
    states.write_text(STATES)
    bank = tmp_path / "bank.safetensors"
    common = ["--backbone", "tiny-random", "--labels", str(states)]
    res = run("precompute-text", "--method", "zeroshot", *common, "--out", str(bank))
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout)["labels"] == ["engaged", "in_pain", "bored"]
    model = tiny("zeroshot")  # the same seeded random weights the command loaded; the tokenizer is open_clip's
    face = ["a photo of a engaged face with eyes on the worksheet.", *["a photo of a person wincing in pain."]]
    face.append("a photo of a bored child yawning.")
    with torch.no_grad():
        want = F.normalize(model.clip.encode_text(open_clip.tokenize(face)), dim=-1)
    torch.testing.assert_close(TextBank.load(bank).tensors["level.face"], want, atol=1e-5, rtol=1e-5)

    out = tmp_path / "out.jsonl"
    cache = str(tmp_path / "cache")
    over = ["--set", "backbone=tiny-random", "--set", "pretrained=", "--set", f"labels={states}"]
    assets = Path(__import__("ultralytics").__file__).parent / "assets" / "zidane.jpg"
    res = run("infer", str(assets), *over, "--set", "detector=opencv", "--out", str(out), XDG_CACHE_HOME=cache)
    assert res.returncode == 0, res.stderr[-2000:]
    line = json.loads(out.read_text())
    assert line["labels"] == ["engaged", "in_pain", "bored"] and line["persons"]
    for p in line["persons"]:
        assert p["label"] in ("engaged", "in_pain", "bored", "unknown") and len(p["scores"]) == 3
    assert all(p["valence"] is None for p in line["persons"])  # two states have no valence
    assert "valence/arousal: in_pain, bored" in res.stderr  # said once at start

    folder = tmp_path / "model"
    res = run("export", "--method", "zeroshot", *common, "--out", str(folder))
    assert res.returncode == 0, res.stderr[-2000:]
    states.unlink()
    got = {}
    for backend in ("torch", "onnxruntime"):
        params = load_params(None, {"model": str(folder), "backend": backend, "precision": "fp32", "device": "cpu"})
        runtime = build_runtime(params)
        assert runtime.labels.classes == ("engaged", "in_pain", "bored")
        assert runtime.labels.rep155() == ("excited", "", "") and runtime.labels.emotions[0].valence == 0.5
        crops = np.random.default_rng(0).integers(0, 256, (2, 3, runtime.image_size, runtime.image_size, 3), np.uint8)
        got[backend] = runtime.head(runtime.backend.encode(crops), runtime.text).numpy()
    np.testing.assert_allclose(got["torch"], got["onnxruntime"], atol=1e-4)
