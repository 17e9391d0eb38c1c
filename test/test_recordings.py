"""Recordings in, emotions out: ROS 2 bags (MCAP and SQLite, written here with rosbags' own writer) through
`ros-fer infer` as a user types it, the output bag read back with rosbags' own reader, and `ros-fer adapt`
from a bag's time ranges against the same frames as folders."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import photo
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

ROS_FER = str(Path(sys.executable).with_name("ros-fer"))
STORE = get_typestore(Stores.ROS2_HUMBLE)
Image = STORE.types["sensor_msgs/msg/Image"]
Compressed = STORE.types["sensor_msgs/msg/CompressedImage"]
Header = STORE.types["std_msgs/msg/Header"]
Time = STORE.types["builtin_interfaces/msg/Time"]
String = STORE.types["std_msgs/msg/String"]
PARAMS = {"backbone": "tiny-random", "pretrained": "", "detector": "opencv", "backend": "torch", "device": "cpu"}
SET = [a for k, v in PARAMS.items() for a in ("--set", f"{k}={v}")]


def pictures() -> list[np.ndarray]:
    """BGR 640x360 frames of the two bundled photographs (Haar finds faces in zidane.jpg)."""
    return [cv2.resize(cv2.cvtColor(photo(n), cv2.COLOR_RGB2BGR), (640, 360)) for n in ("zidane.jpg", "bus.jpg")]


def image_msg(bgr: np.ndarray, encoding: str, stamp: tuple[int, int], pad: int = 0):
    """A sensor_msgs/Image as a camera driver fills it (rows padded by `pad` bytes), built here by hand."""
    if encoding == "mono8":
        pixels = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)[:, :, None]
    elif encoding == "rgb8":
        pixels = bgr[:, :, ::-1]
    else:
        pixels = bgr
    h, w, c = pixels.shape
    rows = np.zeros((h, w * c + pad), np.uint8)
    rows[:, : w * c] = pixels.reshape(h, w * c)
    header = Header(stamp=Time(sec=stamp[0], nanosec=stamp[1]), frame_id="head_camera")
    return Image(
        header=header, height=h, width=w, encoding=encoding, is_bigendian=0, step=w * c + pad, data=rows.reshape(-1)
    )


def as_seen(bgr: np.ndarray, encoding: str) -> np.ndarray:
    """What the pipeline receives from such a message (computed here with OpenCV, not ros_fer)."""
    return cv2.cvtColor(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR) if encoding == "mono8" else bgr


RAW = [("bgr8", 0), ("mono8", 0), ("rgb8", 64), ("bgr8", 0), ("bgr8", 16)]  # encoding, row padding per frame


def write_bag(path: Path, storage: str, corrupt: int | None = None, compressed: bool = True, extra: bool = False):
    """A recording: /camera/image_raw (the RAW frames, 10 Hz from t = 50 s) and, unless told otherwise,
    /camera/image_raw/compressed (JPEG of the same frames). `corrupt`: that raw message's bytes are garbage."""
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    frames = []
    with Writer(path, version=9, storage_plugin=plugin) as bag:
        raw = bag.add_connection("/camera/image_raw", Image.__msgtype__, typestore=STORE)
        jpeg = (
            bag.add_connection("/camera/image_raw/compressed", Compressed.__msgtype__, typestore=STORE)
            if compressed
            else None
        )
        chatter = bag.add_connection("/chatter", String.__msgtype__, typestore=STORE) if extra else None
        for i, (encoding, pad) in enumerate(RAW):
            bgr = pictures()[i % 2]
            stamp, t = (50, i * 100_000_000), 50 * 10**9 + i * 100_000_000
            data = STORE.serialize_cdr(image_msg(bgr, encoding, stamp, pad), Image.__msgtype__)
            bag.write(raw, t, b"\x00\x01garbage" if i == corrupt else data)
            if compressed:
                buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].reshape(-1)
                msg = Compressed(header=image_msg(bgr, "bgr8", stamp).header, format="jpeg", data=buf)
                bag.write(jpeg, t + 1, STORE.serialize_cdr(msg, Compressed.__msgtype__))
            if chatter is not None:
                bag.write(chatter, t + 2, STORE.serialize_cdr(String(data="hi"), String.__msgtype__))
            frames.append((stamp, as_seen(bgr, encoding), cv2.imdecode(buf, cv2.IMREAD_COLOR) if compressed else None))
    return frames


