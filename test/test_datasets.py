"""Each data-set adapter on a small fixture in its real layout, and its errors."""

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ros_fer.labels import load_label_set  # noqa: E402
from training.datasets.adapters import load_split  # noqa: E402
from training.datasets.base import DataError  # noqa: E402
from training.datasets.multilevel import MultiLevelCrops, fill_boxes  # noqa: E402

IMG = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), IMG)


def test_rafdb(tmp_path):
    (tmp_path / "EmoLabel").mkdir()
    lines = [f"train_{i:05d}.jpg {i % 7 + 1}" for i in range(1, 21)] + ["test_00001.jpg 4", "test_00002.jpg 7"]
    (tmp_path / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    for line in lines:
        image(tmp_path / "Image" / "aligned" / line.split()[0].replace(".jpg", "_aligned.jpg"))
    labels = load_label_set("rafdb")
    cfg = {"dataset": "rafdb", "root": str(tmp_path), "labels": "rafdb"}
    test = load_split(cfg, "test", labels)
    assert [labels.classes[s.label] for s in test.samples] == ["happiness", "neutral"]  # 4 = happiness, 7 = neutral
    train, val = load_split(cfg, "train", labels), load_split(cfg, "val", labels)
    assert len(train.samples) == 18 and len(val.samples) == 2
    assert not {s.path for s in train.samples} & {s.path for s in val.samples}
    (tmp_path / "EmoLabel" / "list_patition_label.txt").write_text("train_00001.jpg 9\n")
    with pytest.raises(DataError, match=r"list_patition_label.txt:1: expected '<image> <label 1..7>'"):
        load_split(cfg, "train", labels)


def test_affectnet(tmp_path):
    header = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
    rows = [
        "1/a.jpg,2,3,30,30,,1,0.5,0.2",
        "1/b.jpg,0,0,40,40,,7,-0.3,0.1",
        "1/c.jpg,0,0,40,40,,9,0,0",
        "1/missing.jpg,0,0,40,40,,2,0,0",
    ]
    (tmp_path / "validation.csv").write_text("\n".join([header, *rows]) + "\n")
    for name in ("a", "b", "c"):
        image(tmp_path / "Manually_Annotated_Images" / "1" / f"{name}.jpg")
    cfg = {"dataset": "affectnet", "root": str(tmp_path), "labels": "affectnet7"}
    seven = load_split(cfg, "test", load_label_set("affectnet7"))
    assert [s.path.name for s in seven.samples] == ["a.jpg"] and seven.samples[0].face == [2, 3, 32, 33]
    assert seven.skipped["class contempt outside affectnet7"] == 1 and seven.skipped["missing image"] == 1
    assert seven.skipped["not an expression (none/uncertain/no-face)"] == 1
    eight = load_split({**cfg, "labels": "affectnet8"}, "test", load_label_set("affectnet8"))
    assert [load_label_set("affectnet8").classes[s.label] for s in eight.samples] == ["happiness", "contempt"]
    assert "missing image" in eight.summary()
    (tmp_path / "validation.csv").write_text(header + "\n1/a.jpg,x,3,30,30,,1,0,0\n")
    with pytest.raises(DataError, match=r"validation.csv:2: non-numeric"):
        load_split(cfg, "test", load_label_set("affectnet7"))


def test_ferplus_majority_vote(tmp_path):
    rows = [
        "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF",
        "PrivateTest,fer0000001.png,0,8,1,0,0,0,1,0,0,0",  # happiness
        "PrivateTest,fer0000002.png,5,5,0,0,0,0,0,0,0,0",  # tie: skipped
        "PrivateTest,fer0000003.png,0,0,0,0,0,0,0,0,2,8",  # not a face: skipped
        "Training,fer0000004.png,10,0,0,0,0,0,0,0,0,0",
    ]
    (tmp_path / "fer2013new.csv").write_text("\n".join(rows) + "\n")
    for n in (1, 2, 3):
        image(tmp_path / "FER2013Test" / f"fer000000{n}.png")
    labels = load_label_set("ferplus")
    split = load_split({"dataset": "ferplus", "root": str(tmp_path), "labels": "ferplus"}, "test", labels)
    assert [labels.classes[s.label] for s in split.samples] == ["happiness"]
    assert split.skipped == {"tied vote": 1, "majority NF": 1}


def test_caers_and_folder(tmp_path):
    for split in ("train", "test"):
        for cls in ("Anger", "Happy", "Sad"):
            for i in range(8):
                image(tmp_path / split / cls / f"{i}.png")
    (tmp_path / "train" / "Happy" / "notes.txt").write_text("not an image")
    labels = load_label_set("caers")
    cfg = {"dataset": "caers", "root": str(tmp_path), "labels": "caers"}
    train, val, test = (load_split(cfg, s, labels) for s in ("train", "val", "test"))
    assert len(train.samples) + len(val.samples) == 24 and len(val.samples) == 3 and len(test.samples) == 24
    assert train.skipped["not an image (.txt)"] == 1
    assert {labels.classes[s.label] for s in test.samples} == {"anger", "happiness", "sadness"}
    (tmp_path / "test" / "Bored").mkdir()
    with pytest.raises(DataError, match=r"test/Bored: unknown class name 'Bored'"):
        load_split(cfg, "test", labels)


def test_boxes_are_detected_once_and_cached(tmp_path):
    import ultralytics

    photo = cv2.imread(str(Path(ultralytics.__file__).parent / "assets" / "zidane.jpg"))
    (tmp_path / "test" / "happy").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "test" / "happy" / "z.jpg"), photo)
    labels = load_label_set("basic7")
    cfg = {"dataset": "folder", "root": str(tmp_path), "labels": "basic7"}
    split = load_split(cfg, "test", labels)
    assert fill_boxes(split, tmp_path)["detected"] == 1
    face = split.samples[0].face
    assert 900 < face[0] < 940 and 100 < face[1] < 130  # Ancelotti's face
    again = load_split(cfg, "test", labels)
    assert fill_boxes(again, tmp_path) == {
        "annotated": 0,
        "image is the face": 0,
        "cached": 1,
        "detected": 0,
        "no face": 0,
    }
    crops, label = MultiLevelCrops(again.samples, ("face", "body", "context"), 64, (0.5,) * 3, (0.5,) * 3)[0]
    assert tuple(crops.shape) == (3, 3, 64, 64) and label == labels.index("happiness")


