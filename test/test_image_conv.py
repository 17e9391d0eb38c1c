"""sensor_msgs Image/CompressedImage <-> numpy round trips, on real message objects."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import ultralytics
from sensor_msgs.msg import CompressedImage, Image

from ros_fer.image_conv import ImageError, bgr_to_compressed, bgr_to_fields, compressed_to_bgr, image_to_bgr

rng = np.random.default_rng(0)
BGR = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)  # odd sizes: padding bugs show


@pytest.mark.parametrize("encoding", ["bgr8", "rgb8", "bgra8", "rgba8", "mono8"])
@pytest.mark.parametrize("padding", [0, 3])
@pytest.mark.parametrize("bigendian", [0, 1])
def test_round_trip(encoding, padding, bigendian):
    msg = Image(**bgr_to_fields(BGR, encoding, row_padding=padding))
    msg.is_bigendian = bigendian  # 8-bit channels: byte order does not apply
    assert msg.step == 53 * {"mono8": 1, "bgr8": 3, "rgb8": 3}.get(encoding, 4) + padding
    back = image_to_bgr(msg)
    expected = cv2.cvtColor(cv2.cvtColor(BGR, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR) if encoding == "mono8" else BGR
    assert back.shape == (37, 53, 3) and np.array_equal(back, expected)


def test_channel_order_is_respected():
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 2] = 255  # BGR red
    rgb_msg = Image(height=2, width=2, encoding="rgb8", step=6, data=bytes([255, 0, 0] * 4))
    assert np.array_equal(image_to_bgr(rgb_msg), red)


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_compressed_round_trip(fmt):
    photo = cv2.imread(str(Path(ultralytics.__file__).parent / "assets" / "zidane.jpg"))[100:400, 800:1200]
    back = compressed_to_bgr(CompressedImage(**bgr_to_compressed(photo, fmt)))
    assert back.shape == photo.shape
    if fmt == "png":  # lossless
        assert np.array_equal(back, photo)
    else:
        assert np.abs(back.astype(int) - photo.astype(int)).mean() < 3


@pytest.mark.parametrize(
    "change, message",
    [
        ({"encoding": "yuv422"}, "unsupported encoding 'yuv422'"),
        ({"encoding": "16UC1"}, "unsupported encoding"),
        ({"height": 0, "width": 0, "step": 0, "data": b""}, "zero-size"),
        ({"height": 100000}, "larger than 8192"),
        ({"step": 10}, "step 10 is shorter"),
        ({"data": bytes(10)}, "data is 10 bytes"),
    ],
)
def test_malformed_images_are_named(change, message):
    fields = {**bgr_to_fields(BGR), **change}
    with pytest.raises(ImageError, match=message):
        image_to_bgr(Image(**fields))


def test_malformed_compressed_images():
    with pytest.raises(ImageError, match="empty"):
        compressed_to_bgr(CompressedImage(format="jpeg", data=b""))
    with pytest.raises(ImageError, match="cannot decode"):
        compressed_to_bgr(CompressedImage(format="jpeg", data=b"\xff\xd8not really a jpeg"))
