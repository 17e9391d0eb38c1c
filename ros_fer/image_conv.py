"""sensor_msgs Image / CompressedImage <-> numpy, in plain numpy and OpenCV (cv_bridge is not on PyPI).
Works on any object with the message's fields, so it needs no rclpy."""

from __future__ import annotations

import warnings

import cv2
import numpy as np

from .errors import InputShapeError

# Image files the front doors read with OpenCV (`ros-fer infer`, `ros-fer adapt`).
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
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
MAX_PIXELS = 4096 * 4096  # the node's max_pixels default: more than any robot camera sends
MAX_SIDE = 65535  # what JPEG can declare; a longer side is a corrupt header
MAX_COMPRESSED_BYTES = 64 << 20


class ImageError(InputShapeError):
    """A frame that cannot be turned into an image; the node skips it, counts `reason`, and stays alive.
    Reasons: encoding, size (zero, or over max_pixels), layout (step or data length), header (a compressed
    image whose size cannot be read without decoding), truncated (no end-of-image marker), decode."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def _buffer(data) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8)
    return np.frombuffer(memoryview(data), np.uint8)


def check_size(w: int, h: int, max_pixels: int) -> None:
    if h <= 0 or w <= 0:
        raise ImageError(f"zero-size image ({w}x{h})", "size")
    if w > MAX_SIDE or h > MAX_SIDE:
        raise ImageError(f"image of {w}x{h}: a side over {MAX_SIDE} pixels is a corrupt header", "size")
    if w * h > max_pixels:
        raise ImageError(f"image of {w}x{h} = {w * h} pixels is over max_pixels = {max_pixels}", "size")


def check_image(msg, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """What can be checked of a sensor_msgs/Image without touching its pixels: the encoding, the size against
    `max_pixels`, the step and the data length. Returns (width, height); raises ImageError."""
    encoding = str(msg.encoding).lower()
    if encoding not in ENCODINGS:
        raise ImageError(f"unsupported encoding {msg.encoding!r}; supported: {', '.join(ENCODINGS)}", "encoding")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    check_size(w, h, max_pixels)
    channels = ENCODINGS[encoding][0]
    if step < w * channels:
        raise ImageError(f"step {step} is shorter than width x channels = {w * channels}", "layout")
    size = _buffer(msg.data).size  # bytes, whatever shape a bridge handed the data in
    if size != h * step:
        raise ImageError(f"data is {size} bytes, height x step = {h * step}", "layout")
    return w, h


def image_to_bgr(msg, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A sensor_msgs/Image as a BGR uint8 array [H, W, 3]. 8-bit encodings: byte order is moot, so either
    is_bigendian is accepted; rows may be padded (step > width * channels)."""
    return decode_image(msg, *check_image(msg, max_pixels))


def _pixels(msg, w: int, h: int, channels: int) -> np.ndarray:
    """An Image's pixels [H, W, channels], a view of its buffer: rows padded beyond the width skipped."""
    return _buffer(msg.data).reshape(h, int(msg.step))[:, : w * channels].reshape(h, w, channels)


def decode_image(msg, w: int, h: int) -> np.ndarray:
    """The pixels of an Image that `check_image` passed as w x h (the node checks on arrival, decodes later)."""
    channels, code = ENCODINGS[str(msg.encoding).lower()]
    pixels = _pixels(msg, w, h, channels)
    if code is None:
        return np.ascontiguousarray(pixels)
    return cv2.cvtColor(pixels if channels > 1 else pixels[:, :, 0], code)


def image_pixels(msg, w: int, h: int) -> tuple[np.ndarray, str]:
    """An Image's pixels as the pipeline takes them, and their channel order (`Pipeline.process`'s `color`):
    bgr8 and rgb8 as they came, mono8 as H x W grey, each a view of the message's buffer (no copy; rows
    padded beyond the width are skipped by the view); the four-channel encodings converted to BGR. The node
    reads these: an rgb8 camera's frame is not turned into BGR here only to be turned back into RGB by the
    pipeline (on the GPU path the frame crosses as it came and is made RGB there)."""
    encoding = str(msg.encoding).lower()
    if encoding not in ("bgr8", "rgb8", "mono8"):
        return decode_image(msg, w, h), "bgr"
    pixels = _pixels(msg, w, h, ENCODINGS[encoding][0])
    return (pixels[:, :, 0] if encoding == "mono8" else pixels), ("rgb" if encoding == "rgb8" else "bgr")


def as_bgr(frame, color: str) -> np.ndarray:
    """A frame as the node handed it to the pipeline (`image_pixels`' array and order, or an RGB tensor the
    GPU decoded) as a BGR array on the host, for drawing the debug image."""
    if not isinstance(frame, np.ndarray):
        return np.ascontiguousarray(frame.cpu().numpy()[:, :, ::-1])
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(frame, cv2.COLOR_RGB2BGR) if color == "rgb" else frame


END_MARKERS = {"jpeg": b"\xff\xd9", "png": b"IEND"}  # what a complete JPEG / PNG has near its end
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def is_jpeg(data) -> bool:
    """Whether the bytes start as a JPEG does (its SOI marker)."""
    return bytes(_buffer(data)[:2]) == b"\xff\xd8"


