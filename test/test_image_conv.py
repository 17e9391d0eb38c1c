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
        ({"height": 100000}, "image of 53x100000: a side over 65535 pixels is a corrupt header"),
        ({"height": 5000, "width": 5000}, "image of 5000x5000 = 25000000 pixels is over max_pixels = 16777216"),
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
    with pytest.raises(ImageError, match="JPEG header corrupt at byte 2"):
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
@pytest.mark.parametrize("container", [bytes, list, np.array])
def test_the_node_reads_raw_pixels_in_their_own_order(encoding, container):
    """What the node hands the pipeline (`image_pixels`): bgr8, rgb8 and mono8 as views of the message's
    buffer, in their own channel order; the pipeline's RGB and the debug image's BGR of them are the
    driver's pixels (written out by hand above)."""
    import array

    from ros_fer.image_conv import _buffer, as_bgr, image_pixels
    from ros_fer.pipeline import as_rgb

    fields = hand_fields(encoding, padding=5)
    data = fields["data"]
    fields["data"] = {list: lambda d: array.array("B", d), np.array: lambda d: np.frombuffer(d, np.uint8).copy()}.get(
        container, container
    )(data)
    msg = Image(**fields)
    pixels, color = image_pixels(msg, 3, 2)
    bgr = PIXELS if encoding != "mono8" else np.repeat(PIXELS[..., 1:2], 3, axis=2)
    assert as_rgb(pixels, color).tolist() == bgr[..., ::-1].tolist()
    assert as_bgr(pixels, color).tolist() == bgr.tolist() == image_to_bgr(msg).tolist()
    as_is = encoding in ("bgr8", "rgb8", "mono8")
    assert np.shares_memory(pixels, _buffer(msg.data)) is as_is and color == ("rgb" if encoding == "rgb8" else "bgr")
    assert pixels.ndim == (2 if encoding == "mono8" else 3)
    # a compressed frame the GPU decoded reaches the debug image as an RGB tensor
    import torch

    assert as_bgr(torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1])), "bgr").tolist() == bgr.tolist()


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
        ({"width": 65536, "step": 65536 * 3}, "image of 65536x2: a side over 65535 pixels is a corrupt header"),
        ({"height": 65536}, "image of 3x65536: a side over 65535 pixels is a corrupt header"),
        (
            {"height": 5593, "width": 3000, "step": 9000},
            "image of 3000x5593 = 16779000 pixels is over max_pixels = 16777216",
        ),
        ({"step": 8}, "step 8 is shorter than width x channels = 9"),
        ({"data": bytes(17)}, "data is 17 bytes, height x step = 18"),
    ]
    for change, message in cases:
        with pytest.raises(ImageError) as info:
            image_to_bgr(Image(**{**base, **change}))
        assert str(info.value) == message
    image_to_bgr(Image(**{**base, "step": 9}))  # exactly width x channels: fine


IEND = (0).to_bytes(4, "big") + b"IEND\xaeB`\x82"  # a PNG's last chunk


def png_header(w: int, h: int) -> bytes:
    """The first 24 bytes of a PNG of w x h, written by hand: signature, IHDR length and type, size."""
    return b"\x89PNG\r\n\x1a\n" + (13).to_bytes(4, "big") + b"IHDR" + w.to_bytes(4, "big") + h.to_bytes(4, "big")


def jpeg_header(w: int, h: int) -> bytes:
    """SOI, an APP0 segment, then a baseline frame header (SOF0) declaring w x h: what a JPEG starts with."""
    app0 = b"\xff\xe0" + (16).to_bytes(2, "big") + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + (17).to_bytes(2, "big") + b"\x08" + h.to_bytes(2, "big") + w.to_bytes(2, "big") + b"\x03"
    return b"\xff\xd8" + app0 + sof + bytes(9)