def test_rafdb_original_images(tmp_path):
    """`images: original` (what the shipped MLPER configs read): Image/original/<name>, not the aligned faces."""
    (tmp_path / "EmoLabel").mkdir()
    lines = ["train_00001.jpg 1", "train_00002.jpg 2", "test_00001.jpg 5"]
    (tmp_path / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    for line in lines:
        image(tmp_path / "Image" / "original" / line.split()[0])
    cfg = {"dataset": "rafdb", "root": str(tmp_path), "labels": "rafdb", "images": "original"}
    test = load_split(cfg, "test", load_label_set("rafdb"))
    assert [s.path for s in test.samples] == [tmp_path / "Image" / "original" / "test_00001.jpg"]
    assert load_label_set("rafdb").classes[test.samples[0].label] == "sadness"  # RAF-DB label 5
    with pytest.raises(DataError, match="aligned"):  # the aligned folder is absent: named, not skipped
        load_split({**cfg, "images": "aligned"}, "test", load_label_set("rafdb"))


def test_fedro_and_cross_dataset_evaluation_with_an_occlusion_subset(tmp_path):
    """FED-RO's class folders, evaluated by a model of another label set: unknown classes are counted and left
    out, the rest re-indexed into the model's order; the occlusion list picks its subset."""
    from training.config import load_train_config
    from training.evaluate import evaluate

    for cls, n in (("Happy", 4), ("Sad", 3), ("Contempt", 2)):
        for i in range(n):
            image(tmp_path / "fedro" / "test" / cls / f"{cls}{i}.jpg")
    fedro = {"dataset": "fedro", "root": str(tmp_path / "fedro"), "labels": "affectnet8"}
    split = load_split(fedro, "test", load_label_set("affectnet8"))
    assert len(split.samples) == 9
    (tmp_path / "fedro" / "occluded.txt").write_text("Happy0.jpg\nSad2.jpg\n")
    cfg = load_train_config(
        "synthetic_mlper_tiny", [f"data.root={tmp_path}", "train.progress=false", "train.tensorboard=false"]
    )
    result = evaluate(None, cfg, tmp_path / "eval", data={**fedro, "occlusion": "occluded.txt"})
    assert result["dataset"] == "fedro" and result["labels"] == list(load_label_set("basic7").classes)
    assert result["unmapped_classes"] == 2 and result["all"]["n"] == 7  # contempt is not in basic7
    occluded = result["subsets"]["occlusion"]
    assert occluded["n"] == 2 and sum(map(sum, occluded["confusion"])) == 2
    happy, sad = result["labels"].index("happiness"), result["labels"].index("sadness")
    rows = result["all"]["confusion"]
    assert sum(rows[happy]) == 4 and sum(rows[sad]) == 3 and sum(map(sum, rows)) == 7  # rows: true classes
    # a list the data set does not have: skipped and said; asked for explicitly: an error
    skipped = evaluate(None, cfg, tmp_path / "eval2", data={**fedro, "occlusion": "missing.txt"})
    assert "occlusion" not in skipped["subsets"] and "no list file" in skipped["skipped_subsets"]["occlusion"]
    with pytest.raises(Exception, match="no list file"):
        evaluate(
            None, cfg, tmp_path / "eval3", data={**fedro, "occlusion": "missing.txt"}, required_subsets=("occlusion",)
        )


def bus(tmp_path: Path, split: str = "test") -> tuple[Path, np.ndarray]:
    import ultralytics

    photo = cv2.imread(str(Path(ultralytics.__file__).parent / "assets" / "bus.jpg"))
    path = tmp_path / split / "happy" / "bus.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), photo)
    return path, cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)  # as written (JPEG re-encoded)


