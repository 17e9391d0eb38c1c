"""The first hour of a new user, each step typed as the README has it: batch runs that lose nothing, errors
that point at flags that exist where the command was typed, overrides that are checked, files others can
read. Every test here failed on the code before it (each was run against it once)."""

import csv
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import person_result

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ROS_FER = str(BIN / "ros-fer")
ASSETS = Path(__import__("ultralytics").__file__).parent / "assets"
TINY = ["--set", "backbone=tiny-random", "--set", "detector=opencv"]


def run(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=300, cwd=cwd, env={**os.environ, **env}
    )


@pytest.fixture
def photos(tmp_path) -> Path:
    """a.jpg (good), b.jpg (random bytes), c.jpg (good), d.jpg (a JPEG cut short): a batch with bad files."""
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(ASSETS / "bus.jpg", folder / "a.jpg")
    (folder / "b.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    shutil.copy(ASSETS / "zidane.jpg", folder / "c.jpg")
    (folder / "d.jpg").write_bytes((ASSETS / "zidane.jpg").read_bytes()[:30000])
    return folder


def test_a_bad_image_in_the_middle_costs_only_itself(photos, tmp_path):
    out = tmp_path / "r.jsonl"
    res = run(ROS_FER, "infer", photos, "--out", out, *TINY, XDG_CACHE_HOME=str(tmp_path / "cache"))
    assert res.returncode == 1, res.stderr  # documented: finished, something skipped
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [Path(r["source"]).name for r in lines] == ["a.jpg", "c.jpg"]
    assert lines[0]["width"] == 810 and lines[1]["width"] == 1280  # each result is its own image's
    assert re.search(r"skipped \S*b\.jpg: .*\(decode\)", res.stderr), res.stderr
    # the truncated JPEG is refused by the node's own check (no end-of-image marker), not half-decoded
    assert re.search(r"skipped \S*d\.jpg: truncated JPEG of 30000 bytes .*\(truncated\)", res.stderr), res.stderr
    assert "2 frame(s) answered from 4 file(s); 2 skipped (decode: 1, truncated: 1)" in res.stderr
    assert "Premature end of JPEG" not in res.stderr
    help_text = run(ROS_FER, "infer", "--help").stdout
    assert "1 finished, but some frames or files were skipped" in " ".join(help_text.split())


def test_a_run_with_nothing_skipped_exits_0(tmp_path):
    res = run(ROS_FER, "infer", ASSETS / "bus.jpg", *TINY, XDG_CACHE_HOME=str(tmp_path / "cache"))
    assert res.returncode == 0 and len(res.stdout.splitlines()) == 1, res.stderr


def test_the_node_and_infer_refuse_the_same_truncated_jpeg(tmp_path):
    from types import SimpleNamespace

    from ros_fer.image_conv import ImageError, check_compressed
    from ros_fer.sources import read_image_file

    cut = (ASSETS / "zidane.jpg").read_bytes()[:30000]
    (tmp_path / "cut.jpg").write_bytes(cut)
    with pytest.raises(ImageError) as node_side:
        check_compressed(SimpleNamespace(data=cut, format="jpeg"))
    with pytest.raises(ImageError) as file_side:
        read_image_file(tmp_path / "cut.jpg")
    assert (file_side.value.reason, str(file_side.value)) == (node_side.value.reason, str(node_side.value))
    good = read_image_file(ASSETS / "zidane.jpg")
    assert np.array_equal(good, cv2.imread(str(ASSETS / "zidane.jpg")))


def test_empty_folder_and_pattern_matching_nothing_are_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not an image")
    res = run(ROS_FER, "infer", tmp_path / "empty", *TINY)
    assert res.returncode == 2 and f"folder {tmp_path / 'empty'} holds no images (looked for .bmp" in res.stderr
    res = run(ROS_FER, "infer", f"{tmp_path}/*.png", *TINY)  # quoted, as the shell leaves an unmatched glob
    assert res.returncode == 2 and f"pattern '{tmp_path}/*.png' matches no file" in res.stderr
    res = run(ROS_FER, "infer", tmp_path / "nope.jpg", *TINY)
    assert res.returncode == 2 and "does not exist" in res.stderr
    shutil.copy(ASSETS / "bus.jpg", tmp_path / "x.jpg")  # a pattern that matches runs
    res = run(ROS_FER, "infer", f"{tmp_path}/*.jpg", *TINY, XDG_CACHE_HOME=str(tmp_path / "cache"))
    assert res.returncode == 0 and len(res.stdout.splitlines()) == 1, res.stderr


@pytest.fixture
def offline_tag(monkeypatch):
    """tiny-random with a pretrained tag whose weights are neither cached nor reachable (a closed loopback port)."""
    import open_clip.pretrained as registry

    from ros_fer.backbone import register_local_backbones

    register_local_backbones()
    monkeypatch.setitem(registry._PRETRAINED, "tiny-random", {"offline_test": {"url": "https://127.0.0.1:9/w.pt"}})
    return "offline_test"


def tiny_weights(path: Path) -> Path:
    """A local open_clip weight file for tiny-random (its state dict, as torch.save writes it)."""
    import open_clip

    from ros_fer.backbone import register_local_backbones

    register_local_backbones()
    torch.save(open_clip.create_model("tiny-random", pretrained=None).state_dict(), path)
    return path


def suggestion(stderr: str) -> list[str]:
    """The arguments the error's 'Here: ...' suggests (before its first parenthesis)."""
    return shlex.split(stderr.split("Here: ", 1)[1].split(" (", 1)[0])


def test_the_offline_suggestion_of_infer_runs_as_printed(offline_tag, tmp_path, capsys, monkeypatch):
    from ros_fer.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    base = ["infer", str(ASSETS / "bus.jpg"), "--set", "backbone=tiny-random", "--set", f"pretrained={offline_tag}"]
    base += ["--set", "detector=opencv"]
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "could not fetch pretrained weights tiny-random/offline_test" in err and "--checkpoint" not in err
    args = suggestion(err)
    assert args == ["--set", "backbone_checkpoint=FILE"], err
    weights = tiny_weights(tmp_path / "tiny.pt")
    assert main(base + [a.replace("FILE", str(weights)) for a in args]) == 0  # past the weights step, offline
    assert json.loads(capsys.readouterr().out.splitlines()[0])["width"] == 810


def test_the_offline_suggestion_of_export_runs_as_printed(offline_tag, tmp_path, capsys, monkeypatch):
    from ros_fer.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "model"
    base = ["export", "--method", "zeroshot", "--format", "torch", "--out", str(out)]
    assert main([*base, "--backbone", "tiny-random", "--pretrained", offline_tag]) == 2
    args = suggestion(capsys.readouterr().err)
    assert args == ["--backbone", "tiny-random", "--checkpoint", "FILE"]
    weights = tiny_weights(tmp_path / "tiny.pt")
    assert main(base + [a.replace("FILE", str(weights)) for a in args]) == 0
    assert json.loads(capsys.readouterr().out)["out"] == str(out)


def test_train_py_suggestion_runs_as_printed(offline_tag, tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(ROOT / "training"))
    import train

    base = ["--config", "synthetic_mlper_tiny", "--out", str(tmp_path / "run"), "data.root=/nonexistent"]
    assert train.main([*base, f"model.backbone.pretrained={offline_tag}"]) == 2
    args = suggestion(capsys.readouterr().err)
    assert args == ["model.backbone.pretrained=", "model.backbone.checkpoint=FILE"]
    weights = tiny_weights(tmp_path / "tiny.pt")
    assert train.main(base + [a.replace("FILE", str(weights)) for a in args]) == 2
    err = capsys.readouterr().err  # past the weights: now it is the data that is missing
    assert "could not fetch" not in err and "/nonexistent" in err, err


def test_a_local_checkpoint_makes_the_pretrained_tag_step_aside():
    from ros_fer.params import load_params
    from ros_fer.runtime import pretrained_tag

    assert pretrained_tag(load_params(None, {"backbone_checkpoint": "/w.pt"})) is None
    assert pretrained_tag(load_params(None, {})) == "openai"  # ViT-B-32 has the default tag
    assert pretrained_tag(load_params(None, {"backbone": "tiny-random"})) is None  # no weights to have
    assert pretrained_tag(load_params(None, {"backbone": "ViT-B-32", "pretrained": "laion400m_e32"})) == "laion400m_e32"


def test_infer_parameter_typos_name_the_nearest_parameter(tmp_path):
    res = run(ROS_FER, "infer", ASSETS / "bus.jpg", "--set", "smoothin=0.5", "--set", "backbone.checkpoint=x")
    assert res.returncode == 2
    assert "'smoothin' (did you mean smoothing?)" in res.stderr
    assert "'backbone.checkpoint' (did you mean backbone_checkpoint?)" in res.stderr


def test_train_override_typos_fail_before_anything_loads(tmp_path):
    out = tmp_path / "run"
    res = run(
        sys.executable, ROOT / "training" / "train.py", "--config", "synthetic_mlper_tiny", "--out", out,
        "train.epoch=2", "model.itm.weigth=0.5",
    )  # fmt: skip
    assert res.returncode == 2
    assert "'train.epoch' (did you mean train.epochs?)" in res.stderr
    assert "'model.itm.weigth' (did you mean model.itm.weight?)" in res.stderr
    assert not out.exists()  # nothing loaded, nothing written
    from training.config import KNOWN_KEYS, load_train_config
    from training.config import resolve_config as _  # noqa: F401

    for config in (ROOT / "training" / "configs").glob("*.yaml"):  # every shipped config passes the check
        load_train_config(config)
    assert "train.max_steps" in KNOWN_KEYS


def test_export_of_a_missing_file_says_so(tmp_path):
    res = run(ROS_FER, "export", "--method", "zeroshot", "--checkpoint", tmp_path / "missing.safetensors",
              "--out", tmp_path / "m")  # fmt: skip
    assert res.returncode == 2
    assert f"--checkpoint {tmp_path / 'missing.safetensors'}: no such file" in res.stderr
    assert "need --backbone" not in res.stderr


def test_exported_files_are_readable_by_other_users(tmp_path):
    out = tmp_path / "model"
    res = subprocess.run(
        f"umask 022 && {ROS_FER} export --method zeroshot --backbone tiny-random --precision fp32 --out {out}",
        shell=True, capture_output=True, text=True, timeout=300,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    files = sorted(out.iterdir())
    assert any(f.suffix == ".safetensors" for f in files)
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, (f.name, oct(f.stat().st_mode))
    cached = [p for p in (tmp_path / "cache").rglob("*.safetensors")]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in cached)


def test_adapt_refuses_an_existing_folder_and_warns_before_its_bar(tmp_path):
    images = tmp_path / "examples"
    for state, name in (("happy", "bus.jpg"), ("sad", "zidane.jpg")):
        (images / state).mkdir(parents=True)
        shutil.copy(ASSETS / name, images / state / "1.jpg")
    out = tmp_path / "my-room"
    out.mkdir()
    (out / "keep.txt").write_text("a user's model")
    args = [ROS_FER, "adapt", "--images", images, "--model", "zeroshot", "--labels", "basic7", "--out", out]
    args += ["--set", "backbone=tiny-random", "--hold-out", "0"]
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "YOLO_CONFIG_DIR": str(tmp_path / "yolo")}
    res = run(*args, **env)
    assert res.returncode == 2 and "--out" in res.stderr and "pass --force" in res.stderr
    assert (out / "keep.txt").read_text() == "a user's model"
    res = run(*args, "--force", **env)  # detector auto, offline: the Haar fall-back warning, then the bar
    assert res.returncode == 0, res.stderr[-2000:]
    warning = res.stderr.index("ros-fer adapt: warning:")
    assert "Haar" in res.stderr[warning:].splitlines()[0]
    assert warning < res.stderr.index("adapt: encoding")
    assert stat.S_IMODE((out / "cache.safetensors").stat().st_mode) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_epochs_count_from_one_everywhere_and_the_readme_recipe_holds(own_data_chain, tmp_path):
    """The console, result.json, val.csv and log.csv agree; `train.epochs=<best epoch>` with
    `full_train_split` then trains exactly that many epochs, as the README's recipe says."""
    env, data = own_data_chain["env"], own_data_chain["data"]
    over = [f"data.root={data}", "data.labels=caers", "data.val_fraction=0.2", "train.batch_size=4"]
    over += ["train.progress=false", "train.tensorboard=false"]
    train = [sys.executable, ROOT / "training" / "train.py", "--config", "synthetic_mlper_tiny"]
    res = run(*train, "--out", tmp_path / "val", *over, "train.epochs=3", **env)
    assert res.returncode == 0, res.stderr[-2000:]
    console = int(re.search(r"best validation accuracy [\d.]+ \(epoch (\d+)\)", res.stderr).group(1))
    result = json.loads((tmp_path / "val" / "result.json").read_text())
    with open(tmp_path / "val" / "val.csv") as fh:
        val = [(int(r["epoch"]), float(r["val_acc"])) for r in csv.DictReader(fh)]
    assert [e for e, _ in val] == [1, 2, 3]
    best = max(val, key=lambda row: (row[1], -row[0]))[0]  # the first epoch with the best accuracy
    assert console == result["best_epoch"] == best
    readme = (ROOT / "README.md").read_text()
    recipe = re.search(r"`(train\.full_train_split=true train\.epochs=<that run's best epoch>)`", readme).group(1)
    full = recipe.replace("<that run's best epoch>", str(console)).split()
    res = run(*train, "--out", tmp_path / "full", *over, *full, **env)
    assert res.returncode == 0, res.stderr[-2000:]
    with open(tmp_path / "full" / "log.csv") as fh:
        epochs = {int(r["epoch"]) for r in csv.DictReader(fh)}
    assert epochs == set(range(1, console + 1))
    assert json.loads((tmp_path / "full" / "result.json").read_text())["best_epoch"] == console


