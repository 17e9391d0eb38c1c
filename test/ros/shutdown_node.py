"""A clean stop of the real fer_node, as launch (SIGINT) and systemd (SIGTERM) stop it. Run only inside
scripts/loopback.sh. For each signal: start fer_node (tiny-random, Haar), wait until it is active, send the
signal, and record the lifecycle transitions a probe sees on /fer_node/transition_event, the exit code and
the seconds to exit. Every wait is bounded. Writes a JSON report; test/test_node.py asserts on it."""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import rclpy
from lifecycle_msgs.msg import TransitionEvent
from rclpy.node import Node


def run_once(probe: Node, events: list[str], sig: signal.Signals) -> dict:
    cmd = [str(Path(sys.executable).with_name("fer_node")), "--ros-args"]
    cmd += ["-p", "backbone:=tiny-random", "-p", "detector:=opencv"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ)
    log, deadline = "", time.monotonic() + 120
    while "active: subscribed" not in log and proc.poll() is None and time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 0.5)[0]:
            log += proc.stdout.readline()
        rclpy.spin_once(probe, timeout_sec=0)
    events.clear()
    end = time.monotonic() + 15  # the probe must see this node's transition publisher before the signal
    while probe.count_publishers("/fer_node/transition_event") == 0 and time.monotonic() < end:
        rclpy.spin_once(probe, timeout_sec=0.05)
    for _ in range(20):  # and its reader match that writer (bounded)
        rclpy.spin_once(probe, timeout_sec=0.05)
    sent = time.monotonic()
    proc.send_signal(sig)
    try:
        code = proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    seconds = time.monotonic() - sent
    for _ in range(40):  # transition events still in flight
        rclpy.spin_once(probe, timeout_sec=0.05)
    log += proc.stdout.read()
    return {"exit": code, "seconds": round(seconds, 3), "transitions": list(events), "log_tail": log[-3000:]}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    rclpy.init()
    probe = Node("shutdown_probe")
    events: list[str] = []
    probe.create_subscription(
        TransitionEvent, "/fer_node/transition_event", lambda m: events.append(m.goal_state.label), 10
    )
    report = {name: run_once(probe, events, getattr(signal, name)) for name in ("SIGINT", "SIGTERM")}
    probe.destroy_node()
    rclpy.try_shutdown()
    Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