def test_an_annotated_face_keeps_its_own_body(tmp_path):
    """AffectNet gives the face box: the body comes from that face (here no body detector: derived from it),
    never from another person the detector found first."""
    from ros_fer.crops import derive_body

    path, rgb = bus(tmp_path)
    labels = load_label_set("basic7")
    split = load_split({"dataset": "folder", "root": str(tmp_path), "labels": "basic7"}, "test", labels)
    right = [261.0, 420.0, 320.0, 479.0]  # the second passenger's face (BUS_FACES in test_pipeline)
    split.samples[0].face = right
    counts = fill_boxes(split, tmp_path)
    assert counts["detected"] == 1
    h, w = rgb.shape[:2]
    np.testing.assert_allclose(split.samples[0].body, derive_body(np.array([*right, 1.0]), h, w)[:4], atol=1e-3)
    assert split.samples[0].face == right
    cache = json.loads(next((tmp_path / ".ros_fer_boxes").glob("*.json")).read_text())
    assert cache["detector"].startswith("opencv") and cache["detector"].endswith("/boxes-v2")  # identity recorded


def test_missing_faces_are_estimated_from_the_body_as_the_node_does(tmp_path):
    from ros_fer.crops import BODY_MARGIN, FACE_MARGIN, crop_square, estimate_face, letterbox_box, square
    from training.datasets.base import Sample

    path, rgb = bus(tmp_path)
    h, w = rgb.shape[:2]
    body = [50.0, 300.0, 350.0, 900.0]
    levels = ("face", "body", "context")
    with_body = MultiLevelCrops([Sample(path, 0, None, body)], levels, 32, (0, 0, 0), (1 / 255,) * 3)
    x = with_body[0][0].permute(0, 2, 3, 1).numpy()
    face = estimate_face(np.array([*body, 1.0], np.float32))
    np.testing.assert_allclose(x[0], crop_square(rgb, square(face, FACE_MARGIN), 32), atol=1e-3)
    np.testing.assert_allclose(x[1], crop_square(rgb, square(np.array(body), BODY_MARGIN), 32), atol=1e-3)
    np.testing.assert_allclose(x[2], crop_square(rgb, letterbox_box(h, w), 32), atol=1e-3)
    nobody = MultiLevelCrops([Sample(path, 0, None, None)], ("face", "body"), 32, (0, 0, 0), (1 / 255,) * 3)
    y = nobody[0][0].permute(0, 2, 3, 1).numpy()
    whole = np.array([0, 0, w, h, 1.0], np.float32)
    np.testing.assert_allclose(y[0], crop_square(rgb, square(estimate_face(whole), FACE_MARGIN), 32), atol=1e-3)
    np.testing.assert_allclose(y[1], crop_square(rgb, square(whole, BODY_MARGIN), 32), atol=1e-3)