def test_help_answers_before_anything_heavy_is_imported():
    code = (
        "import sys\n"
        "from ros_fer.cli import main\n"
        "for argv in (['--help'], ['infer', '--help'], ['adapt', '--help'], ['bench', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = [m for m in ('torch', 'cv2', 'open_clip', 'ultralytics', 'numpy') if m in sys.modules]\n"
        "print('heavy:', heavy, file=sys.stderr)\n"
    )
    res = run(sys.executable, "-c", code)
    assert res.returncode == 0 and "heavy: []" in res.stderr, res.stderr[-2000:]


def test_bench_table_names_backend_precision_and_the_batches_measured():
    from ros_fer.bench import table

    def result(backend, precision, rates):
        stage = {"median": 1.0, "p95": 2.0}
        stages = {k: stage for k in ("decode", "detect", "crops", "encode", "head", "track", "frame")}
        return {
            "backend": backend, "precision": precision, "device": "cpu", "detector": "opencv-haar",
            "model": "zeroshot on ViT-B-32 (random)", "persons": 1, "stages_ms": stages,
            "streamed_ms_per_frame": 1.0, "model_only_ms": stage, "frame_over_model_only": 1.0,
            "encoder_person_frames_per_s": rates,
        }  # fmt: skip

    report = {"results": [result("torch", "fp32", {"1": 5.0, "12": 6.0}), result("onnxruntime", "int8", {"1": 9.0})]}
    report["results"][1]["encoder_person_frames_per_s_shared_context"] = {"1": 11.0}  # one context crop a frame
    report["results"][0]["first_frame_ms"] = 3.25  # reports from before the first frame was timed: "-"
    report["results"][0]["raw_frame_ms"] = {"median": 0.75, "p95": 1.5}  # and before raw frames were: "-"
    head, rule, *rows = table([report])
    assert "| 1.00 (2.00) | 0.75 (1.50) | 3.25 | 1.00 |" in rows[0] and "| 1.00 (2.00) | - | - | 1.00 |" in rows[1]
    assert "| whole frame (p95) | raw bgr8 frame (p95) | first frame |" in head
    assert "person-frames/s (batch 1 / 12; frames: one context crop a frame)" in head and "8 / 48" not in head
    assert len(head.split("|")) == len(rule.split("|")) == len(rows[0].split("|"))
    assert "| torch fp32, cpu |" in rows[0] and "| onnxruntime int8, cpu |" in rows[1]
    assert rows[0].endswith("| 5.0 / 6.0 |") and rows[1].endswith("| 9.0 / - (frames: 11.0 / -) |")


