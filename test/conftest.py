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