def test_the_image_is_the_face_for_pre_cropped_sets(tmp_path):
    """data.image_is_face (RAF-DB aligned, FERPlus): no detector; the face crop is the whole image."""
    rng = np.random.default_rng(1)
    face = rng.integers(0, 256, (48, 48, 3), np.uint8)
    path = tmp_path / "test" / "sad" / "f.png"
    path.parent.mkdir(parents=True)
    cv2.imwrite(str(path), face)
    cfg = {"dataset": "folder", "root": str(tmp_path), "labels": "basic7", "image_is_face": True}
    split = load_split(cfg, "test", load_label_set("basic7"))
    counts = fill_boxes(split, tmp_path, data=cfg)
    assert counts["image is the face"] == 1 and counts["detected"] == 0
    assert [f.name for f in (tmp_path / ".ros_fer_boxes").iterdir()] == ["images.json"]  # headers only: no detection
    x = MultiLevelCrops(split.samples, ("face",), 96, (0, 0, 0), (1 / 255,) * 3)[0][0][0].permute(1, 2, 0).numpy()
    rgb = cv2.cvtColor(face, cv2.COLOR_BGR2RGB)
    grown = cv2.resize(rgb, (96, 96), interpolation=cv2.INTER_LINEAR).astype(float)
    assert np.abs(x - grown).mean() < 3  # the whole 48x48 image, grown to 96: no margin, no black border
    assert x[:2].mean() > 30 and x[:, :2].mean() > 30


def test_face_only_configs_read_faces_and_mlper_reads_scenes():
    from training.config import load_train_config

    for name in ("mpa_fer_rafdb_vitb16", "mpa_fer_rafdb_vitl14", "mpa_fer_ferplus_vitb16", "mpa_fer_ferplus_vitl14"):
        data = load_train_config(name)["data"]
        assert data["image_is_face"] is True and data.get("images", "aligned") == "aligned", name
    mlper = load_train_config("mlper_rafdb_vitl14")["data"]
    assert mlper["images"] == "original" and not mlper.get("image_is_face")


@pytest.mark.parametrize("wrapped", [False, True])
def test_boxes_json_as_documented_and_wrapped(tmp_path, wrapped):
    """boxes.json written the way the README documents it (a flat mapping), and wrapped as make_synthetic
    writes it; keys matching no image are counted."""
    for name in ("a", "b"):
        image(tmp_path / "test" / "happy" / f"{name}.png")
    boxes = {
        "test/happy/a.png": {"face": [10, 5, 30, 25], "body": [0, 0, 60, 48]},
        "test/happy/b.png": {"face": [1.5, 2.5, 20.5, 22.5]},
        "test/happy/gone.png": {"face": [1, 1, 5, 5]},
    }
    (tmp_path / "boxes.json").write_text(json.dumps({"boxes": boxes} if wrapped else boxes))
    split = load_split(
        {"dataset": "folder", "root": str(tmp_path), "labels": "basic7"}, "test", load_label_set("basic7")
    )
    by_name = {s.path.name: s for s in split.samples}
    assert by_name["a.png"].face == [10, 5, 30, 25] and by_name["a.png"].body == [0, 0, 60, 48]
    assert by_name["b.png"].face == [1.5, 2.5, 20.5, 22.5] and by_name["b.png"].body is None
    assert split.skipped["boxes.json entries matching no image"] == 1 and "matching no image" in split.summary()