def infer(*args, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_CACHE_HOME": str(Path(cwd or ".") / "cache")}
    return subprocess.run([ROS_FER, "infer", *map(str, args), *SET, "--no-progress"], capture_output=True,
                          text=True, timeout=300, env=env, cwd=cwd)  # fmt: skip


def in_process(frames: list[np.ndarray]) -> list[dict]:
    """The same frames through the pipeline in this process (one stream, tracks carried over)."""
    from ros_fer.params import load_params
    from ros_fer.pipeline import Pipeline

    pipeline = Pipeline.from_params(load_params(None, PARAMS))
    return [r.to_dict() for r in pipeline.stream(frames, color="bgr")]


def same_results(lines: list[dict], expected: list[dict]) -> None:
    assert len(lines) == len(expected)
    for got, want in zip(lines, expected, strict=True):
        assert [p["label"] for p in got["persons"]] == [p["label"] for p in want["persons"]]
        for p, q in zip(got["persons"], want["persons"], strict=True):
            np.testing.assert_allclose(p["scores"], q["scores"], atol=1e-4)
            assert p["face_box"] == q["face_box"]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_raw_and_compressed_frames_of_a_bag_match_the_pipeline_stamp_for_stamp(tmp_path, storage):
    bag = tmp_path / "rec"
    frames = write_bag(bag, storage)
    res = infer(bag, "--topic", "/camera/image_raw", "--out", tmp_path / "raw.jsonl", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [json.loads(x) for x in (tmp_path / "raw.jsonl").read_text().splitlines()]
    assert [(x["stamp"]["sec"], x["stamp"]["nanosec"]) for x in lines] == [s for s, _, _ in frames]
    assert {x["frame_id"] for x in lines} == {"head_camera"} and {x["topic"] for x in lines} == {"/camera/image_raw"}
    assert any(x["persons"] for x in lines)
    same_results(lines, in_process([f for _, f, _ in frames]))
    # the .mcap / .db3 file itself is a bag too; and the compressed topic gives the JPEG-decoded frames
    storage_file = next(bag.glob("*.mcap" if storage == "mcap" else "*.db3"))
    res = infer(storage_file, "--topic", "/camera/image_raw/compressed", "--out", tmp_path / "jpg.jsonl", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [json.loads(x) for x in (tmp_path / "jpg.jsonl").read_text().splitlines()]
    assert [(x["stamp"]["sec"], x["stamp"]["nanosec"]) for x in lines] == [s for s, _, _ in frames]
    same_results(lines, in_process([j for _, _, j in frames]))


def test_topic_choice_and_bags_without_a_camera(tmp_path):
    write_bag(tmp_path / "two", "mcap", extra=True)
    res = infer(tmp_path / "two", cwd=tmp_path)
    assert res.returncode == 2
    assert "several image topics; pick one with --topic" in res.stderr
    assert "/camera/image_raw (sensor_msgs/msg/Image, 5 messages)" in res.stderr
    assert "/camera/image_raw/compressed (sensor_msgs/msg/CompressedImage, 5 messages)" in res.stderr
    res = infer(tmp_path / "two", "--topic", "/chatter", cwd=tmp_path)
    assert res.returncode == 2 and "no image topic '/chatter'" in res.stderr and "std_msgs/msg/String" in res.stderr
    with Writer(tmp_path / "talk", version=9, storage_plugin=StoragePlugin.MCAP) as bag:
        conn = bag.add_connection("/chatter", String.__msgtype__, typestore=STORE)
        bag.write(conn, 1, STORE.serialize_cdr(String(data="hi"), String.__msgtype__))
    res = infer(tmp_path / "talk", cwd=tmp_path)
    assert res.returncode == 2
    assert "has no sensor_msgs Image or CompressedImage topic; its topics: /chatter (std_msgs/msg/String" in res.stderr
    # a single image topic needs no --topic; --start/--end/--every thin it (seconds from the bag's start)
    write_bag(tmp_path / "one", "mcap", compressed=False)
    res = infer(tmp_path / "one", "--start", "0.1", "--end", "0.35", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert [json.loads(x)["frame"] for x in res.stdout.splitlines()] == [0, 1, 2]  # 50.1, 50.2, 50.3 s
    assert [json.loads(x)["stamp"]["nanosec"] // 100_000_000 for x in res.stdout.splitlines()] == [1, 2, 3]
    res = infer(tmp_path / "one", "--every", "2", cwd=tmp_path)
    assert [json.loads(x)["stamp"]["nanosec"] // 100_000_000 for x in res.stdout.splitlines()] == [0, 2, 4]


def test_a_corrupt_message_is_skipped_and_a_truncated_bag_is_named(tmp_path):
    frames = write_bag(tmp_path / "rec", "mcap", corrupt=2, compressed=False)
    out = tmp_path / "r.jsonl"
    res = infer(tmp_path / "rec", "--out", out, cwd=tmp_path)
    assert res.returncode == 1, res.stderr[-2000:]  # finished, something skipped
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["stamp"]["nanosec"] // 100_000_000 for x in lines] == [0, 1, 3, 4]  # the results before it kept
    assert (
        "cannot be deserialized" in res.stderr
        and "4 frame(s) answered from 1 file(s); 1 skipped (decode: 1)" in res.stderr
    )
    assert len(frames) == 5
    # a frame the node refuses (data shorter than height x step) is refused the same way, with its reason
    with Writer(tmp_path / "short", version=9, storage_plugin=StoragePlugin.MCAP) as bag:
        conn = bag.add_connection("/cam", Image.__msgtype__, typestore=STORE)
        good = image_msg(pictures()[0], "bgr8", (1, 0))
        bad = Image(header=good.header, height=360, width=640, encoding="bgr8", is_bigendian=0, step=1920,
                    data=good.data[:1000])  # fmt: skip
        for t, msg in enumerate((good, bad, good)):
            bag.write(conn, t + 1, STORE.serialize_cdr(msg, Image.__msgtype__))
    res = infer(tmp_path / "short", cwd=tmp_path)
    assert res.returncode == 1 and "data is 1000 bytes, height x step = 691200 (layout)" in res.stderr
    assert len(res.stdout.splitlines()) == 2
    # a bag file cut short: an error that names it
    mcap = next((tmp_path / "rec").glob("*.mcap"))
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 3])
    res = infer(cut, cwd=tmp_path)
    assert res.returncode == 2 and f"cannot read bag {cut}" in res.stderr, res.stderr[-2000:]


def test_emotion_recorded_into_a_bag_reads_back_with_rosbags(tmp_path):
    frames = write_bag(tmp_path / "rec", "mcap")
    out = tmp_path / "r.jsonl"
    res = infer(tmp_path / "rec", "--topic", "/camera/image_raw", "--out", out, "--out-bag", tmp_path / "fer.mcap",
                cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    emotions, camera = [], []
    with AnyReader([tmp_path / "fer"]) as reader:  # rosbags' own reader, the types from the bag's own schemas
        types = {c.topic: c.msgtype for c in reader.connections}
        assert types == {"/emotion": "ros_fer_msgs/msg/EmotionArray", "/camera/image_raw": "sensor_msgs/msg/Image"}
        for conn, t, raw in reader.messages():
            (emotions if conn.topic == "/emotion" else camera).append((t, reader.deserialize(raw, conn.msgtype)))
    assert len(emotions) == len(lines) == len(camera) == len(frames)
    for (t, msg), (t_cam, cam), line in zip(emotions, camera, lines, strict=True):
        assert t == t_cam and msg.header.stamp.sec == cam.header.stamp.sec == line["stamp"]["sec"]
        assert msg.header.stamp.nanosec == cam.header.stamp.nanosec and msg.header.frame_id == "head_camera"
        assert [p.label for p in msg.persons] == [p["label"] for p in line["persons"]]
        for p, q in zip(msg.persons, line["persons"], strict=True):
            assert list(p.labels) == line["labels"]
            np.testing.assert_allclose(p.scores, q["scores"], atol=1e-4)  # the JSON rounds
            assert p.track_id == q["track_id"]
    assert any(msg.persons for _, msg in emotions)
    # the camera copied byte for byte
    assert np.array_equal(camera[0][1].data, image_msg(pictures()[0], "bgr8", (50, 0)).data)
    res = infer(tmp_path / "rec", "--topic", "/camera/image_raw", "--out-bag", tmp_path / "fer.mcap", cwd=tmp_path)
    assert res.returncode == 2 and "exists" in res.stderr  # never over a recording


def test_adapt_from_a_bag_equals_adapt_from_folders_of_the_same_frames(tmp_path):
    """Time ranges per state of a recording give the same cache as the same frames as PNG folders."""
    from safetensors.torch import load_file

    bgr = pictures()
    with Writer(tmp_path / "rec", version=9, storage_plugin=StoragePlugin.MCAP) as bag:
        conn = bag.add_connection("/cam", Image.__msgtype__, typestore=STORE)
        for second, state in ((1, "happy"), (2, "happy"), (3, "happy"), (11, "sad"), (12, "sad"), (20, "angry")):
            picture = bgr[0] if state == "happy" else bgr[1][:, ::-1].copy() if state == "sad" else bgr[1]
            picture = np.ascontiguousarray(np.roll(picture, second * 7, axis=1))  # each frame its own
            msg = image_msg(picture, "bgr8", (second, 0))
            bag.write(conn, second * 10**9, STORE.serialize_cdr(msg, Image.__msgtype__))
            if state != "angry":
                (tmp_path / "folders" / state).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(tmp_path / "folders" / state / f"{second:03d}.png"), picture)
    (tmp_path / "ranges.yaml").write_text("happy: [[0, 2.5]]\nsad: [[10, 11.5]]\n")  # seconds from the start (1 s)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    common = ["--model", "zeroshot", "--labels", "basic7", *SET, "--no-progress", "--hold-out", "0.34"]
    runs = {
        "bag": ["--bag", tmp_path / "rec", "--ranges", tmp_path / "ranges.yaml"],
        "folders": ["--images", tmp_path / "folders"],
    }
    caches, summaries = {}, {}
    for name, source in runs.items():
        res = subprocess.run([ROS_FER, "adapt", *map(str, source), "--out", str(tmp_path / f"out-{name}"), *common],
                             capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
        assert res.returncode == 0, res.stderr[-3000:]
        summaries[name] = json.loads(res.stdout.splitlines()[-1])
        caches[name] = load_file(tmp_path / f"out-{name}" / "cache.safetensors")
    assert summaries["bag"]["shots"] == summaries["folders"]["shots"]
    assert summaries["bag"]["shots"]["happiness"] == 3 and summaries["bag"]["shots"]["sadness"] == 2
    assert summaries["bag"]["alpha"] == summaries["folders"]["alpha"]
    for key in caches["folders"]:
        np.testing.assert_array_equal(caches["bag"][key].numpy(), caches["folders"][key].numpy())
    bad = tmp_path / "bad.yaml"
    bad.write_text("happy: [[3, 1]]\n")
    args = [ROS_FER, "adapt", "--bag", str(tmp_path / "rec"), "--ranges", str(bad), "--out", str(tmp_path / "x")]
    res = subprocess.run([*args, *common], capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 2 and f"--ranges {bad}: 'happy': expected a list of [start, end]" in res.stderr
