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


# ---- byte-level checks against hand-written buffers (not the package's own encoder) -----------------

PIXELS = np.array([[[10, 20, 30], [40, 50, 60], [70, 80, 90]], [[1, 2, 3], [4, 5, 6], [7, 8, 9]]], np.uint8)  # BGR


def hand_fields(encoding: str, padding: int = 0) -> dict:
    """The bytes a camera driver would send for PIXELS (2 x 3) in `encoding`, written out by hand."""
    b, g, r = PIXELS[..., 0].astype(int), PIXELS[..., 1].astype(int), PIXELS[..., 2].astype(int)
    per_pixel = {
        "bgr8": lambda i, j: [b[i, j], g[i, j], r[i, j]],
        "rgb8": lambda i, j: [r[i, j], g[i, j], b[i, j]],
        "bgra8": lambda i, j: [b[i, j], g[i, j], r[i, j], 255],
        "rgba8": lambda i, j: [r[i, j], g[i, j], b[i, j], 255],
        "mono8": lambda i, j: [g[i, j]],
    }[encoding]
    rows = [sum((per_pixel(i, j) for j in range(3)), []) + [0xEE] * padding for i in range(2)]
    return {"height": 2, "width": 3, "encoding": encoding, "step": len(rows[0]), "data": bytes(sum(rows, []))}


@pytest.mark.parametrize("encoding", ["bgr8", "rgb8", "bgra8", "rgba8", "mono8"])
@pytest.mark.parametrize("container", [bytes, bytearray, list, np.array])
def test_driver_bytes_decode_to_the_right_pixels(encoding, container):
    fields = hand_fields(encoding, padding=5)  # padded rows: the padding bytes (0xEE) must never show
    data = fields["data"]
    fields["data"] = np.frombuffer(data, np.uint8).copy() if container is np.array else container(data)
    if container is list:  # rclpy hands uint8[] fields over as array('B'); a list is what users write
        import array

        fields["data"] = array.array("B", data)
    out = image_to_bgr(Image(**fields))
    expected = PIXELS if encoding != "mono8" else np.repeat(PIXELS[..., 1:2], 3, axis=2)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    assert out.tolist() == expected.tolist()
    # upper-case encodings, as some drivers send them
    assert image_to_bgr(Image(**{**hand_fields(encoding), "encoding": encoding.upper()})).tolist() == expected.tolist()


@pytest.mark.parametrize("encoding", ["bgr8", "rgb8", "bgra8", "rgba8", "mono8"])
def test_fields_are_the_bytes_a_driver_sends(encoding):
    grey = PIXELS.copy()
    grey[:] = PIXELS[..., 1:2]  # equal channels: mono8's grey is exact
    source = PIXELS if encoding != "mono8" else grey
    fields = bgr_to_fields(source, encoding, row_padding=2)
    want = hand_fields(encoding, padding=0)
    per_row = len(want["data"]) // 2
    assert fields["height"] == 2 and fields["width"] == 3 and fields["encoding"] == encoding
    assert fields["is_bigendian"] == 0 and fields["step"] == per_row + 2
    rows = [fields["data"][i * (per_row + 2) : (i + 1) * (per_row + 2)] for i in range(2)]
    assert [r[:per_row] for r in rows] == [want["data"][:per_row], want["data"][per_row:]]
    assert all(r[per_row:] == b"\x00\x00" for r in rows)
    with pytest.raises(ImageError, match="unsupported encoding 'yuv422'"):
        bgr_to_fields(PIXELS, "yuv422")


def test_error_messages_name_the_numbers():
    base = hand_fields("rgb8")
    cases = [
        ({"encoding": "yuv422"}, "unsupported encoding 'yuv422'; supported: bgr8, rgb8, mono8, bgra8, rgba8"),
        ({"width": 0}, "zero-size image (0x2)"),
        ({"height": 0}, "zero-size image (3x0)"),
        ({"width": 8193, "step": 8193 * 3}, "image of 8193x2 is larger than 8192 pixels a side"),
        ({"height": 8193}, "image of 3x8193 is larger than 8192 pixels a side"),
        ({"step": 8}, "step 8 is shorter than width x channels = 9"),
        ({"data": bytes(17)}, "data is 17 bytes, height x step = 18"),
    ]
    for change, message in cases:
        with pytest.raises(ImageError) as info:
            image_to_bgr(Image(**{**base, **change}))
        assert str(info.value) == message
    image_to_bgr(Image(**{**base, "step": 9}))  # exactly width x channels: fine