@pytest.mark.parametrize(
    "content, message",
    [
        ("[1, 2]", "expected a mapping from image path to {face, body} boxes, got list"),
        ('{"test/happy/a.png": [1, 2, 3, 4]}', "'test/happy/a.png': expected {\"face\""),
        ('{"test/happy/a.png": {"face": [1, 2, 3]}}', "'test/happy/a.png' face: expected four numbers"),
        ('{"test/happy/a.png": {"body": [5, 2, 3, 9]}}', "with x2 > x1 and y2 > y1, got \\[5, 2, 3, 9\\]"),
        ('{"test/happy/a.png": {"face": ["1", 2, 3, 4]}}', "face: expected four numbers"),
        ('{"test/happy/a.png": {"eyes": [1, 2, 3, 4]}}', 'expected {"face"'),
        ("{not json", "not readable JSON"),
    ],
)
def test_bad_boxes_json_names_the_file_and_the_key(tmp_path, content, message):
    image(tmp_path / "test" / "happy" / "a.png")
    (tmp_path / "boxes.json").write_text(content)
    with pytest.raises(DataError, match=message) as info:
        load_split({"dataset": "folder", "root": str(tmp_path), "labels": "basic7"}, "test", load_label_set("basic7"))
    assert str(tmp_path / "boxes.json") in str(info.value)


def test_evaluate_command_skips_missing_subsets_unless_asked(tmp_path, capsys):
    """The synthetic config names an occlusion list; a user's own data has none: evaluate.py says it skipped
    the subset and succeeds. Asked for on the command line, the missing list is an error."""
    from training.evaluate import main

    for cls in ("Happy", "Sad"):
        for i in range(3):
            image(tmp_path / "test" / cls / f"{i}.jpg")
    common = ["--config", "synthetic_mlper_tiny", f"data.root={tmp_path}", "--out", str(tmp_path / "eval")]
    assert main(common) == 0
    out = capsys.readouterr()
    summary = json.loads(out.out.strip().splitlines()[-1])  # the last line: the summary
    assert "evaluate: occlusion subset skipped: no list file" in out.err and summary["n"] == 6
    assert "evaluate: 6 images, accuracy" in out.err and str(tmp_path / "eval" / "results.json") in out.err
    assert main([*common, "data.occlusion=occlusion_list.txt"]) == 2
    assert "evaluate: error: data.occlusion: no list file" in capsys.readouterr().err
    # --data: another data set's config (cross-dataset), here a user's YAML file with its own label set
    other = tmp_path / "other.yaml"
    other.write_text(f"data: {{dataset: folder, root: {tmp_path}, labels: caers}}\n")
    assert main(["--config", "synthetic_mlper_tiny", "--data", str(other), "--out", str(tmp_path / "cross")]) == 0
    cross = json.loads((tmp_path / "cross" / "results.json").read_text())
    assert cross["dataset"] == "folder" and cross["all"]["n"] == 6 and cross["unmapped_classes"] == 0


