"""Tracking and smoothing, worked by hand: per-track exponential smoothing s_t = a s_{t-1} + (1 - a) p_t,
the label switching only when the new best leads the current label by more than the hysteresis, `unknown`
below the threshold, results in input order, and a track's state dropped once it is lost for longer than
the buffer."""

import numpy as np
import pytest

from ros_fer.tracking import UNKNOWN, UNTRACKED, PerTrack, Tracker

A = np.array([100, 100, 200, 400, 0.9], np.float32)
B = np.array([400, 100, 500, 400, 0.8], np.float32)
LABELS = ("a", "b", "c")


@pytest.fixture(autouse=True)
def offline_ultralytics(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "yolo"))


def test_each_track_is_smoothed_with_its_own_history():
    tracker = Tracker(LABELS, smoothing=0.25, hysteresis=0.0, unknown_threshold=0.0)
    pa = [np.array([0.6, 0.3, 0.1]), np.array([0.2, 0.2, 0.6]), np.array([0.0, 1.0, 0.0])]
    pb = [np.array([0.1, 0.1, 0.8]), np.array([0.5, 0.4, 0.1]), np.array([0.3, 0.3, 0.4])]
    sa, sb = pa[0], pb[0]
    for t in range(3):
        if t:
            sa, sb = 0.25 * sa + 0.75 * pa[t], 0.25 * sb + 0.75 * pb[t]
        out = tracker.update(np.stack([A, B]), np.stack([pa[t], pb[t]]))
        np.testing.assert_allclose(out[0].scores, sa, atol=1e-12)
        np.testing.assert_allclose(out[1].scores, sb, atol=1e-12)
        assert out[0].label == LABELS[int(np.argmax(sa))] and out[1].label == LABELS[int(np.argmax(sb))]
        assert out[0].confidence == pytest.approx(sa.max()) and out[1].confidence == pytest.approx(sb.max())
    assert (out[0].track_id, out[1].track_id) == (1, 2)
    # Rows come back in input order, whatever order the people are given in.
    swapped = tracker.update(np.stack([B, A]), np.stack([pb[2], pa[2]]))
    assert [s.track_id for s in swapped] == [2, 1]
    np.testing.assert_allclose(swapped[1].scores, 0.25 * sa + 0.75 * pa[2], atol=1e-12)


def test_hysteresis_boundary_and_unknown():
    tracker = Tracker(LABELS, smoothing=0.0, hysteresis=0.25, unknown_threshold=0.0)
    box = A[None]
    assert tracker.update(box, np.array([[0.5, 0.25, 0.25]]))[0].label == "a"
    # b leads a by exactly the hysteresis (0.625 - 0.375 = 0.25, exact in binary): a stays, with a's score
    held = tracker.update(box, np.array([[0.375, 0.625, 0.0]]))[0]
    assert held.label == "a" and held.confidence == 0.375
    switched = tracker.update(box, np.array([[0.37, 0.63, 0.0]]))[0]  # leads by 0.26: switch
    assert switched.label == "b" and switched.confidence == 0.63
    gated = Tracker(LABELS, smoothing=0.0, hysteresis=0.0, unknown_threshold=0.4)
    unknown = gated.update(box, np.array([[0.35, 0.33, 0.32]]))[0]
    assert unknown.label == UNKNOWN and unknown.confidence == 0.35  # the best score, shown
    assert gated.update(box, np.array([[0.4, 0.35, 0.25]]))[0].label == "a"  # at the threshold: kept (>=)
    # a label held by hysteresis still needs the threshold
    held_low = Tracker(LABELS, smoothing=0.0, hysteresis=0.25, unknown_threshold=0.4)
    held_low.update(box, np.array([[0.5, 0.25, 0.25]]))
    assert held_low.update(box, np.array([[0.375, 0.5, 0.125]]))[0].label == UNKNOWN


def test_lost_tracks_are_forgotten_after_the_buffer_and_reset_forgets_all():
    tracker = Tracker(LABELS, smoothing=0.5, track_buffer=3)
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]])
    tracker.update(np.stack([A, B]), probs)
    for lost in range(1, 6):
        tracker.update(B[None], probs[1:])
        # A was last seen `lost` frames ago: kept while lost <= 3, then dropped
        assert sorted(tracker.states) == ([1, 2] if lost <= 3 else [2])
    back = tracker.update(np.stack([B, A]), probs[::-1])
    assert back[1].track_id == UNTRACKED  # a new person as far as the tracker knows: unsmoothed
    np.testing.assert_allclose(back[1].scores, probs[0])
    assert len(tracker.states) <= 3
    tracker.reset()
    assert tracker.states == {} and tracker.frame == 0
    assert tracker.update(A[None], probs[:1])[0].track_id == 1  # ids start again


