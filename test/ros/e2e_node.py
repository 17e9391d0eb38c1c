"""End-to-end run of the real fer_node process over real DDS. Run only inside scripts/loopback.sh (a
loopback-only network namespace with the loopback Fast DDS profile). Every loop is bounded in count and time.
Writes a JSON report of what it saw; test/test_node.py asserts on it."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import rclpy
import ultralytics
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from ros_fer_msgs.msg import EmotionArray

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from ros_fer.image_conv import bgr_to_fields  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Probe(Node):
    def __init__(self, topic: str):
        super().__init__("fer_probe")
        self.image_pub = self.create_publisher(Image, topic, qos_profile_sensor_data)
        self.received: list[tuple[EmotionArray, float]] = []
        self.debug_images = 0
        self.diagnostics: list[DiagnosticArray] = []
        self.create_subscription(
            EmotionArray,
            "/emotion",
            lambda m: self.received.append((m, time.monotonic())),
            QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE),
        )
        self.create_subscription(Image, "/fer_node/debug_image", self._debug, qos_profile_sensor_data)
        self.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)

    def _debug(self, _msg) -> None:
        self.debug_images += 1

    def send(self, fields: dict, stamp_ns: int, frame_id: str = "camera") -> float:
        msg = Image(**fields)
        msg.header.frame_id = frame_id
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        self.image_pub.publish(msg)
        return time.monotonic()


def person_fields(p) -> dict:
    box = lambda r: [r.x_offset, r.y_offset, r.width, r.height]  # noqa: E731
    return {
        "track_id": p.track_id,
        "label": p.label,
        "confidence": float(p.confidence),
        "labels": list(p.labels),
        "scores": [float(s) for s in p.scores],
        "face": box(p.face),
        "face_detected": bool(p.face_detected),
        "face_source": p.face_source,
        "body": box(p.body),
        "body_detected": bool(p.body_detected),
        "valence": float(p.valence),
        "arousal": float(p.arousal),
        "notes": list(p.notes),
        "keypoints": [float(v) for v in p.keypoints],
    }


def pipeline_result(frame: np.ndarray, backbone: str | None, model: str | None = None) -> dict:
    from ros_fer.params import load_params
    from ros_fer.pipeline import Pipeline

    over = {"model": model} if model else {"backbone": backbone, "pretrained": ""}
    params = load_params(ROOT / "config" / "fer.yaml", over)
    result = Pipeline.from_params(params).process(frame, color="bgr")
    out = result.to_dict()
    for person, raw in zip(out["persons"], result.persons, strict=True):  # unrounded, for the comparison
        person["scores"] = [float(v) for v in raw.scores]
        person["face_box"] = None if raw.face_box is None else [float(v) for v in raw.face_box]
        person["body_box"] = [float(v) for v in raw.body_box]
        person["confidence"], person["valence"], person["arousal"] = raw.confidence, raw.valence, raw.arousal
    return out


def camera_frame() -> np.ndarray:
    """The frame both scenarios send: zidane.jpg at 640x480, BGR (Ancelotti's face is found offline)."""
    return cv2.resize(cv2.imread(str(Path(ultralytics.__file__).parent / "assets" / "zidane.jpg")), (640, 480))


def start_node(*params: str, remap: str) -> subprocess.Popen:
    cmd = [str(Path(sys.executable).with_name("fer_node")), "--ros-args", "--params-file"]
    cmd += [str(ROOT / "config" / "fer.yaml")]
    for param in params:
        cmd += ["-p", param]
    cmd += ["-r", remap]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "YOLO_OFFLINE": "1"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop_node(proc: subprocess.Popen, report: dict) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    log = proc.stdout.read() if proc.stdout else ""
    report["node_exit"] = proc.returncode
    report["node_log_head"], report["node_log_tail"] = log[:3000], log[-4000:]


def finish(probe: Node, proc: subprocess.Popen, report: dict, path: str) -> None:
    """Stop the probe and the node (SIGINT, then kill), and write the report with the node's log."""
    report["alive_at_end"] = proc.poll() is None
    probe.destroy_node()
    rclpy.try_shutdown()
    stop_node(proc, report)
    Path(path).write_text(json.dumps(report, indent=2))


def bundle_scenario(args) -> int:
    """An exported model folder, compressed (JPEG) frames, max_rate 2 Hz, and the debug image drawn only
    while someone subscribes."""
    report: dict = {"bundle": args.bundle}
    frame = camera_frame()
    jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    proc = start_node(
        f"model:={args.bundle}",
        "compressed:=true",
        "max_rate:=2.0",
        "track_buffer:=1",
        "max_expression_publishers:=2",
        remap="image:=/test/compressed",
    )
    rclpy.init()
    probe = Node("fer_probe_bundle")
    pub = probe.create_publisher(CompressedImage, "/test/compressed", qos_profile_sensor_data)
    received: list = []
    diagnostics: list = []
    debug: list = []
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    probe.create_subscription(EmotionArray, "/emotion", received.append, reliable)
    probe.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    expressions: list = []
    try:  # REP-155: hri_msgs built by the test into a prefix on this process's and the node's paths
        from hri_msgs.msg import Expression

        probe.create_subscription(Expression, "/humans/faces/fer1/expression", expressions.append, reliable)
    except ImportError:
        Expression = None

    def send_bytes(data: bytes, stamp: int, fmt: str = "jpeg") -> None:
        msg = CompressedImage(format=fmt, data=data)
        msg.header.frame_id = "camera"
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        pub.publish(msg)

    def send(stamp: int) -> None:
        send_bytes(jpeg, stamp)

    def node_stats() -> dict:
        statuses = [s for d in diagnostics for s in d.status if "fer_node" in s.name]
        return {s.key: s.value for s in statuses[-1].values} if statuses else {}

    try:
        report["discovered"] = spin_until(probe, lambda: pub.get_subscription_count() > 0, 120)
        for i in range(20):  # best-effort camera QoS: a frame sent while discovery settles may be lost
            send(1_000_000_000 * 5 + i)
            if spin_until(probe, lambda: received, 2.0):
                break
        report["first"] = [person_fields(p) for p in received[0].persons] if received else []
        report["pipeline"] = pipeline_result(
            cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), None, args.bundle
        )
        # 20 Hz for 4 s against a 2 Hz cap: about 8 answers, never 80
        spin_until(probe, lambda: False, 1.0)
        before, start, k = len(received), time.monotonic(), 0
        while time.monotonic() - start < 4.0 and k < 200:
            spin_until(probe, lambda: False, max(0.0, start + k / 20.0 - time.monotonic()))
            send(1_000_000_000 * 10 + k)
            k += 1
        spin_until(probe, lambda: False, 1.5)
        report["rate"] = {"sent": k, "answered": len(received) - before, "seconds": time.monotonic() - start}
        # nobody subscribes to the debug image yet: nothing drawn
        spin_until(probe, lambda: len(diagnostics) >= 2, 5)
        report["debug_before"] = node_stats().get("debug_images_published")
        probe.create_subscription(Image, "/fer_node/debug_image", debug.append, qos_profile_sensor_data)
        spin_until(probe, lambda: False, 1.0)
        for i in range(6):
            send(1_000_000_000 * 20 + i)
            spin_until(probe, lambda: False, 0.5)
        spin_until(probe, lambda: debug, 5)
        count = len(diagnostics)
        spin_until(probe, lambda: len(diagnostics) > count, 3)
        report["debug_after"] = {"received": len(debug), "published": node_stats().get("debug_images_published")}
        report["diagnostics"] = node_stats()
        report["hri_msgs"] = Expression is not None
        report["rep155"] = [
            {
                "stamp": stamp_ns(e),
                "expression": e.expression,
                "valence": float(e.valence),
                "arousal": float(e.arousal),
                "confidence": float(e.confidence),
            }
            for e in expressions
        ]
        report["emotion_by_stamp"] = {
            str(stamp_ns(m)): [person_fields(p) for p in m.persons] for m in received if m.persons
        }
        report["hostile"] = hostile_input(probe, send_bytes, received, jpeg, node_stats)
    finally:
        finish(probe, proc, report, args.json)
    return 0