def test_rafdb_and_affectnet_combined_for_fed_ro(tmp_path):
    """`dataset: combined` (MLPER's FED-RO row trains on RAF-DB + AffectNet): each part in its own layout and
    options, read into one label set; AffectNet's contempt counted and skipped; boxes filled per part (RAF-DB
    here with `image_is_face`, AffectNet's annotated faces kept, its cache beside its own root); evaluate.py
    names each image by its part. Then the shipped config composes to the same two parts."""
    from training.config import load_train_config
    from training.datasets.multilevel import fill_split_boxes
    from training.evaluate import evaluate

    raf, aff = tmp_path / "raf", tmp_path / "aff"
    (raf / "EmoLabel").mkdir(parents=True)
    raf_lines = [f"train_{i:05d}.jpg {i % 7 + 1}" for i in range(1, 11)] + ["test_00001.jpg 4", "test_00002.jpg 7"]
    (raf / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(raf_lines) + "\n")
    for line in raf_lines:
        image(raf / "Image" / "original" / line.split()[0])
    header = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
    rows = ["1/a.jpg,2,3,30,30,,1,0,0", "1/b.jpg,0,0,40,40,,7,0,0", "1/c.jpg,4,4,20,20,,6,0,0"]  # happy contempt anger
    (aff / "validation.csv").parent.mkdir(parents=True)
    (aff / "validation.csv").write_text("\n".join([header, *rows]) + "\n")
    (aff / "training.csv").write_text("\n".join([header, *[r.replace("1/", "2/") for r in rows]]) + "\n")
    for sub in ("1", "2"):
        for name in ("a", "b", "c"):
            image(aff / "Manually_Annotated_Images" / sub / f"{name}.jpg")
    data = {
        "dataset": "combined",
        "labels": "rafdb",
        "parts": [
            {"dataset": "rafdb", "root": str(raf), "images": "original", "image_is_face": True, "val_fraction": 0.2},
            {"dataset": "affectnet", "root": str(aff), "val_fraction": 0.0, "occlusion": "occluded.txt"},
        ],
    }
    # a part's own subset list, beside its own root: it names only that part's images (never RAF-DB's test_00001)
    (aff / "occluded.txt").write_text("Manually_Annotated_Images/1/a.jpg\ntest_00001.jpg\n")
    labels = load_label_set("rafdb")
    test = load_split(data, "test", labels)
    names = [(s.part, s.path.name, labels.classes[s.label]) for s in test.samples]
    assert names == [  # RAF-DB 4 = happiness, 7 = neutral; AffectNet 1 = happiness, 6 = anger
        (0, "test_00001.jpg", "happiness"),
        (0, "test_00002.jpg", "neutral"),
        (1, "a.jpg", "happiness"),
        (1, "c.jpg", "anger"),
    ]
    assert test.skipped == {"affectnet[1] class contempt outside rafdb": 1}
    train, val = load_split(data, "train", labels), load_split(data, "val", labels)
    assert [len([s for s in sp.samples if s.part == n]) for sp in (train, val) for n in (0, 1)] == [8, 2, 2, 0]
    assert not {s.path for s in train.samples} & {s.path for s in val.samples}
    counts = fill_split_boxes(test, data)
    assert counts["image is the face"] == 2 and counts["detected"] == 2 and counts["annotated"] == 0
    h, w = IMG.shape[:2]
    assert test.samples[0].body == [0.0, 0.0, float(w), float(h)]  # the RAF-DB part: the image is the face
    assert test.samples[2].face == [2, 3, 32, 33] and test.samples[3].face == [4, 4, 24, 24]  # the CSV's boxes
    assert len(list((aff / ".ros_fer_boxes").glob("*.json"))) == 2  # headers and the detector's boxes
    assert [f.name for f in (raf / ".ros_fer_boxes").iterdir()] == ["images.json"]  # nothing detected there
    cfg = load_train_config("synthetic_mlper_tiny", ["train.progress=false", "train.tensorboard=false"])
    result = evaluate(None, {**cfg, "data": data}, tmp_path / "eval")
    assert result["all"]["n"] == 4 and result["root"] == [str(raf), str(aff)]
    assert result["subsets"]["occlusion"]["n"] == 1 and result["skipped_subsets"] == {}
    lines = (tmp_path / "eval" / "predictions.csv").read_text().splitlines()
    assert [ln.split(",")[:2] for ln in lines[1:]] == [
        ["rafdb[0]/Image/original/test_00001.jpg", "happiness"],
        ["rafdb[0]/Image/original/test_00002.jpg", "neutral"],
        ["affectnet[1]/Manually_Annotated_Images/1/a.jpg", "happiness"],
        ["affectnet[1]/Manually_Annotated_Images/1/c.jpg", "anger"],
    ]
    shipped = load_train_config("mlper_rafdb_affectnet_vitl14")["data"]
    assert shipped["labels"] == "rafdb" and [p["dataset"] for p in shipped["parts"]] == ["rafdb", "affectnet"]
    for bad, message in (
        ({**data, "parts": []}, "needs a list of data configs"),
        ({**data, "parts": [{"dataset": "rafdb"}]}, r"data.parts\[0\]: expected a data config with `dataset`"),
        ({**data, "parts": [data]}, r"data.parts\[0\]: a combined data set cannot be a part"),
        ({**data, "parts": [{**data["parts"][1], "labels": "affectnet8"}]}, "differ from data.labels 'rafdb'"),
    ):
        with pytest.raises(DataError, match=message):
            load_split(bad, "test", labels)


