"""The suite's offline environment, set before anything imports open_clip, huggingface_hub or ultralytics."""

import atexit
import os
import shutil
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["YOLO_OFFLINE"] = "1"
os.environ["YOLO_AUTOINSTALL"] = "0"
if "YOLO_CONFIG_DIR" not in os.environ:  # ultralytics' settings for this run only, removed when it ends
    os.environ["YOLO_CONFIG_DIR"] = tempfile.mkdtemp(prefix="ros_fer_yolo_")
    atexit.register(shutil.rmtree, os.environ["YOLO_CONFIG_DIR"], True)

import pytest  # noqa: E402
import torch  # noqa: E402

TINY = {"backbone": {"name": "tiny-random", "pretrained": None, "checkpoint": None}}


def tiny(config: str, **overrides):
    """A model from a shipped config on the tiny random backbone."""
    from ros_fer.models import create_model
    from ros_fer.models.factory import merge

    return create_model(config, merge(TINY, overrides))


def random_crops(model, batch: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    size = model.backbone.image_size
    return torch.randn(batch, len(model.levels), 3, size, size, generator=g)


@pytest.fixture
def targets() -> torch.Tensor:
    return torch.tensor([0, 1, 2, 3])


def person_result(**fields):
    """A PersonResult of a two-class ("sad", "happy") frame, "happy" at 0.8, with `fields` changed."""
    import numpy as np

    from ros_fer.pipeline import PersonResult

    scores = np.array([0.2, 0.8], np.float32)
    base = dict(
        track_id=1,
        label="happy",
        confidence=0.8,
        scores=scores,
        raw_scores=scores,
        face_box=np.array([10, 20, 50, 60], np.float32),
        body_box=np.array([0, 0, 100, 200], np.float32),
        face_detected=True,
        body_detected=True,
        notes=[],
    )
    return PersonResult(**{**base, **fields})


def photo(name: str):
    """A real photograph shipped in the ultralytics package (bus.jpg, zidane.jpg), as an RGB uint8 array."""
    from pathlib import Path

    import cv2
    import ultralytics

    return cv2.cvtColor(cv2.imread(str(Path(ultralytics.__file__).parent / "assets" / name)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="session")
def own_data_chain(tmp_path_factory):
    """The README's "Your own data" chain, run once as a user runs it: class folders of real photographs
    (Ancelotti from zidane.jpg, shifted, mirrored, brightened) -> train.py (tiny MLPER, one epoch, the CAER-S
    label set) -> evaluate.py -> export.py at fp32 and int8. Used by test_training (ros-fer infer on the
    export) and test_node (fer_node on the export)."""
    import csv
    import json
    import subprocess
    import sys
    from pathlib import Path

    import cv2
    import numpy as np

    from ros_fer.labels import load_label_set

    root, tmp = Path(__file__).resolve().parent.parent, tmp_path_factory.mktemp("own_data")
    image = cv2.cvtColor(photo("zidane.jpg"), cv2.COLOR_RGB2BGR)[:, 700:]  # Ancelotti
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 3)):
        for cls in ("happy", "sad"):
            for i in range(n):
                dx, dy = rng.integers(0, 60, 2)
                img = image[dy : dy + 600, dx : dx + 500]
                img = img[:, ::-1] if i % 2 else img
                gain = rng.uniform(0.7, 1.3)
                path = tmp / "data" / split / cls / f"{i}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(path), np.clip(img * gain, 0, 255).astype(np.uint8))
    data, run, ev, model = tmp / "data", tmp / "run", tmp / "eval", tmp / "model"
    over = [f"data.root={data}", "data.labels=caers", "data.val_fraction=0.2", "train.epochs=1"]
    over += ["train.batch_size=4", "train.progress=false", "train.tensorboard=false"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "XDG_CACHE_HOME": str(tmp / "cache")}

    def step(script: str, *args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, str(root / "training" / script), *args]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        assert res.returncode == 0, f"{script}: {res.stderr[-2000:]}"
        return res

    step("train.py", "--config", "synthetic_mlper_tiny", "--out", str(run), *over)
    checkpoint = str(run / "best.safetensors")
    evaluated = step(
        "evaluate.py", "--config", "synthetic_mlper_tiny", "--checkpoint", checkpoint, "--out", str(ev), *over
    )
    exported = step("export.py", "--checkpoint", checkpoint, "--precision", "fp32,int8", "--out", str(model))
    classes = list(load_label_set("caers").classes)
    with open(ev / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    return {
        "data": data,
        "model": model,
        "env": env,
        "classes": classes,
        "files": json.loads(exported.stdout)["files"],
        "evaluate_stderr": evaluated.stderr,
        "predicted": {row["image"]: row["predicted"] for row in rows},
        "probability": {row["image"]: [float(row[f"p_{c}"]) for c in classes] for row in rows},
    }


class FixedPeople:
    """A detector that finds the same boxes in every frame (by default two boxes inside bus.jpg's 810 x 1080
    frame): for pipeline tests that compare two paths on the same people and must not depend on a detector,
    e.g. on a GPU machine whose OpenCV 5 has no Haar cascades."""

    name = "fixed"
    warnings: list = []

    def __init__(self, faces=((60, 420, 160, 520), (400, 380, 480, 460)), bodies=((20, 380, 260, 900),)):
        import numpy as np

        from ros_fer.detection import Detections

        rows = lambda boxes: np.array([[*b, 1.0] for b in boxes], np.float32).reshape(-1, 5)  # noqa: E731
        self.found = Detections(rows(faces), rows(bodies))

    def detect(self, rgb):
        return self.found


def haar_or_skip():
    """OpenCV's Haar detector, or a skip where this OpenCV (5) has no cascades."""
    from ros_fer.detection import OpenCVDetector
    from ros_fer.detection.opencv import haar_available

    if not haar_available():
        pytest.skip("this OpenCV has no Haar cascades (OpenCV 5): the test needs the Haar detector")
    return OpenCVDetector
