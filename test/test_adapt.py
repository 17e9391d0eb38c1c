"""The few-shot cache head (Tip-Adapter) and `ros-fer adapt`'s parts. The end-to-end adaptation of a trained
image side (16 shots beat zero-shot; the adapted folder on every backend) is in test_training.py, beside
the training run it needs."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors import safe_open

from ros_fer.adapt import Examples, fit_cache, list_images, split_held_out, state_of_folder
from ros_fer.bundle import load_bundle
from ros_fer.errors import ConfigError
from ros_fer.head import Head, cache_query
from ros_fer.labels import load_label_set


def unit(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def test_cache_head_logits_by_hand():
    """Tip-Adapter's equation written out per entry: logits_c = zero-shot_c + alpha * sum_n exp(-beta (1 -
    cos(f, k_n))) [y_n = c], with the zero-shot cosine head's logit_scale * cos(f, t_c)."""
    f = [[1.0, 0.0, 0.0], [0.6, 0.8, 0.0]]
    text = [[1.0, 1.0, 0.0], [0.0, 0.0, 2.0]]  # two classes, not unit length: the head normalises
    keys = [unit([1, 0, 0]), unit([0, 1, 0]), unit([1, 1, 1])]
    labels = [0, 1, 1]
    scale, alpha, beta = 10.0, 0.7, 3.0
    expected = np.zeros((2, 2))
    for b, fb in enumerate(f):
        for c in range(2):
            zero_shot = scale * float(unit(fb) @ unit(text[c]))
            pairs = zip(keys, labels, strict=True)
            cache = sum(math.exp(-beta * (1 - float(unit(fb) @ k))) for k, y in pairs if y == c)
            expected[b, c] = zero_shot + alpha * cache
    head = Head("cosine", ("classes",), scale).with_cache(alpha, beta)
    assert head.kind == "cache" and head.base == "cosine" and head.zero_shot() == Head("cosine", ("classes",), scale)
    tensors = {
        "classes": torch.tensor(text),
        "cache.keys": torch.tensor(np.stack(keys), dtype=torch.float32),
        "cache.values": torch.eye(2)[labels],
    }
    got = head({"global": torch.tensor(f)}, tensors)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
    # through its saved spec (a manifest), and a spec written before cache heads existed
    assert Head.from_dict(json.loads(json.dumps(head.to_dict()))) == head
    assert Head.from_dict({"kind": "cosine", "text_keys": ["classes"], "logit_scale": 2.0}).base == ""