def call(probe: Node, srv_type, name: str, request, timeout: float = 60.0):
    client = probe.create_client(srv_type, name)
    try:
        if not client.wait_for_service(timeout_sec=10.0):
            return None
        future = client.call_async(request)
        spin_until(probe, future.done, timeout)
        return future.result() if future.done() else None
    finally:
        probe.destroy_client(client)


# A label file as a user writes it: the reload below swaps the node to these states.
STATES_YAML = """\
# states our reception robot needs
states:
  engaged:
    face: eyes on the robot, a slight smile
    body: turned toward the robot
    context: talking to a receptionist
    rep155: excited
  confused: {face: knitted brows, body: a shrug, context: an unclear sign, rep155: confused}
  in_pain:
    adjective: in pain
    prompt: a photo of a person wincing in pain.
"""


def lifecycle(probe, good: dict, states: str) -> dict:
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    def state() -> str:
        got = call(probe, GetState, "/fer_node/get_state", GetState.Request())
        return got.current_state.label if got else "no answer"

    def change(transition: int) -> bool:
        got = call(
            probe, ChangeState, "/fer_node/change_state", ChangeState.Request(transition=Transition(id=transition))
        )
        return bool(got and got.success)

    def answered(base: int, tries: int = 20) -> list:
        for i in range(tries):  # after a new subscription, the first best-effort frames may be lost
            stamp = 1_000_000_000 * base + i
            probe.send(good, stamp)
            if spin_until(probe, lambda s=stamp: any(stamp_ns(m) == s for m, _ in probe.received), 2.0):
                return [list(p.labels) for m, _ in probe.received if stamp_ns(m) == stamp for p in m.persons]
        return []

    out = {"start": state(), "deactivate": change(Transition.TRANSITION_DEACTIVATE), "paused": state()}
    for i in range(10):
        probe.send(good, 1_000_000_000 * 2000 + i)
        spin_until(probe, lambda: False, 0.2)
    spin_until(probe, lambda: False, 1.0)
    out["answers_while_inactive"] = sum(1 for m, _ in probe.received if m.header.stamp.sec == 2000)
    out["activate"] = change(Transition.TRANSITION_ACTIVATE)
    out["resumed"] = state()
    out["labels_after_activate"] = answered(2100)
    out["set_labels_while_active"] = set_parameters(probe, labels="caers")
    out["deactivate_again"] = change(Transition.TRANSITION_DEACTIVATE)
    out["cleanup"] = change(Transition.TRANSITION_CLEANUP)
    out["unconfigured"] = state()
    out["set_labels_unconfigured"] = set_parameters(probe, labels=states)
    out["configure"] = change(Transition.TRANSITION_CONFIGURE)
    out["activate_again"] = change(Transition.TRANSITION_ACTIVATE)
    out["labels_after_reload"] = answered(2200)
    return out


