"""FrameResult -> ros_fer_msgs/EmotionArray: the one conversion the node publishes with and `ros-fer infer
--out-bag` records with, so the live topic and a bag carry the same message. It builds the message from
whichever message classes it is handed (`Kit`): the node's (rclpy's generated classes) or rosbags' (for
writing bags without ROS), every field given explicitly so both kinds accept it."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .pipeline import FrameResult


@dataclass(frozen=True)
class Kit:
    """The message classes to build with, and how a float32[] field takes its values."""

    EmotionArray: Any
    PersonEmotion: Any
    RegionOfInterest: Any
    floats: Callable[[Any], Any]


def rosbags_kit(store) -> Kit:
    """rosbags' classes of a typestore holding ros_fer_msgs (`sources.typestore`); arrays as numpy float32."""
    return Kit(
        store.types["ros_fer_msgs/msg/EmotionArray"],
        store.types["ros_fer_msgs/msg/PersonEmotion"],
        store.types["sensor_msgs/msg/RegionOfInterest"],
        lambda values: np.asarray(values, np.float32).reshape(-1),
    )


def roi(box, width: int, height: int, kit: Kit):
    """A box (x1, y1, x2, y2 in pixels, or None) as a RegionOfInterest clipped to the image; None: all zeros."""
    if box is None:
        x1 = y1 = x2 = y2 = 0
    else:
        x1, y1 = max(0, int(box[0])), max(0, int(box[1]))
        x2, y2 = min(width, int(math.ceil(box[2]))), min(height, int(math.ceil(box[3])))
    return kit.RegionOfInterest(
        x_offset=x1, y_offset=y1, height=max(0, y2 - y1), width=max(0, x2 - x1), do_rectify=False
    )


def to_msg(result: FrameResult, header, latency: float, kit: Kit):
    """The EmotionArray of a frame's result, with the camera image's header."""
    persons = [
        kit.PersonEmotion(
            track_id=int(p.track_id),
            label=p.label,
            confidence=float(p.confidence),
            labels=list(result.labels),
            scores=kit.floats([float(s) for s in p.scores]),
            face=roi(p.face_box, result.width, result.height, kit),
            face_detected=bool(p.face_detected),
            face_source=p.face_source,
            body=roi(p.body_box, result.width, result.height, kit),
            body_detected=bool(p.body_detected),
            keypoints=kit.floats([] if p.keypoints is None else [float(v) for v in p.keypoints.reshape(-1)]),
            valence=float(p.valence),
            arousal=float(p.arousal),
            notes=list(p.notes),
        )
        for p in result.persons
    ]
    return kit.EmotionArray(header=header, persons=persons, latency=float(latency))