def test_cache_query_of_a_levels_head_averages_the_level_cosines():
    """For zero-shot CLIP's per-level features, one key holds every level: the dot product of two queries is
    the mean of the per-level cosines."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 3, 5, generator=g), torch.randn(1, 3, 5, generator=g)
    qa, qb = cache_query({"levels": a}, "levels"), cache_query({"levels": b}, "levels")
    by_hand = np.mean([float(unit(a[0, i]) @ unit(b[0, i])) for i in range(3)])
    assert float(qa @ qb.t()) == pytest.approx(by_hand, abs=1e-6)
    assert float(qa.norm()) == pytest.approx(1.0, abs=1e-6)
    glob = cache_query({"global": torch.tensor([[3.0, 4.0], [0.0, 2.0]])}, "cosine")
    torch.testing.assert_close(glob, torch.tensor([[0.6, 0.8], [0.0, 1.0]]))
    assert Head("global_local", ("classes",), 1.0, top_k=4).with_cache(1.0, 1.0).zero_shot().top_k == 4


def test_cache_head_needs_a_base():
    with pytest.raises(ConfigError, match="base must be one of"):
        Head("cache", ("classes",), 1.0)


def test_held_out_split_per_state():
    targets = np.array([0] * 16 + [1] * 4 + [2])
    train, held = split_held_out(targets, 0.25, seed=0)
    assert sorted(np.concatenate([train, held]).tolist()) == list(range(21))
    assert [int((targets[held] == c).sum()) for c in range(3)] == [4, 1, 0]  # one-image states hold none out


def _examples(n_per_class: int, signal: float, seed: int = 0) -> Examples:
    """Three classes; the zero-shot logits always vote for class 0, the query carries the class."""
    rng = np.random.default_rng(seed)
    targets = np.repeat(np.arange(3), n_per_class)
    centres = np.eye(3, 8)
    query = centres[targets] * signal + rng.normal(0, 0.3, (len(targets), 8))
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    logits = np.tile([1.0, 0.0, 0.0], (len(targets), 1))
    return Examples(
        [str(i) for i in range(len(targets))],
        torch.tensor(logits, dtype=torch.float32),
        torch.tensor(query, dtype=torch.float32),
        torch.tensor(targets),
    )


def test_fit_cache_uses_the_cache_only_where_it_helps():
    """alpha and beta come from the held-out images: a cache that carries the class wins them over a zero-shot
    head stuck on one class; where the cache cannot help, alpha 0 (the zero-shot head) keeps its accuracy."""
    fit = fit_cache(_examples(8, signal=2.0), 3, scale=100.0)
    assert fit["accuracy_zero_shot"] == pytest.approx(1 / 3) and fit["accuracy_adapted"] > 0.9 and fit["alpha"] > 0
    assert fit["keys"].shape == (24, 8) and fit["values"].sum(0).tolist() == [8, 8, 8]  # every image is cached
    fit = fit_cache(_examples(8, signal=0.0), 3, scale=100.0)  # a cache of noise never beats the text here
    assert fit["accuracy_adapted"] >= fit["accuracy_zero_shot"]  # alpha 0 (the zero-shot head) is on the grid
    one = fit_cache(_examples(1, signal=2.0), 3, scale=100.0)  # nothing to hold out: the default weights
    assert one["held_out"] == 0 and one["accuracy_adapted"] is None and one["alpha"] == pytest.approx(1.0)


def test_class_folders_name_states_by_key_or_adjective(tmp_path):
    labels = load_label_set("caers")
    assert state_of_folder("Happy", labels) == labels.index("happiness")
    assert state_of_folder("anger", labels) == labels.index("anger")
    with pytest.raises(ConfigError, match=r"folder 'joyful' names no state of label set 'caers'.*happiness \(happy\)"):
        state_of_folder("joyful", labels)
    (tmp_path / "sad").mkdir()
    (tmp_path / "sad" / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="holds no images in state folders"):
        list_images(tmp_path, labels)


def test_a_cache_that_does_not_fit_its_folder_is_named(tmp_path):
    """A cache file copied from another model: the error names the file, the tensor and the shape wanted."""
    from conftest import tiny

    from ros_fer.bundle import export_bundle, write_cache

    model = tiny("zeroshot")
    out = export_bundle(model, tmp_path / "m", onnx=False)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["head"] = model.head().with_cache(1.0, 2.0).to_dict()
    manifest["cache"] = "cache.safetensors"
    (out / "manifest.json").write_text(json.dumps(manifest))
    width = len(model.levels) * model.backbone.embed_dim
    write_cache(out / "cache.safetensors", torch.zeros(4, width), torch.eye(7)[:4], {})
    assert load_bundle(out).cache["cache.keys"].shape == (4, width)
    write_cache(out / "cache.safetensors", torch.zeros(4, model.backbone.embed_dim), torch.eye(7)[:4], {})
    with pytest.raises(ConfigError, match=rf"cache .*cache.safetensors.*'cache.keys' is \[4, 64\], want .*{width}\]"):
        load_bundle(out)


def test_adapting_an_exported_folder_copies_it_and_an_adapted_one_adapts_again(tmp_path, capsys):
    """--model an exported folder: the adapted copy beside it, the source untouched; one real photograph per
    state (nothing to hold out: the default weights, said so); adapting the adapted folder starts again from its
    zero-shot head."""
    import cv2
    from conftest import photo, tiny

    from ros_fer.bundle import export_bundle
    from ros_fer.cli import main

    source = export_bundle(tiny("zeroshot", labels="caers"), tmp_path / "zs", onnx=False)
    before = (source / "manifest.json").read_text()
    shots = tmp_path / "shots"
    for folder, name in (("Happy", "zidane.jpg"), ("sad", "bus.jpg")):
        (shots / folder).mkdir(parents=True)
        cv2.imwrite(str(shots / folder / name), cv2.cvtColor(photo(name), cv2.COLOR_RGB2BGR))
    (shots / "README.txt").write_text("not an image")  # beside the state folders: not looked at
    (shots / "sad" / "notes.txt").write_text("not an image")  # inside one: counted
    common = ["--set", "detector=opencv", "--set", "device=cpu", "--no-progress"]
    assert main(["adapt", "--images", str(shots), "--model", str(source), "--out", str(tmp_path / "a"), *common]) == 0
    printed = capsys.readouterr()
    summary = json.loads(printed.out.splitlines()[-1])  # (ultralytics may print before it)
    assert summary["shots"] == {
        "anger": 0,
        "disgust": 0,
        "fear": 0,
        "happiness": 1,
        "neutral": 0,
        "sadness": 1,
        "surprise": 0,
    }
    assert summary["held_out"] == 0 and "nothing to hold out" in printed.err and "no images of anger" in printed.err
    assert summary["skipped"] == {"not an image (.txt)": 1} and "skipped 1 not an image (.txt)" in printed.err
    # the folder has no ONNX graph: backend auto takes a torch candidate (bf16 where the CPU has it natively)
    assert summary["backend"] in ("torch fp32", "torch bf16") and summary["finetune_epochs"] == 0
    assert summary["out"] == str(tmp_path / "a") and summary["images"] == str(shots)
    assert (source / "manifest.json").read_text() == before and not (source / "cache.safetensors").exists()
    adapted = load_bundle(tmp_path / "a")
    assert adapted.head.kind == "cache" and adapted.cache["cache.values"].shape == (2, 7)
    assert adapted.manifest["adapt"] == summary and adapted.head.alpha == pytest.approx(summary["alpha"], rel=1e-5)
    with safe_open(str(tmp_path / "a" / "cache.safetensors"), framework="pt") as fh:
        assert json.loads(fh.metadata()["meta"]) == summary
    in_place = ["adapt", "--images", str(shots), "--model", str(tmp_path / "a"), "--out", str(tmp_path / "a")]
    assert main([*in_place, *common]) == 2  # in place replaces the adapted model: only when asked
    assert "pass --force" in capsys.readouterr().err
    assert main([*in_place, *common, "--force"]) == 0
    again = load_bundle(tmp_path / "a")
    assert again.head.base == "levels" and again.cache["cache.keys"].shape == adapted.cache["cache.keys"].shape


def test_finetune_keys_lowers_the_loss_on_its_images(tmp_path):
    """Tip-Adapter-F: training the keys lowers the cross-entropy of the cache head's logits on the images it
    trains on, reproducibly, and leaves the caller's keys alone; no epochs, or alpha 0, train nothing."""
    import torch.nn.functional as F

    from ros_fer.adapt import blended, finetune_keys, one_hot

    ex = _examples(6, signal=1.0)
    keys, values = ex.query.clone(), one_hot(ex.targets, 3)
    loss = lambda k: float(F.cross_entropy(blended(ex, k, values, 1.0, 5.0), ex.targets))  # noqa: E731
    trained = finetune_keys(ex, keys, values, 1.0, 5.0, epochs=30, seed=0)
    assert loss(trained) < loss(keys) - 1e-3 and torch.equal(keys, ex.query)
    assert torch.equal(trained, finetune_keys(ex, keys, values, 1.0, 5.0, epochs=30, seed=0))
    assert finetune_keys(ex, keys, values, 1.0, 5.0, epochs=0, seed=0) is keys
    assert finetune_keys(ex, keys, values, 0.0, 5.0, epochs=30, seed=0) is keys
    fit = fit_cache(ex, 3, scale=100.0, finetune_epochs=30)
    assert fit["finetune_epochs"] == 30 and fit["keys"].shape == ex.query.shape
    assert not torch.equal(fit["keys"], ex.query)  # the final cache's keys are trained too


