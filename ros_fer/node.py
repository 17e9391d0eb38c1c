"""fer_node: the ROS 2 front door. Converts messages, holds parameters, schedules the worker and publishes;
everything else is the ROS-free pipeline."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections import Counter, deque

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest

from ros_fer_msgs.msg import EmotionArray, PersonEmotion

from . import messages
from .annotate import draw
from .errors import FerError, WeightsUnavailableError
from .image_conv import ImageError, as_bgr, bgr_to_fields, check_compressed, check_image, image_pixels
from .machine import flush_denormals
from .messages import Kit
from .overrides import nearest
from .params import DEFAULTS, NODE, PARAMS, RUNTIME, load_params, unknown_overrides
from .pipeline import FrameResult, Pipeline
from .tracking import PerTrack

try:  # REP-155 output where hri_msgs is installed
    from hri_msgs.msg import Expression
except ImportError:
    Expression = None


# How a local weight file is given to the node, where pretrained weights cannot be fetched.
OFFLINE_HINT = (
    "Here: -p backbone_checkpoint:=FILE (a local {backbone} weight file; the pretrained tag then steps aside; "
    "in a params file: backbone_checkpoint: FILE), or -p backbone:=tiny-random (random weights, to try the plumbing)."
)
SKIP_REASONS = ("encoding", "size", "layout", "header", "truncated", "decode")  # ImageError.reason


class LatestFrame:
    """A one-slot mailbox: a newer frame replaces a waiting one, so the queue never grows."""

    def __init__(self):
        self._cond = threading.Condition()
        self._item = None
        self.dropped = 0

    def put(self, item) -> None:
        with self._cond:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._cond.notify()

    def clear(self) -> None:
        with self._cond:
            self._item = None

    def take(self, timeout: float):
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None, timeout)
            item, self._item = self._item, None
            return item


# The message conversion shared with `ros-fer infer --out-bag` (messages.to_msg), with rclpy's classes.
KIT = Kit(EmotionArray, PersonEmotion, RegionOfInterest, list)


def to_msg(result: FrameResult, header, latency: float) -> EmotionArray:
    return messages.to_msg(result, header, latency, KIT)


class FerNode(LifecycleNode):
    """A managed (lifecycle) node. configure: load the model and the detector (the slow part) and start the
    worker; activate: subscribe and publish; deactivate: unsubscribe, no inference at all, the model stays
    loaded; cleanup: free the model. With `autostart` (the default) main() configures and activates it at
    once, so `ros2 run` and launch users see a plain node."""

    def __init__(self):
        super().__init__(NODE)
        values = {}
        for p in PARAMS:
            text = p.description + (f" ({' | '.join(p.choices)})" if p.choices else "")
            text += "; changes at run time" if p.name in RUNTIME else "; needs a reload (cleanup + configure)"
            desc = ParameterDescriptor(description=text, dynamic_typing=True)
            values[p.name] = self.declare_parameter(p.name, p.default, desc).value
        self.params = load_params(None, values)
        for name in unknown_overrides(self._parameter_overrides, self.has_parameter):  # -p smoothin:=0.5
            self.get_logger().warning(
                f"unknown parameter {name!r} ignored{nearest(name, DEFAULTS)}; fer_node's parameters: "
                + ", ".join(sorted(DEFAULTS))
            )
        self.pipeline: Pipeline | None = None
        self.configure_error = ""
        self.subscription = self.worker = self.timer = None
        self.slot = LatestFrame()
        self.latencies: deque[float] = deque(maxlen=200)
        self.stage_ms: deque[dict[str, float]] = deque(maxlen=200)
        self.processed: deque[float] = deque(maxlen=200)
        self.skipped: Counter[str] = Counter()  # why frames were refused or failed to decode
        self.errors = self.debug_published = 0
        self.stop = threading.Event()
        self.frame_lock = threading.Lock()  # held by the worker for a whole frame; deactivate waits on it
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # ---- lifecycle ----------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.pipeline = Pipeline.from_params(self.params)
        except FerError as exc:
            self.configure_error = exc.with_hint(OFFLINE_HINT) if isinstance(exc, WeightsUnavailableError) else str(exc)
            self.get_logger().error(f"configure failed: {self.configure_error}")
            return TransitionCallbackReturn.FAILURE
        self.label_set = self.pipeline.runtime.labels
        self.get_logger().info(
            f"model: {self.pipeline.runtime.description}; backend {self.pipeline.runtime.backend.name} "
            f"{self.pipeline.runtime.backend.precision} on {self.pipeline.runtime.backend.device}; "
            f"detector {self.pipeline.detector.name}"
        )
        for line in self.pipeline.notes:
            self.get_logger().info(line)
        try:
            if line := Pipeline.describe_warm_up(self.pipeline.warm_up(self.params["warmup_frame"])):
                self.get_logger().info(line)
        except (RuntimeError, FerError) as exc:  # e.g. out of GPU memory: the frames capture at first use
            self.get_logger().warning(f"warm-up failed ({exc}); graphs are captured at first use instead")
        for line in self.pipeline.warnings:
            self.get_logger().warning(line)
        if note := self.label_set.rep155_note():
            self.get_logger().info(note)
        self.emotion_pub = self.create_publisher(
            EmotionArray, "emotion", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        )
        self.debug_pub = self.create_publisher(Image, "~/debug_image", qos_profile_sensor_data)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # REP-155: one publisher per live face track, destroyed when the tracker forgets the track, capped
        self.hri_pubs = PerTrack(
            lambda track_id: self.create_publisher(Expression, f"/humans/faces/fer{track_id}/expression", 10),
            self.destroy_publisher,
            self.params["max_expression_publishers"],
        )
        self.check = check_compressed if self.params["compressed"] else check_image
        # Compressed frames: a JPEG is decoded where the pipeline works (nvjpeg on the GPU path), else OpenCV.
        # Raw frames: the pixels as they came (rgb8 stays RGB), a view of the message's buffer (`image_pixels`).
        self.decode = self._decode_compressed if self.params["compressed"] else image_pixels
        self.stop.clear()
        self.worker = threading.Thread(target=self._work, name="fer_worker", daemon=True)
        self.worker.start()
        self.timer = self.create_timer(1.0, self._diagnostics)
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        kind = CompressedImage if self.params["compressed"] else Image
        self.subscription = self.create_subscription(kind, "image", self._on_image, qos_profile_sensor_data)
        self.get_logger().info("active: subscribed to frames")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.subscription is not None:
            self.destroy_subscription(self.subscription)
            self.subscription = None
        self.slot.clear()  # a frame waiting for the worker is dropped: nothing is inferred while inactive
        with self.frame_lock:  # a frame in flight finishes first: it must not publish through a destroyed publisher
            self.hri_pubs.clear()
        self.get_logger().info("inactive: no frames taken, the model stays loaded")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        self.destroy_timer(self.timer)
        for publisher in (self.emotion_pub, self.debug_pub, self.diag_pub):
            self.destroy_publisher(publisher)
        self.timer = None
        self.pipeline = None  # the model and the detector go
        self.get_logger().info("unconfigured: model freed")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.subscription is not None:
            self.on_deactivate(state)
        if self.pipeline is not None:
            self.on_cleanup(state)
        return TransitionCallbackReturn.SUCCESS

    def _stop_worker(self) -> None:
        self.stop.set()
        if self.worker is not None:
            self.worker.join(timeout=5.0)
            self.worker = None

    def _on_set_parameters(self, changes) -> SetParametersResult:
        """`ros2 param set`: the cheap parameters (params.RUNTIME) apply from the next frame; the others are
        refused with the reason, since they need the model or detector built again."""
        reload = [c.name for c in changes if c.name not in RUNTIME and c.value != self.params.get(c.name)]
        if reload and self.pipeline is not None:  # unconfigured: anything may change before configure
            return SetParametersResult(
                successful=False,
                reason=f"{', '.join(reload)} needs a reload (lifecycle deactivate + cleanup, set, configure + "
                "activate; or a restart); "
                f"changeable at run time: {', '.join(RUNTIME)}",
            )
        try:
            new = load_params(None, {**self.params, **{c.name: c.value for c in changes}})
        except FerError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        if self.pipeline is not None:
            self.pipeline.retune(new)
        self.params = new  # one reference swap: the worker reads a whole dict, old or new
        self.get_logger().info("parameters changed: " + ", ".join(f"{c.name}={c.value}" for c in changes))
        return SetParametersResult(successful=True)

    def _skip(self, exc: ImageError) -> None:
        self.skipped[exc.reason] += 1
        self.get_logger().warning(f"skipping a frame: {exc}", throttle_duration_sec=5.0)

    def _on_image(self, msg) -> None:
        """On arrival only what costs nothing (encoding, size from the header, data length): a malformed
        frame never takes the slot of a good one waiting for the worker. Decoding stays on the worker."""
        try:
            size = self.check(msg, self.params["max_pixels"])
        except ImageError as exc:
            self._skip(exc)
            return
        self.slot.put((msg, size, time.monotonic()))

    def _work(self) -> None:
        flush_denormals()  # this thread's own floating-point mode, whichever thread started it
        last = 0.0
        while not self.stop.is_set():
            rate = self.params["max_rate"]
            wait = last + (1.0 / rate if rate > 0 else 0.0) - time.monotonic()
            if wait > 0:  # rate cap: frames arriving meanwhile replace each other in the slot
                self.stop.wait(wait)
            item = self.slot.take(timeout=0.2)
            if item is None:
                continue
            last = time.monotonic()
            try:
                with self.frame_lock:
                    self._handle(*item)
            except ImageError as exc:
                self._skip(exc)
            except Exception as exc:  # noqa: BLE001 - one bad frame must never stop the node
                self.errors += 1
                self.get_logger().error(f"frame failed: {type(exc).__name__}: {exc}", throttle_duration_sec=5.0)

    def _handle(self, msg, size: tuple[int, int], arrived: float) -> None:
        params = self.params
        if self.subscription is None:  # deactivated meanwhile: no inference
            return
        frame, color = self.decode(msg, *size)  # checked on arrival: decoded here, not checked again
        result = self.pipeline.process(frame, color)  # an array in `color` order, or an RGB tensor on the device
        latency = time.monotonic() - arrived
        self.emotion_pub.publish(to_msg(result, msg.header, latency))
        self.latencies.append(latency)
        self.stage_ms.append(result.timings_ms)
        self.processed.append(time.monotonic())
        if params["debug_image"] and self.debug_pub.get_subscription_count() > 0:
            self.debug_pub.publish(Image(header=msg.header, **bgr_to_fields(draw(as_bgr(frame, color), result))))
            self.debug_published += 1  # drawn only while someone subscribes
        if Expression is not None:
            self._publish_rep155(result, msg.header)

    def _decode_compressed(self, msg, width: int, height: int):
        return self.pipeline.decode(msg.data, width, height), "bgr"  # a BGR array, or an RGB tensor (no order)

    def _publish_rep155(self, result: FrameResult, header) -> None:
        if self.pipeline.tracker is not None:  # tracks the tracker forgot: their publishers go
            self.hri_pubs.keep_only(self.pipeline.tracker.live_ids())
        for p in result.persons:
            if p.track_id < 0 or p.face_box is None:
                continue
            expression = self.label_set.expression(p.label)  # "unknown": ""
            if expression is None:  # a state REP-155 has no word for (noted once at start)
                continue
            self.hri_pubs.get(p.track_id).publish(
                Expression(
                    header=header,
                    expression=expression,
                    valence=float(p.valence),
                    arousal=float(p.arousal),
                    confidence=float(p.confidence),
                )
            )

    def _diagnostics(self) -> None:
        lat = np.asarray(self.latencies) * 1e3
        now = time.monotonic()
        recent = [t for t in self.processed if now - t <= 5.0]
        rate = len(recent) / 5.0
        status = DiagnosticStatus(name=f"{self.get_name()}: emotion", hardware_id=self.pipeline.runtime.backend.device)
        status.level = DiagnosticStatus.OK if rate > 0 else DiagnosticStatus.WARN
        status.message = f"{rate:.1f} Hz" if rate > 0 else "no frames processed in the last 5 s"
        stats = {
            "rate_hz": f"{rate:.2f}",
            "latency_median_ms": f"{np.median(lat):.1f}" if lat.size else "nan",
            "latency_p95_ms": f"{np.percentile(lat, 95):.1f}" if lat.size else "nan",
            "frames_dropped_for_newer": str(self.slot.dropped),
            "frames_malformed": str(sum(self.skipped.values())),
            **{f"frames_skipped_{why}": str(self.skipped[why]) for why in SKIP_REASONS},
            "frames_failed": str(self.errors),
            "expression_publishers": str(len(self.hri_pubs)),
            "tracks_live": str(len(self.pipeline.tracker.live_ids()) if self.pipeline.tracker else 0),
            "debug_images_published": str(self.debug_published),
            "model": self.pipeline.runtime.description,
            "state": "active" if self.subscription is not None else "inactive",
        }
        stages = list(self.stage_ms)
        for key in stages[0] if stages else ():
            stats[f"{key}_median_ms"] = f"{np.median([s[key] for s in stages]):.1f}"
        status.values = [KeyValue(key=k, value=v) for k, v in stats.items()]
        self.diag_pub.publish(DiagnosticArray(header=self._stamp(), status=[status]))

    def _stamp(self):
        from std_msgs.msg import Header

        return Header(stamp=self.get_clock().now().to_msg())

    def close(self) -> None:
        self._stop_worker()


def main(args=None) -> int:
    """Run fer_node until SIGINT or SIGTERM (Ctrl-C, launch, systemd), then stop it through its lifecycle
    (shutdown: the worker finishes its frame, publishers and the model are released, state `finalized`) and
    exit 0. rclpy's own handlers would shut the context down under the node first, so these signals are ours."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    node = FerNode()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        if node.params["autostart"]:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                print(f"fer_node: error: {node.configure_error}", flush=True)
                return 1
            node.trigger_activate()
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
        if rclpy.ok():
            node.trigger_shutdown()  # -> finalized; on_shutdown releases everything
            node.get_logger().info(f"stopped by {'a signal' if stop.is_set() else 'shutdown'}: finalized")
    except ExternalShutdownException:
        pass
    finally:
        node.close()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def entry() -> None:
    """The `fer_node` command: main(), then the process ends at once. Python's own teardown of torch, OpenCV
    and open_clip modules adds 1.3 s to every stop (measured on machine A) after the node has already
    released everything, which would make a launch or systemd stop wait for nothing."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