def set_parameters(probe: Node, **values) -> list:
    """`ros2 param set` through the node's real /fer_node/set_parameters service: [(successful, reason)]."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    client = probe.create_client(SetParameters, "/fer_node/set_parameters")
    if not client.wait_for_service(timeout_sec=10.0):
        return [(False, "no set_parameters service")]
    request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
    future = client.call_async(request)
    spin_until(probe, future.done, 10.0)
    probe.destroy_client(client)
    return [(r.successful, r.reason) for r in future.result().results] if future.done() else [(False, "no answer")]


def hostile_input(probe: Node, send_bytes, received: list, jpeg: bytes, node_stats) -> dict:
    """Compressed fuzz: every good frame is followed at once by a malformed one (a decompression bomb among
    them: an 8000x8000 black PNG of a few hundred kB), with the rate cap lifted at run time; every good
    frame must still be answered. Then a parameter change on the next frame, a parameter that needs a reload
    refused, and many short face tracks: REP-155 publishers come and go with them."""
    from ros_fer.image_conv import check_compressed

    out: dict = {}
    bomb = cv2.imencode(".png", np.zeros((8000, 8000), np.uint8))[1].tobytes()
    t0 = time.perf_counter()
    try:
        check_compressed(CompressedImage(format="png", data=bomb))
    except Exception as exc:  # noqa: BLE001 - reported
        out["bomb_refused"] = str(exc)
    t1 = time.perf_counter()
    decoded = cv2.imdecode(np.frombuffer(bomb, np.uint8), cv2.IMREAD_COLOR)
    t2 = time.perf_counter()
    out["bomb"] = {"bytes": len(bomb), "reject_ms": (t1 - t0) * 1e3, "decode_ms": (t2 - t1) * 1e3}
    out["bomb"]["decoded_shape"] = list(decoded.shape)
    del decoded
    out["set_max_rate"] = set_parameters(probe, max_rate=0.0)
    out["set_backbone"] = set_parameters(probe, backbone="ViT-L-14")
    malformed = [
        (bomb, "png"),
        (b"", "jpeg"),
        (b"\xff\xd8\xff\xda\x00\x08" + bytes(64), "jpeg"),  # scan data before any frame header
        (b"GIF89a" + bytes(64), "gif"),
        (jpeg[: len(jpeg) // 2], "jpeg"),  # cut short: no end-of-image marker
    ]
    answered, sent = 0, 0
    for i in range(40):
        stamp = 1_000_000_000 * 40 + i
        send_bytes(jpeg, stamp)
        data, fmt = malformed[i % len(malformed)]
        send_bytes(data, 1_000_000_000 * 45 + i, fmt)
        sent += 1
        if spin_until(probe, lambda s=stamp: any(stamp_ns(m) == s for m in received), 5.0):
            answered += 1
    out["fuzz"] = {"good_sent": sent, "good_answered": answered}
    out["bad_answered"] = sum(1 for m in received if 45 <= m.header.stamp.sec < 46)
    # a cheap parameter: the next frame is labelled with it (no confidence reaches 1.01)
    out["set_threshold"] = set_parameters(probe, unknown_threshold=1.01)
    stamp = 1_000_000_000 * 50
    send_bytes(jpeg, stamp)
    spin_until(probe, lambda: any(stamp_ns(m) == stamp for m in received), 5.0)
    out["labels_after"] = [p.label for m in received if stamp_ns(m) == stamp for p in m.persons]
    # many short tracks: a face for a frame, then black frames until the tracker (track_buffer 1) forgets it
    black = cv2.imencode(".jpg", np.zeros((480, 640, 3), np.uint8))[1].tobytes()
    topics, ids = [], set()

    def expression_topics() -> int:
        names = probe.get_publisher_names_and_types_by_node("fer_node", "/")
        return sum(1 for name, _ in names if name.startswith("/humans/faces/"))

    for cycle in range(6):  # ByteTrack confirms a new track on its second frame: the face stays for three
        for j, frame in enumerate([jpeg, jpeg, jpeg, black, black, black]):
            stamp = 1_000_000_000 * (60 + cycle) + j
            send_bytes(frame, stamp)
            spin_until(probe, lambda s=stamp: any(stamp_ns(m) == s for m in received), 5.0)
            ids |= {p.track_id for m in received if stamp_ns(m) == stamp for p in m.persons}
            if j in (2, 5):
                spin_until(probe, lambda: False, 0.5)  # graph changes reach the probe
                topics.append(expression_topics())
    out["tracks"] = {"track_ids": sorted(ids), "expression_topics_with_face_then_without": topics}
    count = len(received)
    spin_until(probe, lambda: False, 1.5)  # a fresh diagnostics message
    out["diagnostics"] = node_stats()
    out["answers_after_end"] = len(received) - count
    return out


def spin_until(node: Node, done, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
        if done():
            return True
    return done()


def stamp_ns(msg: EmotionArray) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", required=True)
    ap.add_argument("--backbone", default="tiny-random")
    ap.add_argument("--burst-seconds", type=float, default=5.0)
    ap.add_argument("--bundle", help="run the second scenario: this exported folder, compressed frames, max_rate 2")
    args = ap.parse_args()
    if args.bundle:
        return bundle_scenario(args)
    report: dict = {"backbone": args.backbone}
    frame = camera_frame()
    good = bgr_to_fields(frame, "bgr8")
    proc = start_node(f"backbone:={args.backbone}", "pretrained:=''", "max_rate:=60.0", remap="image:=/test/camera")
    rclpy.init()
    probe = Probe("/test/camera")
    try:
        # 1. discovery, then stamps round-trip: every answer carries the header of the frame it came from.
        report["discovered"] = spin_until(probe, lambda: probe.image_pub.get_subscription_count() > 0, 120)
        # Best-effort camera QoS: a frame sent while discovery settles on both sides may be lost. Warm up
        # until one answer comes back (bounded), then every frame must be answered.
        for i in range(20):
            probe.send(good, 1_000_000_000 * 50 + i)
            if spin_until(probe, lambda: probe.received, 2.0):
                break
        spin_until(probe, lambda: False, 0.5)
        probe.received.clear()
        sent = {}
        for i in range(10):
            stamp = 1_000_000_000 * (100 + i) + 123
            sent[stamp] = probe.send(good, stamp)
            n = len(probe.received)
            spin_until(probe, lambda n=n: len(probe.received) > n, 15)
        answers = [m for m, _ in probe.received]
        report["basic"] = {
            "sent": len(sent),
            "received": len(answers),
            "stamps_match": all(stamp_ns(m) in sent for m in answers),
            "frame_ids": sorted({m.header.frame_id for m in answers}),
            "persons": [len(m.persons) for m in answers],
            "labels": list(answers[-1].persons[0].labels) if answers and answers[-1].persons else [],
            "scores_sum": float(sum(answers[-1].persons[0].scores)) if answers and answers[-1].persons else 0.0,
            "track_ids": [[p.track_id for p in m.persons] for m in answers],
            "face_sources": sorted({p.face_source for m in answers for p in m.persons}),
            "keypoint_lengths": sorted({len(p.keypoints) for m in answers for p in m.persons}),
            "latency_s": [float(m.latency) for m in answers],
            # every field of the first answer (a fresh track: its scores are this frame's own) ...
            "first": [person_fields(p) for p in answers[0].persons] if answers else [],
        }
        # ... and what the pipeline computes for the same frame in this process, from the same params file
        report["pipeline"] = pipeline_result(frame, args.backbone)
        # 1b. the same frame as an rgb8 and a mono8 camera send it (rows padded): read as they came
        report["encodings"] = {}
        for k, (encoding, padding) in enumerate((("rgb8", 3), ("mono8", 1))):
            stamp = 1_000_000_000 * 200 + k
            probe.send(bgr_to_fields(frame, encoding, row_padding=padding), stamp)
            spin_until(probe, lambda s=stamp: any(stamp_ns(m) == s for m, _ in probe.received), 15)
            got = [m for m, _ in probe.received if stamp_ns(m) == stamp]
            report["encodings"][encoding] = [person_fields(p) for p in got[0].persons] if got else None
        # 2. malformed frames in between: the node skips them and keeps answering good ones.
        bad = [
            {**good, "encoding": "yuv422"},
            {**good, "data": good["data"][:-7]},
            {**good, "height": 0, "width": 0, "step": 0, "data": b""},
            {**good, "height": 100000, "width": 100000, "step": 300000},
            {**good, "encoding": "rgb8", "step": 10},
        ]
        before = len(probe.received)
        for j, fields in enumerate(bad):
            probe.send(fields, 1_000_000_000 * (300 + j))
            spin_until(probe, lambda: False, 0.3)
        after_bad = 1_000_000_000 * 400 + 7
        probe.send(good, after_bad)
        spin_until(probe, lambda: any(stamp_ns(m) == after_bad for m, _ in probe.received), 20)
        report["malformed"] = {
            "answers_to_bad": sum(1 for m, _ in probe.received[before:] if 300 <= m.header.stamp.sec < 400),
            "answered_after": any(stamp_ns(m) == after_bad for m, _ in probe.received),
            "alive": proc.poll() is None,
        }
        # 3. a 60 Hz burst: latency stays bounded (no growing queue) and memory stays flat.
        spin_until(probe, lambda: False, 1.0)
        rss_start = rss_mb(proc.pid)
        publish_times: dict[int, float] = {}
        start, k = time.monotonic(), 0
        first = len(probe.received)
        while time.monotonic() - start < args.burst_seconds and k < 10_000:
            target = start + k / 60.0
            spin_until(probe, lambda: False, max(0.0, target - time.monotonic()))
            stamp = 1_000_000_000 * 1000 + k
            publish_times[stamp] = probe.send(good, stamp)
            k += 1
        spin_until(probe, lambda: False, 3.0)
        burst = [(m, t) for m, t in probe.received[first:] if stamp_ns(m) in publish_times]
        latencies = sorted(t - publish_times[stamp_ns(m)] for m, t in burst)
        node_lat = sorted(m.latency for m, _ in burst)
        half = len(latencies) // 2
        report["burst"] = {
            "sent": len(publish_times),
            "answered": len(burst),
            "latency_s": {
                "median": float(np.median(latencies)) if latencies else None,
                "p95": float(np.percentile(latencies, 95)) if latencies else None,
                "max": max(latencies) if latencies else None,
                "first_half_median": float(np.median(latencies[:half])) if half else None,
            },
            "latency_in_time_order_s": [round(t - publish_times[stamp_ns(m)], 4) for m, t in burst],
            "node_reported_latency_median_s": float(np.median(node_lat)) if node_lat else None,
            "rss_mb": {"start": rss_start, "end": rss_mb(proc.pid)},
        }
        # 4. the debug image only flows to a subscriber; diagnostics come once a second.
        spin_until(probe, lambda: probe.debug_images > 0 and probe.diagnostics, 10)
        report["debug_images"] = probe.debug_images
        statuses = [s for d in probe.diagnostics for s in d.status if "fer_node" in s.name]
        report["diagnostics"] = {s.key: s.value for s in statuses[-1].values} if statuses else {}
        # 5. lifecycle, through the node's real services: deactivate pauses (no answers), activate resumes;
        # cleanup frees the model, a reload parameter changes meanwhile, configure + activate load it again.
        states = Path(args.json).with_name("states.yaml")
        states.write_text(STATES_YAML)
        report["lifecycle"] = lifecycle(probe, good, str(states))
    finally:
        finish(probe, proc, report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