def test_compressed_limits_and_formats():
    tall = np.zeros((8193, 1, 3), np.uint8)
    png = cv2.imencode(".png", tall)[1].tobytes()
    with pytest.raises(ImageError) as info:
        compressed_to_bgr(CompressedImage(format="png", data=png))
    assert str(info.value) == "image of 1x8193 is larger than 8192 pixels a side"
    wide = cv2.imencode(".png", np.zeros((1, 8193, 3), np.uint8))[1].tobytes()
    with pytest.raises(ImageError, match="image of 8193x1 is larger"):
        compressed_to_bgr(CompressedImage(format="png", data=wide))
    edge = cv2.imencode(".png", np.zeros((8192, 1, 3), np.uint8))[1].tobytes()
    assert compressed_to_bgr(CompressedImage(format="png", data=edge)).shape == (8192, 1, 3)
    with pytest.raises(ImageError) as info:
        compressed_to_bgr(CompressedImage(format="jpeg", data=bytes((64 << 20) + 1)))
    assert str(info.value) == f"compressed image of {(64 << 20) + 1} bytes is larger than {64 << 20}"
    with pytest.raises(ImageError) as info:
        compressed_to_bgr(CompressedImage(format="jpeg", data=b"\x00\x01"))
    assert str(info.value) == "cannot decode compressed image (format 'jpeg')"
    grey = compressed_to_bgr(CompressedImage(format="png", data=cv2.imencode(".png", PIXELS[..., 1])[1].tobytes()))
    assert grey.shape == (2, 3, 3) and grey.tolist() == np.repeat(PIXELS[..., 1:2], 3, axis=2).tolist()
    # encoding: the format named, JPEG quality honoured, PNG lossless
    photo = cv2.imread(str(Path(ultralytics.__file__).parent / "assets" / "bus.jpg"))[:200, :200]
    low, high = bgr_to_compressed(photo, "jpeg", quality=10), bgr_to_compressed(photo, "jpg", quality=95)
    assert low["format"] == "jpeg" and high["format"] == "jpg" and low["data"][:2] == b"\xff\xd8"
    assert len(low["data"]) < len(high["data"]) / 2
    assert np.array_equal(cv2.imdecode(np.frombuffer(bgr_to_compressed(photo, "png")["data"], np.uint8), 1), photo)
    assert cv2.imdecode(np.frombuffer(high["data"], np.uint8), 1).shape == photo.shape


def test_limits_are_inclusive_and_messages_exact():
    from types import SimpleNamespace

    edge_h = Image(height=8192, width=1, encoding="mono8", step=1, data=bytes(8192))
    assert image_to_bgr(edge_h).shape == (8192, 1, 3)  # exactly the limit: accepted
    edge_w = Image(height=1, width=8192, encoding="mono8", step=8192, data=bytes(8192))
    assert image_to_bgr(edge_w).shape == (1, 8192, 3)
    wide = cv2.imencode(".png", np.zeros((1, 8192, 3), np.uint8))[1].tobytes()
    assert compressed_to_bgr(CompressedImage(format="png", data=wide)).shape == (1, 8192, 3)
    with pytest.raises(ImageError) as info:  # exactly the byte limit: read, then found undecodable
        compressed_to_bgr(CompressedImage(format="jpeg", data=bytes(64 << 20)))
    assert str(info.value) == "cannot decode compressed image (format 'jpeg')"
    with pytest.raises(ImageError) as info:
        compressed_to_bgr(CompressedImage(format="jpeg", data=b""))
    assert str(info.value) == "empty compressed image"
    with pytest.raises(ImageError) as info:  # any object with a data field; no format field: '?'
        compressed_to_bgr(SimpleNamespace(data=b"\x00\x01\x02"))
    assert str(info.value) == "cannot decode compressed image (format '?')"
    with pytest.raises(KeyError):
        bgr_to_compressed(PIXELS, "bmp")
    assert bgr_to_compressed(PIXELS, "png")["data"][:4] == b"\x89PNG"
    assert bgr_to_compressed(PIXELS, "jpg")["data"][:2] == b"\xff\xd8"