def test_each_adapters_missing_files_say_what_is_missing(tmp_path):
    """A root without the files its layout needs: an error naming the file (or folder) and what it is."""
    labels = load_label_set("rafdb")
    for cfg, message in (
        ({"dataset": "rafdb"}, r"RAF-DB label list not found: .*EmoLabel/list_patition_label.txt"),
        ({"dataset": "affectnet"}, r"AffectNet CSV not found: .*validation.csv"),
        ({"dataset": "ferplus"}, r"FERPlus label CSV not found: .*fer2013new.csv"),
        ({"dataset": "caers"}, r"test folder not found: .*/test"),
        ({"dataset": "folder"}, r"test folder not found: .*/test"),
        ({"dataset": "caer"}, r"unknown dataset 'caer'; known: .*'caers'.*'combined'"),
    ):
        with pytest.raises(DataError, match=message):
            load_split({**cfg, "root": str(tmp_path), "labels": "rafdb"}, "test", labels)
    with pytest.raises(DataError, match="no val folder; set data.val_fraction"):
        (tmp_path / "train").mkdir()
        load_split({"dataset": "folder", "root": str(tmp_path), "labels": "rafdb"}, "val", labels)
    # a listed image that is missing: RAF-DB stops and says how to skip; on_missing: skip counts it
    (tmp_path / "EmoLabel").mkdir()
    (tmp_path / "EmoLabel" / "list_patition_label.txt").write_text("test_00001.jpg 1\ntest_00002.jpg 2\n")
    image(tmp_path / "Image" / "original" / "test_00001.jpg")
    raf = {"dataset": "rafdb", "root": str(tmp_path), "labels": "rafdb", "images": "original"}
    with pytest.raises(DataError, match=r"image listed but missing: .*test_00002.jpg \(set data.on_missing: skip"):
        load_split(raf, "test", labels)
    split = load_split({**raf, "on_missing": "skip"}, "test", labels)
    assert len(split.samples) == 1 and split.skipped == {"missing image": 1}


def test_each_adapters_unknown_labels(tmp_path):
    """Labels outside a format's range are errors naming the file and line; labels inside the format but
    outside the chosen label set are counted skips; a class folder no label set knows is an error."""
    header = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
    for code in ("-1", "11"):  # -1 once read as the last class (contempt)
        (tmp_path / "validation.csv").write_text(f"{header}\n1/a.jpg,0,0,40,40,,{code},0,0\n")
        with pytest.raises(DataError, match=rf"validation.csv:2: expression {code} is not an AffectNet code"):
            load_split({"dataset": "affectnet", "root": str(tmp_path), "labels": "affectnet8"}, "test",
                       load_label_set("affectnet8"))  # fmt: skip
    (tmp_path / "EmoLabel").mkdir()
    (tmp_path / "EmoLabel" / "list_patition_label.txt").write_text("test_00001.jpg 0\n")
    with pytest.raises(DataError, match=r"list_patition_label.txt:1: expected '<image> <label 1..7>'"):
        load_split({"dataset": "rafdb", "root": str(tmp_path), "labels": "rafdb"}, "test", load_label_set("rafdb"))
    (tmp_path / "fer2013new.csv").write_text("PrivateTest,fer1.png,1,2,3\n")
    with pytest.raises(DataError, match=r"fer2013new.csv:1: expected 12 columns, got 5"):
        load_split(
            {"dataset": "ferplus", "root": str(tmp_path), "labels": "ferplus"}, "test", load_label_set("ferplus")
        )
    for cls in ("Contempt", "Happy"):
        image(tmp_path / "test" / cls / "0.jpg")
    split = load_split({"dataset": "folder", "root": str(tmp_path), "labels": "rafdb"}, "test", load_label_set("rafdb"))
    assert split.skipped == {"class contempt outside rafdb": 1} and len(split.samples) == 1
    image(tmp_path / "test" / "Bored" / "0.jpg")
    with pytest.raises(DataError, match=r"test/Bored: unknown class name 'Bored' \(known: \["):
        load_split({"dataset": "folder", "root": str(tmp_path), "labels": "rafdb"}, "test", load_label_set("rafdb"))