def test_person_of_boxes_detector_or_the_whole_image():
    from ros_fer.adapt import person_of

    rgb = np.zeros((100, 200, 3), np.uint8)
    both = person_of(rgb, {"face": [10, 20, 30, 40], "body": [5, 6, 70, 90]}, None)
    assert both.face.tolist() == [10, 20, 30, 40, 1] and both.body.tolist() == [5, 6, 70, 90, 1] and both.face_detected
    body_only = person_of(rgb, {"face": None, "body": [5, 6, 70, 90]}, None)
    assert body_only.face is None and not body_only.face_detected and body_only.body.tolist() == [5, 6, 70, 90, 1]
    nobody = person_of(rgb, None, None)
    assert nobody.body.tolist() == [0, 0, 200, 100, 1] and not nobody.body_detected and nobody.face is None


def test_encode_examples_batches_like_one_image_at_a_time(tmp_path, monkeypatch):
    """Three real photographs in batches of two (one with boxes from boxes.json, two by the detector) and an
    unreadable file: each row equals that image encoded alone, through the runtime's zero-shot head; the
    detector is made once, only for the images without boxes; the unreadable file is counted."""
    from collections import Counter

    import cv2
    from conftest import photo

    from ros_fer.adapt import encode_examples, person_of
    from ros_fer.crops import crop_batch
    from ros_fer.params import load_params
    from ros_fer.pipeline import detector_from_params
    from ros_fer.runtime import build_runtime

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    params = load_params(
        None,
        {"backbone": "tiny-random", "pretrained": "", "device": "cpu", "detector": "opencv", "labels": "caers"}
        | {"backend": "torch"},  # exact batching: int8's dynamic activation scales depend on the batch
    )
    runtime = build_runtime(params)
    root = tmp_path / "shots"
    (root / "happy").mkdir(parents=True)
    items = []
    for name, state in (("zidane.jpg", 3), ("bus.jpg", 0), ("broken.jpg", 1), ("bus2.jpg", 5)):
        path = root / "happy" / name
        if name == "broken.jpg":
            path.write_bytes(b"\xff\xd8 not a jpeg")
        else:
            rgb = photo(name.replace("2", ""))
            cv2.imwrite(str(path), cv2.cvtColor(rgb[:, ::-1] if "2" in name else rgb, cv2.COLOR_RGB2BGR))
        items.append((path, state))
    boxes = {"happy/zidane.jpg": {"face": [500.0, 40.0, 700.0, 300.0], "body": [300.0, 0.0, 1100.0, 720.0]}}
    made, skipped = [], Counter()

    def factory():
        made.append(detector_from_params(params))
        return made[-1]

    ex = encode_examples(runtime, items, boxes, root, factory, batch=2, progress=False, skipped=skipped)
    assert len(made) == 1 and skipped == {"unreadable image": 1} and ex.targets.tolist() == [3, 0, 5]
    assert ex.paths == [str(items[i][0]) for i in (0, 1, 3)]
    head = runtime.head.zero_shot()
    for row, i in enumerate((0, 1, 3)):
        rgb = cv2.cvtColor(cv2.imread(str(items[i][0])), cv2.COLOR_BGR2RGB)
        person = person_of(rgb, boxes.get(f"happy/{items[i][0].name}"), made[0])
        feats = runtime.backend.encode(crop_batch(rgb, [person], runtime.levels, runtime.image_size).dense())
        torch.testing.assert_close(ex.logits[row], head(feats, runtime.text)[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ex.query[row], cache_query(feats, "levels")[0], atol=1e-6, rtol=1e-5)
    assert not torch.allclose(ex.query[1], ex.query[2])  # bus2 is bus mirrored: its own row, not a copy
    with_boxes_only = encode_examples(runtime, items[:1], boxes, root, factory, progress=False)
    assert len(made) == 1 and len(with_boxes_only) == 1  # every image had its boxes: no detector made