def test_annotated_labels_stay_inside_the_frame():
    from ros_fer.annotate import draw
    from ros_fer.pipeline import FrameResult

    frame = np.zeros((360, 640, 3), np.uint8)
    body = np.array([600, 0, 639, 200], np.float32)  # at the right edge, top of the frame
    person = person_result(label="unknown", confidence=0.2, face_box=None, body_box=body)
    drawn = draw(frame, FrameResult([person], ("sad", "happy"), 640, 360))
    thick = max(1, round(640 / 400))
    (tw, th), base = cv2.getTextSize("#1 unknown 0.20", cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick, thick)
    grey = np.all(drawn == 128, axis=2)  # the label's filled background (unknown is grey)
    rows = np.where(grey.sum(axis=1) > 0)[0]
    widest = max(grey[r].sum() for r in rows)
    assert widest >= tw + 2, (widest, tw)  # the whole label's width is in the image
    assert rows.min() >= 0 and rows.max() < 360


def test_loopback_sets_only_the_current_fast_dds_variable():
    script = (ROOT / "scripts" / "loopback.sh").read_text()
    assert "FASTDDS_DEFAULT_PROFILES_FILE=" in script
    assert "FASTRTPS_DEFAULT_PROFILES_FILE" not in script  # deprecated: every participant would warn


