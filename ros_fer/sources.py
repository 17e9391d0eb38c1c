"""Where frames come from: image files, folders of images, video files and ROS 2 bags (rosbag2 folders,
.mcap and .db3 files), as one family that `ros-fer infer`, `ros-fer adapt` and the tests use. Every source
yields `Frame`s in order, and a `Skipped` in place of a frame it cannot read, with the reason the node gives
for the same fault (`image_conv.ImageError`): one rule for every frame source, and one bad frame never ends
a batch run.

The inputs are resolved first (`resolve_inputs`), before any model loads: a path that does not exist,
a folder without images or a pattern matching nothing is an error naming it."""

from __future__ import annotations

import glob
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import FerError
from .image_conv import IMAGE_SUFFIXES, MAX_PIXELS, ImageError, check_compressed, check_size, decode_bytes

GLOB_CHARS = set("*?[")


@dataclass
class Frame:
    """A BGR frame of `source` (a file or bag); `index` counts the frames of a video or a bag topic (0 for an
    image). Bag frames also carry their message's header (`header`: stamp and frame_id, as recorded), the
    recording time (`time_ns`) and the raw message (`raw`: connection and CDR bytes) to copy it."""

    source: str
    index: int
    image: np.ndarray
    header: object = None
    time_ns: int | None = None
    raw: tuple | None = None


@dataclass
class Skipped:
    """A frame (or a whole file) that could not be read: `reason` as the node counts it, `message` why."""

    source: str
    index: int
    reason: str
    message: str

    def __str__(self) -> str:
        where = self.source if self.index == 0 else f"{self.source} frame {self.index}"
        return f"{where}: {self.message} ({self.reason})"


def _suffixes() -> str:
    return ", ".join(sorted(IMAGE_SUFFIXES))


def resolve_inputs(inputs: Sequence[str]) -> list[Path]:
    """The files the inputs name, in order: files as given, a folder's images sorted by name, a glob
    pattern's matches (quoted, or one the shell left as it was). Raises FerError naming the first input
    that names nothing."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if is_bag(path):
            files.append(path)
        elif path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise FerError(f"folder {path} holds no images (looked for {_suffixes()})")
            files += found
        elif path.is_file():
            files.append(path)
        elif GLOB_CHARS & set(item):
            found = sorted(Path(p) for p in glob.glob(item) if Path(p).is_file())
            if not found:
                raise FerError(f"pattern {item!r} matches no file")
            files += found
        else:
            raise FerError(f"input {path} does not exist")
    return files


def read_image_file(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An image file as BGR. JPEG and PNG get the node's checks on their bytes first (the header's size
    against `max_pixels`, the end-of-image marker: a truncated file is refused, not half-decoded); other
    formats are decoded by OpenCV, their size checked after. Raises ImageError with the node's reason."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read file: {exc.strerror or exc}", "decode") from exc
    if not data:
        raise ImageError("empty file", "layout")
    head = data[:8]
    if head.startswith(b"\xff\xd8") or head == b"\x89PNG\r\n\x1a\n":
        w, h = check_compressed(_Bytes(data), max_pixels)
        return decode_bytes(data, w, h, Path(path).suffix.lstrip(".").lower() or "?")
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageError(f"cannot decode image (not a format OpenCV reads; starts with {head[:4].hex()})", "decode")
    check_size(bgr.shape[1], bgr.shape[0], max_pixels)
    return bgr


@dataclass
class _Bytes:
    """The one field of a CompressedImage that its checks read."""

    data: bytes


def frames(files: Sequence[Path], max_pixels: int = MAX_PIXELS, bag: dict | None = None) -> Iterator[Frame | Skipped]:
    """Every frame of the files (from `resolve_inputs`), or a Skipped where one cannot be read. `bag`: the
    options of `Bag` (topic, start, end, every) for the recordings among them."""
    for file in files:
        source = str(file)
        if is_bag(file):
            yield from Bag(file, **(bag or {})).frames(max_pixels)
            continue
        if file.suffix.lower() in IMAGE_SUFFIXES:
            try:
                yield Frame(source, 0, read_image_file(file, max_pixels))
            except ImageError as exc:
                yield Skipped(source, 0, exc.reason, str(exc))
            continue
        video = cv2.VideoCapture(source)
        if not video.isOpened():
            yield Skipped(source, 0, "decode", "cannot open it as an image or a video")
            continue
        index = 0
        try:
            while True:
                ok, image = video.read()
                if not ok:
                    break
                try:
                    check_size(image.shape[1], image.shape[0], max_pixels)
                except ImageError as exc:
                    yield Skipped(source, index, exc.reason, str(exc))
                else:
                    yield Frame(source, index, image)
                index += 1
        finally:
            video.release()
        if index == 0:
            yield Skipped(source, 0, "decode", "a video without a frame that could be decoded")


# ---- ROS 2 bags ---------------------------------------------------------------------------------------------

BAG_SUFFIXES = (".mcap", ".db3")
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


def is_bag(path: Path) -> bool:
    """A rosbag2 recording: a folder with metadata.yaml, or one of its storage files (.mcap, .db3)."""
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or (
        path.is_file() and path.suffix.lower() in BAG_SUFFIXES
    )


def typestore():
    """rosbags' message types of ROS 2 (sensor_msgs, std_msgs, ...) plus this package's, registered from
    its own .msg files, so a bag written here embeds their definitions."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    folder = Path(__file__).resolve().parent.parent / "ros_fer_msgs" / "msg"
    if not folder.is_dir():  # an install: the message package's share folder
        from ament_index_python.packages import get_package_share_directory

        folder = Path(get_package_share_directory("ros_fer_msgs")) / "msg"
    types = {}
    for msg in sorted(folder.glob("*.msg")):
        types.update(get_types_from_msg(msg.read_text(), f"ros_fer_msgs/msg/{msg.stem}"))
    store.register(types)
    return store


