"""sensor_msgs Image / CompressedImage <-> numpy, in plain numpy and OpenCV (cv_bridge is not on PyPI).
Works on any object with the message's fields, so it needs no rclpy."""

from __future__ import annotations

import cv2
import numpy as np

from .errors import InputShapeError

# encoding -> (channels, conversion to BGR)
ENCODINGS = {
    "bgr8": (3, None),
    "rgb8": (3, cv2.COLOR_RGB2BGR),
    "mono8": (1, cv2.COLOR_GRAY2BGR),
    "bgra8": (4, cv2.COLOR_BGRA2BGR),
    "rgba8": (4, cv2.COLOR_RGBA2BGR),
}
FROM_BGR = {
    "bgr8": None,
    "rgb8": cv2.COLOR_BGR2RGB,
    "mono8": cv2.COLOR_BGR2GRAY,
    "bgra8": cv2.COLOR_BGR2BGRA,
    "rgba8": cv2.COLOR_BGR2RGBA,
}
MAX_SIDE = 8192  # larger is a corrupt header, not a camera
MAX_COMPRESSED_BYTES = 64 << 20


class ImageError(InputShapeError):
    """A frame that cannot be turned into an image; the node skips it and stays alive."""


def _buffer(data) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8)
    return np.frombuffer(memoryview(data), np.uint8)


def image_to_bgr(msg) -> np.ndarray:
    """A sensor_msgs/Image as a BGR uint8 array [H, W, 3]. 8-bit encodings: byte order is moot, so either
    is_bigendian is accepted; rows may be padded (step > width * channels)."""
    encoding = str(msg.encoding).lower()
    if encoding not in ENCODINGS:
        raise ImageError(f"unsupported encoding {msg.encoding!r}; supported: {', '.join(ENCODINGS)}")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h == 0 or w == 0:
        raise ImageError(f"zero-size image ({w}x{h})")
    if h > MAX_SIDE or w > MAX_SIDE:
        raise ImageError(f"image of {w}x{h} is larger than {MAX_SIDE} pixels a side")
    channels, code = ENCODINGS[encoding]
    if step < w * channels:
        raise ImageError(f"step {step} is shorter than width x channels = {w * channels}")
    data = _buffer(msg.data)
    if data.size != h * step:
        raise ImageError(f"data is {data.size} bytes, height x step = {h * step}")
    pixels = data.reshape(h, step)[:, : w * channels].reshape(h, w, channels)
    if code is None:
        return np.ascontiguousarray(pixels)
    return cv2.cvtColor(pixels if channels > 1 else pixels[:, :, 0], code)


def compressed_to_bgr(msg) -> np.ndarray:
    """A sensor_msgs/CompressedImage (JPEG, PNG, ...) as a BGR uint8 array."""
    data = _buffer(msg.data)
    if data.size == 0:
        raise ImageError("empty compressed image")
    if data.size > MAX_COMPRESSED_BYTES:
        raise ImageError(f"compressed image of {data.size} bytes is larger than {MAX_COMPRESSED_BYTES}")
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageError(f"cannot decode compressed image (format {getattr(msg, 'format', '?')!r})")
    if bgr.shape[0] > MAX_SIDE or bgr.shape[1] > MAX_SIDE:
        raise ImageError(f"image of {bgr.shape[1]}x{bgr.shape[0]} is larger than {MAX_SIDE} pixels a side")
    return bgr


def bgr_to_fields(bgr: np.ndarray, encoding: str = "bgr8", row_padding: int = 0) -> dict:
    """The fields of a sensor_msgs/Image holding `bgr` in `encoding` (rows padded by `row_padding` bytes)."""
    if encoding not in FROM_BGR:
        raise ImageError(f"unsupported encoding {encoding!r}")
    code = FROM_BGR[encoding]
    pixels = bgr if code is None else cv2.cvtColor(bgr, code)
    h, w = pixels.shape[:2]
    rows = pixels.reshape(h, -1)
    if row_padding:
        rows = np.concatenate([rows, np.zeros((h, row_padding), np.uint8)], axis=1)
    return {
        "height": h,
        "width": w,
        "encoding": encoding,
        "is_bigendian": 0,
        "step": rows.shape[1],
        "data": np.ascontiguousarray(rows).tobytes(),
    }


def bgr_to_compressed(bgr: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> dict:
    ext = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}[fmt]
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, bgr, params)
    if not ok:
        raise ImageError(f"cannot encode image as {fmt}")
    return {"format": fmt, "data": buf.tobytes()}