def test_compressed_sizes_are_read_from_the_header_before_decoding():
    """The declared size of a JPEG or PNG comes from its header (checked against hand-written headers and
    against OpenCV's own encoder); above max_pixels the frame is refused without being decoded."""
    from ros_fer.image_conv import check_compressed, compressed_size

    assert compressed_size(png_header(8000, 6000)) == ("png", 8000, 6000)
    assert compressed_size(jpeg_header(640, 480)) == ("jpeg", 640, 480)
    assert compressed_size(b"\xff\xd8\xff\xff" + jpeg_header(33, 7)[2:]) == ("jpeg", 33, 7)  # a fill byte
    for shape in ((37, 53), (1, 8193), (480, 640)):
        for ext, fmt in ((".png", "png"), (".jpg", "jpeg")):
            data = cv2.imencode(ext, np.zeros((*shape, 3), np.uint8))[1].tobytes()
            assert compressed_size(data) == (fmt, shape[1], shape[0])
    # an 8000 x 8000 black PNG is a few hundred kilobytes: refused from its header, never decoded
    big = CompressedImage(format="png", data=png_header(8000, 8000) + bytes(100) + IEND)  # no pixel data at all
    with pytest.raises(ImageError) as info:
        compressed_to_bgr(big)
    assert str(info.value) == "image of 8000x8000 = 64000000 pixels is over max_pixels = 16777216"
    assert info.value.reason == "size"
    assert check_compressed(big, max_pixels=8000 * 8000) == (8000, 8000)  # the cap is the parameter
    for ext, kind in ((".png", "PNG"), (".jpg", "JPEG")):  # cut short: refused before decoding, said why
        whole = cv2.imencode(ext, BGR)[1].tobytes()
        assert check_compressed(CompressedImage(data=whole)) == (53, 37)
        with pytest.raises(ImageError, match=f"truncated {kind} of {len(whole) - 70} bytes") as info:
            check_compressed(CompressedImage(data=whole[:-70]))
        assert info.value.reason == "truncated"
    with pytest.raises(ImageError, match="over max_pixels = 100"):
        compressed_to_bgr(CompressedImage(format="png", data=cv2.imencode(".png", BGR)[1].tobytes()), max_pixels=100)
    for data, message in (
        (b"GIF89a" + bytes(20), r"not a JPEG or PNG \(starts with 47494638\)"),
        (png_header(5, 5)[:20], "PNG without its IHDR header"),
        (b"\xff\xd8\xff\xda\x00\x08" + bytes(10), "JPEG without a frame header"),
        (jpeg_header(0, 10), r"zero-size image \(0x10\)"),
    ):
        with pytest.raises(ImageError, match=message):
            check_compressed(CompressedImage(format="x", data=data))


def test_compressed_limits_and_formats():
    with pytest.raises(ImageError) as info:
        compressed_to_bgr(CompressedImage(format="jpeg", data=bytes((64 << 20) + 1)))
    assert str(info.value) == f"compressed image of {(64 << 20) + 1} bytes is larger than {64 << 20}"
    with pytest.raises(ImageError) as info:
        compressed_to_bgr(CompressedImage(format="jpeg", data=b"\x00\x01"))
    assert str(info.value) == "not a JPEG or PNG (starts with 0001)"
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

    edge = Image(height=4096, width=4096, encoding="mono8", step=4096, data=bytes(4096 * 4096))
    assert image_to_bgr(edge).shape == (4096, 4096, 3)  # exactly max_pixels: accepted
    tall = Image(height=4097 * 4096, width=1, encoding="mono8", step=1, data=b"")
    with pytest.raises(ImageError) as info:  # refused by its size before its (missing) data is looked at
        image_to_bgr(tall)
    assert str(info.value) == "image of 1x16781312: a side over 65535 pixels is a corrupt header"
    strip = Image(height=1, width=65535, encoding="mono8", step=65535, data=bytes(65535))
    assert image_to_bgr(strip, max_pixels=65535).shape == (1, 65535, 3)
    with pytest.raises(ImageError, match="image of 65535x1 = 65535 pixels is over max_pixels = 65534"):
        image_to_bgr(strip, max_pixels=65534)
    wide = cv2.imencode(".png", np.zeros((1, 8192, 3), np.uint8))[1].tobytes()
    assert compressed_to_bgr(CompressedImage(format="png", data=wide)).shape == (1, 8192, 3)
    with pytest.raises(ImageError) as info:  # exactly the byte limit: read, then found to be no image
        compressed_to_bgr(CompressedImage(format="jpeg", data=bytes(64 << 20)))
    assert str(info.value) == "not a JPEG or PNG (starts with 00000000)"
    with pytest.raises(ImageError) as info:
        compressed_to_bgr(CompressedImage(format="jpeg", data=b""))
    assert str(info.value) == "empty compressed image"
    with pytest.raises(ImageError) as info:  # any object with a data field; no format field: '?'
        compressed_to_bgr(SimpleNamespace(data=png_header(4, 4) + bytes(30) + IEND))
    assert str(info.value) == "cannot decode compressed image (format '?')"
    with pytest.raises(KeyError):
        bgr_to_compressed(PIXELS, "bmp")
    assert bgr_to_compressed(PIXELS, "png")["data"][:4] == b"\x89PNG"
    assert bgr_to_compressed(PIXELS, "jpg")["data"][:2] == b"\xff\xd8"