def test_unreadable_truncated_images_and_foreign_boxes_are_counted_not_crashed_on(tmp_path):
    """Images that are no images, JPEGs and PNGs cut short, and boxes.json boxes that are not the image's
    (outside it, or fractions instead of pixels) are dropped and counted before training starts, so no epoch
    meets them; an empty class is said in the summary; a split left with nothing is an error naming why."""
    from training.datasets.multilevel import fill_split_boxes, probe_image

    good = cv2.imencode(".jpg", IMG)[1].tobytes()
    png = cv2.imencode(".png", IMG)[1].tobytes()
    files = {
        "happy/good.jpg": good,
        "happy/good.png": png,
        "happy/text.jpg": b"these are notes, not a photograph",
        "happy/cut.jpg": good[: len(good) // 2],
        "sad/cut.png": png[: len(png) - 20],
        "sad/outside.jpg": good,
        "sad/fractions.jpg": good,
        "sad/edge.jpg": good,
    }
    for rel, blob in files.items():
        (tmp_path / "train" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "train" / rel).write_bytes(blob)
    (tmp_path / "train" / "Fear").mkdir()  # an empty class folder
    h, w = IMG.shape[:2]
    boxes = {
        "train/sad/outside.jpg": {"face": [w + 10, 0, w + 40, 30]},
        "train/sad/fractions.jpg": {"face": [0.1, 0.2, 0.5, 0.6]},
        "train/sad/edge.jpg": {"face": [w - 20, 5, w + 5, 30]},  # crosses the border a little: kept
        "train/happy/good.jpg": {"face": [4, 4, 30, 30], "body": [0, 0, w, h]},
    }
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    assert probe_image(tmp_path / "train" / "happy" / "good.png") == (w, h)
    for rel, why in (("happy/text.jpg", "not a readable image"), ("happy/cut.jpg", "truncated JPEG")):
        with pytest.raises(DataError, match=why):
            probe_image(tmp_path / "train" / rel)
    cfg = {"dataset": "folder", "root": str(tmp_path), "labels": "basic7", "detector": "opencv"}
    labels = load_label_set("basic7")
    split = load_split(cfg, "train", labels)
    assert len(split.samples) == 8
    fill_split_boxes(split, cfg)
    assert sorted(s.path.name for s in split.samples) == ["edge.jpg", "good.jpg", "good.png"]
    assert split.skipped == {
        "unreadable image": 1,
        "truncated image": 2,
        "box outside the image": 1,
        "box under 2 px (boxes are in pixels, not fractions)": 1,
    }
    assert "no images of surprise, fear, disgust" in split.summary()
    again = load_split(cfg, "train", labels)  # the headers are cached: the same verdicts without reading
    (tmp_path / "train" / "happy" / "cut.jpg").write_bytes(good)  # repaired: its size and time changed
    fill_split_boxes(again, cfg)
    assert again.skipped["truncated image"] == 1 and len(again.samples) == 4
    crops, _ = MultiLevelCrops(again.samples, ("face", "body", "context"), 32, (0.5,) * 3, (0.5,) * 3)[0]
    assert crops.shape == (3, 3, 32, 32)
    (tmp_path / "boxes.json").write_text(json.dumps({k: {"face": [0.1, 0.2, 0.5, 0.6]} for k in boxes}))
    for rel in ("happy/good.png", "happy/text.jpg", "happy/cut.jpg", "sad/cut.png"):
        (tmp_path / "train" / rel).unlink()
    nothing = load_split(cfg, "train", labels)
    fill_split_boxes(nothing, cfg)
    with pytest.raises(DataError, match=r"the train split has no usable images \(4 box under 2 px"):
        nothing.require_images("data mine")