def test_the_synthetic_set_is_ignored_and_sized_in_the_readme():
    res = run("git", "check-ignore", "-q", "data/synthetic/train/happy/0.png", cwd=ROOT)
    assert res.returncode == 0
    assert "930 MB" in (ROOT / "README.md").read_text()


def test_make_synthetic_help_is_whole():
    res = run(sys.executable, ROOT / "training" / "make_synthetic.py", "--help")
    text = " ".join(res.stdout.split())
    assert res.returncode == 0
    assert "so that a model using all three levels beats any single level." in text
    for flag in ("--out", "--n", "--labels", "--seed", "--cue", "--mislead"):
        line = next(line for line in res.stdout.splitlines() if line.strip().startswith(flag))
        assert len(line.split()) > 2, line  # every option says what it is


def test_the_readme_speaks_of_the_repository_alone():
    readme = (ROOT / "README.md").read_text()
    assert "../shared" not in readme and "shared/ARCHITECTURE" not in readme
    assert "docs/ARCHITECTURE.md" in readme and (ROOT / "docs" / "ARCHITECTURE.md").is_file()


def test_readme_licenses_match_the_installed_packages():
    """Each runtime dependency's license, as its own metadata declares it, is in the README's table."""
    from importlib.metadata import metadata

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Licenses", 1)[1].split("\n## ", 1)[0]
    declared = {
        "ultralytics": "AGPL-3.0",
        "open_clip_torch": "MIT",
        "onnxruntime": "MIT",
        "openvino": "Apache-2.0",
        "nncf": "Apache-2.0",
        "opencv-python": "Apache",
    }
    for package, words in declared.items():
        meta = metadata(package)
        license_text = (meta.get("License-Expression") or meta.get("License") or "") + " ".join(
            meta.get_all("Classifier") or []
        )
        assert words.split("-")[0] in license_text, (package, license_text)  # the metadata says so
        row = next(line for line in section.splitlines() if line.startswith("|") and package in line)
        assert words in row, row
    assert "YOLO weights" in section and "tracking.py" in section


