"""The suite's offline environment, set before anything imports open_clip, huggingface_hub or ultralytics."""

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["YOLO_OFFLINE"] = "1"
os.environ["YOLO_AUTOINSTALL"] = "0"
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="ros_fer_yolo_"))

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