def compressed_size(data: bytes | np.ndarray) -> tuple[str, int, int]:
    """(format, width, height) a JPEG or PNG declares in its header, read without decoding (a few hundred
    bytes at most). Raises ImageError (reason `header`) for anything else or a header cut short."""
    b = memoryview(_buffer(data))
    if bytes(b[:8]) == b"\x89PNG\r\n\x1a\n":
        if len(b) < 24 or bytes(b[12:16]) != b"IHDR":
            raise ImageError("PNG without its IHDR header", "header")
        return "png", int.from_bytes(b[16:20], "big"), int.from_bytes(b[20:24], "big")
    if is_jpeg(data):
        i = 2
        while i + 4 <= len(b):  # segments: FF marker, 2-byte length; the frame header (SOF) holds the size
            if b[i] != 0xFF:
                raise ImageError(f"JPEG header corrupt at byte {i}", "header")
            marker = b[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
                i += 2
                continue
            length = int.from_bytes(b[i + 2 : i + 4], "big")
            if marker in _JPEG_SOF:
                if i + 9 > len(b):
                    break
                return "jpeg", int.from_bytes(b[i + 7 : i + 9], "big"), int.from_bytes(b[i + 5 : i + 7], "big")
            if marker in (0xD9, 0xDA) or length < 2:  # end of image or scan data before any frame header
                break
            i += 2 + length
        raise ImageError("JPEG without a frame header (SOF) before its image data", "header")
    raise ImageError(f"not a JPEG or PNG (starts with {bytes(b[:4]).hex()})", "header")


def check_compressed(msg, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """What can be checked of a sensor_msgs/CompressedImage without decoding it: its byte size, its format
    (JPEG or PNG, what image_transport publishes) and the size its header declares against `max_pixels`.
    Returns (width, height); raises ImageError."""
    size = _buffer(msg.data).size  # bytes, whatever shape a bridge handed the data in
    if size == 0:
        raise ImageError("empty compressed image", "layout")
    if size > MAX_COMPRESSED_BYTES:
        raise ImageError(f"compressed image of {size} bytes is larger than {MAX_COMPRESSED_BYTES}", "size")
    kind, w, h = compressed_size(msg.data)
    check_size(w, h, max_pixels)
    tail = bytes(memoryview(_buffer(msg.data))[-64:])
    if END_MARKERS[kind] not in tail:
        raise ImageError(f"truncated {kind.upper()} of {size} bytes (no end-of-image marker)", "truncated")
    return w, h


def compressed_to_bgr(msg, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A sensor_msgs/CompressedImage (JPEG or PNG) as a BGR uint8 array, its size checked from the header
    before anything is decoded."""
    return decode_compressed(msg, *check_compressed(msg, max_pixels))


def decode_compressed(msg, w: int, h: int) -> np.ndarray:
    """The pixels of a CompressedImage that `check_compressed` passed as w x h."""
    return decode_bytes(msg.data, w, h, getattr(msg, "format", "?"))


def decode_bytes(data, w: int | None = None, h: int | None = None, fmt: str = "?") -> np.ndarray:
    """JPEG or PNG bytes as a BGR uint8 array (OpenCV); w x h, when given, is what the header said."""
    bgr = cv2.imdecode(_buffer(data), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageError(f"cannot decode compressed image (format {fmt!r})", "decode")
    if w is not None and bgr.shape[:2] != (h, w):
        raise ImageError(f"decoded {bgr.shape[1]}x{bgr.shape[0]}, the header said {w}x{h}", "decode")
    return bgr


def decode_jpeg_tensor(data, device: str = "cpu", w: int | None = None, h: int | None = None):
    """JPEG bytes as a uint8 RGB tensor [H, W, 3] on `device`, decoded there: on CUDA by nvjpeg (through
    torchvision; the compressed bytes are all that crosses), elsewhere by torchvision's libjpeg."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    raw = torch.from_numpy(np.array(_buffer(data)))  # a copy: torchvision wants a writable tensor
    cuda = str(device).startswith("cuda")
    try:
        # nvjpeg decodes on torchvision's own stream, ordered with neither side of the caller's: wait for the
        # caller's stream before, and for the decode after, so the pixels are whole where they are used.
        if cuda:
            torch.cuda.current_stream(device).synchronize()
        with warnings.catch_warnings():  # torchvision >= 0.29 points to TorchCodec on every call; not here
            warnings.simplefilter("ignore", DeprecationWarning)
            chw = decode_jpeg(raw, mode=ImageReadMode.RGB, device=device)
        if cuda:
            torch.cuda.synchronize(device)
    except RuntimeError as exc:
        raise ImageError(f"cannot decode JPEG: {str(exc).splitlines()[0]}", "decode") from exc
    if w is not None and tuple(chw.shape[1:]) != (h, w):
        raise ImageError(f"decoded {chw.shape[2]}x{chw.shape[1]}, the header said {w}x{h}", "decode")
    return chw.permute(1, 2, 0).contiguous()


def bgr_to_fields(bgr: np.ndarray, encoding: str = "bgr8", row_padding: int = 0) -> dict:
    """The fields of a sensor_msgs/Image holding `bgr` in `encoding` (rows padded by `row_padding` bytes)."""
    if encoding not in FROM_BGR:
        raise ImageError(f"unsupported encoding {encoding!r}", "encoding")
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
        raise ImageError(f"cannot encode image as {fmt}", "encoding")
    return {"format": fmt, "data": buf.tobytes()}