def test_the_node_names_unknown_parameters_and_its_offline_suggestion_runs_as_printed(tmp_path):
    """The real fer_node (loopback-only namespace): `-p smoothin:=0.5` is named with the nearest parameter;
    offline, configure fails with a suggestion in the node's own syntax, and that suggestion, typed as
    printed with a local file, brings the node to active."""
    import select
    import signal
    import time

    from test_node import require_loopback

    require_loopback()
    site = tmp_path / "site"  # the unreachable tag, registered in the node process as the fixture does here
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import open_clip.pretrained as r\n"
        "r._PRETRAINED['tiny-random'] = {'offline_test': {'url': 'https://127.0.0.1:9/w.pt'}}\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    node = [
        "bash", str(ROOT / "scripts" / "loopback.sh"), str(BIN / "fer_node"), "--ros-args",
        "-p", "backbone:=tiny-random", "-p", "pretrained:=offline_test", "-p", "detector:=opencv",
    ]  # fmt: skip
    res = subprocess.run([*node, "-p", "smoothin:=0.5"], capture_output=True, text=True, timeout=120, env=env)
    out = res.stdout + res.stderr
    assert res.returncode == 1, out[-3000:]
    assert "unknown parameter 'smoothin' ignored (did you mean smoothing?)" in out
    assert "could not fetch pretrained weights tiny-random/offline_test" in out
    args = suggestion(out.split("fer_node: error: ", 1)[1])
    assert args == ["-p", "backbone_checkpoint:=FILE"], out[-3000:]
    weights = tiny_weights(tmp_path / "tiny.pt")
    proc = subprocess.Popen(
        [*node, *(a.replace("FILE", str(weights)) for a in args)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    seen, deadline = "", time.monotonic() + 120
    try:
        while "active: subscribed to frames" not in seen and proc.poll() is None and time.monotonic() < deadline:
            if select.select([proc.stdout], [], [], 1.0)[0]:
                seen += proc.stdout.readline()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert "active: subscribed to frames" in seen, seen[-3000:]
    assert "unknown parameter" not in seen