class Bag:
    """The camera frames of a recording, in recording order: `topic` names the camera; without it the
    bag's single image topic. `start`/`end`: seconds from the bag's start; `every`: one message in N.
    Frames the node would refuse are Skipped with the node's reason (same checks), never ending the run."""

    def __init__(self, path: str | Path, topic: str | None = None, start=None, end=None, every: int = 1):
        from rosbags.rosbag2 import Reader

        self.path, self.every = Path(path), max(1, int(every))
        self.start, self.end = start, end
        try:
            self.reader = Reader(self.path)
            self.reader.open()
        except Exception as exc:  # noqa: BLE001 - truncated, corrupt, wrong format: all name the file
            raise FerError(f"cannot read bag {self.path}: {exc}") from exc
        images = [c for c in self.reader.connections if c.msgtype in IMAGE_TYPES]
        listing = "; ".join(f"{c.topic} ({c.msgtype}, {c.msgcount} messages)" for c in self.reader.connections)
        if topic is not None:
            images = [c for c in images if c.topic == topic]
            if not images:
                raise FerError(f"bag {self.path} has no image topic {topic!r}; its topics: {listing or 'none'}")
        elif not images:
            raise FerError(f"bag {self.path} has no sensor_msgs Image or CompressedImage topic; its topics: {listing}")
        elif len({c.topic for c in images if c.msgcount}) > 1:  # an empty topic is no camera to choose
            raise FerError(
                f"bag {self.path} has several image topics; pick one with --topic: "
                + "; ".join(f"{c.topic} ({c.msgtype}, {c.msgcount} messages)" for c in images)
            )
        recorded = [c for c in images if c.msgcount] or images
        self.topic = recorded[0].topic
        self.connections = [c for c in images if c.topic == self.topic]
        self.store = typestore()

    def __enter__(self) -> Bag:
        return self

    def __exit__(self, *exc) -> None:
        self.reader.close()

    def __len__(self) -> int:
        """Messages of the camera topic (before --start/--end/--every thin them)."""
        return sum(c.msgcount for c in self.connections)

    def _window(self) -> tuple[int | None, int | None]:
        t0 = self.reader.start_time
        start = None if self.start is None else t0 + int(self.start * 1e9)
        end = None if self.end is None else t0 + int(self.end * 1e9) + 1
        return start, end

    def frames(self, max_pixels: int = MAX_PIXELS) -> Iterator[Frame | Skipped]:
        from .image_conv import check_image, decode_compressed, decode_image

        source = str(self.path)
        start, end = self._window()
        try:
            for n, (conn, time_ns, raw) in enumerate(self.reader.messages(self.connections, start=start, stop=end)):
                if n % self.every:
                    continue
                try:
                    msg = self.store.deserialize_cdr(raw, conn.msgtype)
                except Exception as exc:  # noqa: BLE001 - a corrupt message is skipped, the rest answered
                    yield Skipped(source, n, "decode", f"message at {time_ns} ns cannot be deserialized ({exc})")
                    continue
                try:
                    if conn.msgtype.endswith("CompressedImage"):
                        bgr = decode_compressed(msg, *check_compressed(msg, max_pixels))
                    else:
                        bgr = decode_image(msg, *check_image(msg, max_pixels))
                except ImageError as exc:
                    yield Skipped(source, n, exc.reason, str(exc))
                    continue
                yield Frame(source, n, bgr, msg.header, time_ns, (conn, raw))
        finally:
            self.reader.close()


class BagWriter:
    """`/emotion` (ros_fer_msgs/EmotionArray, the node's own conversion `messages.to_msg`) into a rosbag2 folder,
    beside a copy of the camera topic so it plays on its own. The storage follows the name: `.db3` SQLite,
    otherwise MCAP; the folder is the name without its suffix."""

    def __init__(self, path: str | Path, copy_camera: bool = True):
        from rosbags.rosbag2 import StoragePlugin, Writer

        path = Path(path)
        plugin = StoragePlugin.SQLITE3 if path.suffix.lower() == ".db3" else StoragePlugin.MCAP
        self.path = path.with_suffix("") if path.suffix.lower() in BAG_SUFFIXES else path
        if self.path.exists():
            raise FerError(f"--out-bag {self.path} exists; a bag is written into a new folder")
        self.store, self.copy_camera = typestore(), copy_camera
        self.writer = Writer(self.path, version=9, storage_plugin=plugin)
        self.writer.open()
        self.emotion = self.writer.add_connection("/emotion", "ros_fer_msgs/msg/EmotionArray", typestore=self.store)
        self.cameras: dict = {}

    def write(self, frame: Frame, result, latency: float) -> None:
        from .messages import rosbags_kit, to_msg

        conn, raw = frame.raw
        if self.copy_camera:
            if conn.topic not in self.cameras:  # the recorded definition, where the bag kept one
                known = {"msgdef": conn.msgdef.data, "rihs01": conn.digest} if conn.msgdef.data and conn.digest else {}
                self.cameras[conn.topic] = self.writer.add_connection(
                    conn.topic, conn.msgtype, typestore=self.store, **known
                )
            self.writer.write(self.cameras[conn.topic], frame.time_ns, raw)
        msg = to_msg(result, frame.header, latency, rosbags_kit(self.store))
        self.writer.write(self.emotion, frame.time_ns, self.store.serialize_cdr(msg, "ros_fer_msgs/msg/EmotionArray"))

    def close(self) -> None:
        self.writer.close()
