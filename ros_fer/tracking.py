"""Stable ids (ultralytics' ByteTrack on the body boxes), per-track smoothing of the probabilities
with hysteresis on the label, and `unknown` below a confidence threshold."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

UNKNOWN = "unknown"
UNTRACKED = -1  # a person seen for the first time: ByteTrack confirms a track on its second frame


class _Boxes:
    """The detections view BYTETracker reads: conf, cls, xywh, boolean indexing."""

    def __init__(self, xyxy: np.ndarray, conf: np.ndarray):
        self.xyxy, self.conf = xyxy, conf
        self.cls = np.zeros(len(conf), np.float32)

    @property
    def xywh(self) -> np.ndarray:
        xy = (self.xyxy[:, :2] + self.xyxy[:, 2:]) / 2
        return np.concatenate([xy, self.xyxy[:, 2:] - self.xyxy[:, :2]], 1)

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, index) -> _Boxes:
        return _Boxes(self.xyxy[index], self.conf[index])


@dataclass
class TrackState:
    scores: np.ndarray
    label: int  # index into the label set, -1 = unknown
    last_seen: int


@dataclass
class Smoothed:
    track_id: int
    scores: np.ndarray
    label: str
    confidence: float


class Tracker:
    def __init__(
        self,
        labels: tuple[str, ...],
        smoothing: float = 0.6,
        hysteresis: float = 0.1,
        unknown_threshold: float = 0.35,
        track_buffer: int = 30,
    ):
        from ultralytics.trackers.byte_tracker import BYTETracker

        args = SimpleNamespace(
            track_high_thresh=0.25,
            track_low_thresh=0.1,
            new_track_thresh=0.25,
            track_buffer=track_buffer,
            match_thresh=0.8,
            fuse_score=True,
        )
        self.byte = BYTETracker(args)  # keeps a lost track for track_buffer frames
        self.labels = labels
        self.alpha, self.hysteresis, self.threshold = smoothing, hysteresis, unknown_threshold
        self.buffer = track_buffer
        self.states: dict[int, TrackState] = {}
        self.frame = 0

    def live_ids(self) -> set[int]:
        """The tracks still remembered (seen within track_buffer frames)."""
        return set(self.states)

    def retune(self, smoothing: float, hysteresis: float, unknown_threshold: float) -> None:
        """New smoothing settings, from the next update on (tracks and their state are kept)."""
        self.alpha, self.hysteresis, self.threshold = smoothing, hysteresis, unknown_threshold

    def reset(self) -> None:
        """Forget every track (a new, unrelated stream of frames begins)."""
        self.byte.reset()
        self.states.clear()
        self.frame = 0

    def _label(self, scores: np.ndarray, current: int) -> int:
        best = int(np.argmax(scores))
        if current >= 0 and best != current and scores[best] - scores[current] <= self.hysteresis:
            best = current  # not enough evidence to switch: keep the label
        return best if scores[best] >= self.threshold else -1

    def update(self, boxes: np.ndarray, probs: np.ndarray) -> list[Smoothed]:
        """boxes [P, 5] (x1 y1 x2 y2 score), probs [P, C] -> one Smoothed per input row, in order."""
        return self.smooth(self.assign(boxes), probs)

    def assign(self, boxes: np.ndarray) -> np.ndarray:
        """This frame's track id per box (UNTRACKED for a person seen the first time): ByteTrack on the boxes
        alone, so it can run while the frame's scores are still being computed (`Pipeline.submit`). Each
        frame's `assign` is followed by its `smooth` before the next frame's `assign`."""
        self.frame += 1
        ids = np.full(len(boxes), UNTRACKED)
        if len(boxes):
            tracks = self.byte.update(_Boxes(boxes[:, :4].astype(np.float32), boxes[:, 4].astype(np.float32)))
            for row in tracks:
                ids[int(row[7])] = int(row[4])
        else:
            self.byte.update(_Boxes(np.zeros((0, 4), np.float32), np.zeros(0, np.float32)))
        return ids

    def smooth(self, ids: np.ndarray, probs: np.ndarray) -> list[Smoothed]:
        """The frame's probabilities [P, C] smoothed per track (`assign`'s ids, in the same order), the label
        held by hysteresis, `unknown` below the threshold; tracks unseen for track_buffer frames forgotten."""
        out = []
        for i, track_id in enumerate(ids):
            state = self.states.get(int(track_id)) if track_id != UNTRACKED else None
            if state is None:
                scores = probs[i].copy()
                state = TrackState(scores=scores, label=-1, last_seen=self.frame)
            else:
                state.scores = self.alpha * state.scores + (1 - self.alpha) * probs[i]
                state.last_seen = self.frame
            state.label = self._label(state.scores, state.label)
            if track_id != UNTRACKED:
                self.states[int(track_id)] = state
            label = self.labels[state.label] if state.label >= 0 else UNKNOWN
            conf = float(state.scores[state.label]) if state.label >= 0 else float(state.scores.max())
            out.append(Smoothed(int(track_id), state.scores.copy(), label, conf))
        stale = [t for t, s in self.states.items() if self.frame - s.last_seen > self.buffer]
        for t in stale:
            del self.states[t]
        return out


class PerTrack:
    """Something kept per live track (a REP-155 publisher, say), made on first use and released when the
    tracker forgets the track, at most `cap` at once (beyond it the least recently used one is released
    first). `make(track_id)` builds one, `release(thing)` frees it. ROS-free: the node passes rclpy's
    create_publisher / destroy_publisher."""

    def __init__(self, make, release, cap: int = 32):
        if cap < 1:
            raise ValueError(f"cap must be at least 1, got {cap}")
        self.make, self.release, self.cap = make, release, cap
        self.items: dict[int, object] = {}  # insertion order = least recently used first
        self.made = self.released = 0

    def get(self, track_id: int):
        if track_id in self.items:
            self.items[track_id] = self.items.pop(track_id)  # most recently used now
            return self.items[track_id]
        while len(self.items) >= self.cap:
            oldest = next(iter(self.items))
            self.release(self.items.pop(oldest))
            self.released += 1
        self.items[track_id] = self.make(track_id)
        self.made += 1
        return self.items[track_id]

    def keep_only(self, live: set[int]) -> None:
        """Release what belongs to tracks that are no longer live."""
        for track_id in [t for t in self.items if t not in live]:
            self.release(self.items.pop(track_id))
            self.released += 1

    def clear(self) -> None:
        self.keep_only(set())

    def __len__(self) -> int:
        return len(self.items)