def test_every_refusal_names_its_reason_and_the_jpeg_walk_follows_the_standard():
    """Each way a frame is refused carries the reason the node counts it under (diagnostics
    frames_skipped_<reason>), and the JPEG header walk handles what the standard allows before the frame
    header: fill bytes, markers without a length, empty segments, lengths above 255, a header ending right
    after the size. Bytes written by hand."""
    from types import SimpleNamespace

    from ros_fer.image_conv import check_compressed, check_image, compressed_size

    raw = hand_fields("rgb8")
    for change, reason in (
        ({"encoding": "yuv422"}, "encoding"),
        ({"width": 0}, "size"),
        ({"height": 65536}, "size"),
        ({"height": 5000, "width": 5000}, "size"),
        ({"step": 8}, "layout"),
        ({"data": bytes(17)}, "layout"),
    ):
        with pytest.raises(ImageError) as info:
            check_image(Image(**{**raw, **change}))
        assert info.value.reason == reason, change
    end = cv2.imencode(".jpg", BGR)[1].tobytes()[-2:]
    for data, reason, message in (
        (b"", "layout", "empty compressed image"),
        (bytes((64 << 20) + 1), "size", "compressed image of 67108865 bytes is larger than 67108864"),
        (b"BM" + bytes(30), "header", "not a JPEG or PNG (starts with 424d0000)"),
        (png_header(5, 5)[:20], "header", "PNG without its IHDR header"),
        (b"\xff\xd8\x00\x00" + bytes(20), "header", "JPEG header corrupt at byte 2"),
        (b"\xff\xd8\xff\xd9\x00\x02" + jpeg_header(8, 8)[22:], "header", "JPEG without a frame header"),
        (png_header(4, 4) + bytes(30), "truncated", "truncated PNG of 54 bytes"),
    ):
        with pytest.raises(ImageError) as info:
            check_compressed(CompressedImage(format="x", data=data))
        assert info.value.reason == reason and str(info.value).startswith(message), (data[:8], info.value)
    with pytest.raises(ImageError) as info:  # a header that passes, then no image behind it
        compressed_to_bgr(CompressedImage(format="png", data=png_header(4, 4) + bytes(30) + IEND))
    assert (info.value.reason, str(info.value)) == ("decode", "cannot decode compressed image (format 'png')")
    sof = b"\xff\xc2\x00\x11\x08" + (480).to_bytes(2, "big") + (640).to_bytes(2, "big")  # progressive, then h, w
    walks = {
        "restart and TEM markers": b"\xff\xd8\xff\xd0\xff\x01" + sof,
        "three fill bytes": b"\xff\xd8\xff\xff\xff" + sof,
        "an empty segment": b"\xff\xd8\xff\xe1\x00\x02" + sof,
        "a segment of 258 bytes": b"\xff\xd8\xff\xe2\x01\x02" + bytes(256) + sof,
        "the header ends after the size": b"\xff\xd8" + sof,
    }
    for what, data in walks.items():
        assert compressed_size(data + end) == ("jpeg", 640, 480), what
        assert compressed_size(data) == ("jpeg", 640, 480), what
    with pytest.raises(ImageError, match="JPEG without a frame header"):
        compressed_size(b"\xff\xd8" + sof[:-1])  # the width cut in half
    assert compressed_size(png_header(2**24 + 5, 7)) == ("png", 2**24 + 5, 7)  # all four bytes of a side
    assert compressed_size(png_header(7, 2**24 + 5)) == ("png", 7, 2**24 + 5)
    column = Image(height=65535, width=1, encoding="mono8", step=1, data=bytes(65535))
    assert check_image(column) == (1, 65535)  # the longest side JPEG can declare: accepted
    with pytest.raises(ImageError) as info:
        bgr_to_fields(BGR, "yuv422")
    assert info.value.reason == "encoding"
    # message data as numpy arrays (some bridges hand them over so), any shape
    rows = np.frombuffer(raw["data"], np.uint8).reshape(raw["height"], raw["step"])
    assert image_to_bgr(SimpleNamespace(**{**raw, "data": rows})).tolist() == PIXELS.tolist()
    png = np.frombuffer(cv2.imencode(".png", PIXELS)[1].tobytes(), np.uint8)
    assert compressed_to_bgr(SimpleNamespace(data=png.reshape(1, -1))).tolist() == PIXELS.tolist()