def test_nobody_and_many_short_tracks_stay_bounded():
    tracker = Tracker(LABELS, track_buffer=2)
    assert tracker.update(np.zeros((0, 5), np.float32), np.zeros((0, 3))) == []
    rng = np.random.default_rng(0)
    for frame in range(60):  # a new person every frame, each seen for 2 frames at a new place
        x = 50.0 * (frame % 20)
        y = 500.0 * (frame // 20)
        box = np.array([[x, y, x + 40, y + 120, 0.9]], np.float32)
        tracker.update(box, rng.dirichlet(np.ones(3))[None])
        tracker.update(box, rng.dirichlet(np.ones(3))[None])
        assert len(tracker.states) <= 2 * (2 + 1)  # at most the tracks seen within the buffer


def test_defaults_are_the_documented_parameters_and_bytetrack_recovers_low_scores():
    from ros_fer.params import DEFAULTS

    tracker = Tracker(LABELS)
    assert (tracker.alpha, tracker.hysteresis, tracker.threshold, tracker.buffer) == (
        DEFAULTS["smoothing"],
        DEFAULTS["hysteresis"],
        DEFAULTS["unknown_threshold"],
        DEFAULTS["track_buffer"],
    )
    probs = np.array([[0.8, 0.1, 0.1]])
    first = tracker.update(A[None], probs)[0].track_id
    # a low-confidence detection of the same person (0.1 < 0.2 < 0.25) keeps the track (ByteTrack's second pass)
    weak = A.copy()
    weak[4] = 0.2
    assert tracker.update(weak[None], probs)[0].track_id == first
    # a box far from every track is someone else: no overlap, no match
    far = np.array([900, 100, 1000, 400, 0.9], np.float32)
    assert tracker.update(far[None], probs)[0].track_id != first


def test_per_track_things_are_released_when_their_track_ends_and_capped():
    """The node's bookkeeping (a REP-155 publisher per face track) over 300 short tracks, each seen for two
    frames then gone for four: everything made is released once the tracker forgets its track, and at most
    `cap` exist at any time. ByteTrack's own lists stay bounded too."""
    live_things: set[int] = set()
    made_for: list[int] = []

    def make(track_id):
        made_for.append(track_id)
        live_things.add(track_id)
        return track_id

    registry = PerTrack(make, live_things.remove, cap=3)
    tracker = Tracker(LABELS, track_buffer=1)
    nobody = (np.zeros((0, 5), np.float32), np.zeros((0, 3)))
    rng = np.random.default_rng(0)
    most = 0
    for k in range(300):
        x, y = 40.0 * (k % 25), 300.0 * (k % 3)
        box = np.array([[x, y, x + 40, y + 120, 0.9]], np.float32)
        for frame in [(box, rng.dirichlet(np.ones(3))[None])] * 2 + [nobody] * 4:
            out = tracker.update(*frame)
            registry.keep_only(tracker.live_ids())
            for s in out:
                if s.track_id != UNTRACKED:
                    registry.get(s.track_id)
            most = max(most, len(registry))
            assert live_things == set(registry.items) and len(tracker.states) <= 1
    assert len(set(made_for)) == len(made_for) >= 290  # a new track (and thing) per appearance
    assert registry.made == len(made_for) and registry.released == len(made_for) and len(registry) == 0
    assert most == 1 and not live_things
    byte = tracker.byte
    assert len(byte.tracked_stracks) + len(byte.lost_stracks) <= 1 and len(byte.removed_stracks) <= 1000
    # the cap: four tracks at once, three things at most, least recently used released first
    many = PerTrack(make, live_things.remove, cap=3)
    for track_id in (101, 102, 103, 101, 104):
        many.get(track_id)
    assert list(many.items) == [103, 101, 104] and live_things == {101, 103, 104} and many.released == 1
    many.clear()
    assert not live_things
    with pytest.raises(ValueError, match="cap must be at least 1"):
        PerTrack(make, live_things.remove, cap=0)
    one = PerTrack(make, live_things.remove, cap=1)  # the smallest cap: each new track releases the last
    for track_id in (201, 202, 203):
        one.get(track_id)
    assert list(one.items) == [203] and one.released == 2 and live_things == {203}


def test_retune_changes_the_labels_from_the_next_update_and_keeps_the_tracks():
    tracker = Tracker(LABELS, smoothing=0.0, hysteresis=0.0, unknown_threshold=0.35)
    probs = np.array([[0.6, 0.3, 0.1]])
    assert tracker.update(A[None], probs)[0].label == LABELS[0]
    tracker.retune(smoothing=0.0, hysteresis=0.0, unknown_threshold=0.7)
    again = tracker.update(A[None], probs)[0]
    assert again.label == UNKNOWN and again.track_id == 1  # same track, new threshold
