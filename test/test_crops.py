"""Crop geometry and the two ways of cutting crops: OpenCV on the host and torchvision's roi_align on the
device (run here on CPU tensors). Expected values are worked out by hand from the documented conventions."""

import numpy as np
import pytest
import torch
from conftest import FixedPeople, haar_or_skip, photo

from ros_fer.crops import (
    BODY_MARGIN,
    FACE_MARGIN,
    CropGraphs,
    Person,
    crop_batch,
    crop_batch_tensor,
    crop_boxes,
    crop_square,
    crop_tensor,
    letterbox_box,
    pyramid_level,
    square,
)

# Host and device crops of the same box agree to this (grey levels, on photographs): the documented tolerance.
MEAN_TOLERANCE, P99_TOLERANCE = 0.25, 2


def boxes_for(h: int, w: int) -> np.ndarray:
    """Shrunk, grown, outside-the-frame and fractional boxes."""
    return np.array(
        [
            letterbox_box(h, w),
            [100, 50, 228, 178],  # inside, 128 px
            [-64, -64, 64, 64],  # a quarter inside
            [w - 100, h - 40, w + 60, h + 120],  # bottom-right corner
            [300.3, 200.7, 330.1, 230.5],  # small and fractional: grown
            [10, 10, 700, 700],
        ],
        np.float32,
    )


@pytest.mark.parametrize("name", ["bus.jpg", "zidane.jpg"])
@pytest.mark.parametrize("size", [224, 64])
def test_device_crops_match_host_crops(name, size):
    rgb = photo(name)
    boxes = np.stack([square(b, 1.0) for b in boxes_for(*rgb.shape[:2])])
    host = np.stack([crop_square(rgb, b, size) for b in boxes]).astype(int)
    device = crop_tensor(torch.from_numpy(rgb), boxes, size)
    assert device.dtype == torch.uint8 and tuple(device.shape) == (len(boxes), size, size, 3)
    diff = np.abs(host - device.numpy().astype(int)).reshape(len(boxes), -1)
    assert diff.mean(axis=1).max() <= MEAN_TOLERANCE
    assert np.percentile(diff, 99, axis=1).max() <= P99_TOLERANCE


def test_device_crops_send_their_boxes_in_one_upload():
    """The boxes of every pyramid level cross to the device as one array, through the caller's `upload` (the
    torch backend's pinned buffers on CUDA), and the crops come back in the boxes' order."""
    rgb = photo("bus.jpg")
    boxes = np.stack([square(b, 1.0) for b in boxes_for(*rgb.shape[:2])])[::-1].copy()  # big ones first
    levels = {pyramid_level(float(b[2] - b[0]), 64) for b in boxes}
    assert len(levels) >= 2  # several levels, not in level order
    sent = []

    def upload(array):
        sent.append(array.copy())
        return torch.from_numpy(array)

    frame = torch.from_numpy(rgb)
    got = crop_tensor(frame, boxes, 64, upload)
    assert len(sent) == 1 and sent[0].shape == (len(boxes), 5)
    by_hand = [pyramid_level(float(b[2] - b[0]), 64) for b in boxes]  # each box's level, in the boxes' order
    np.testing.assert_array_equal(sent[0][:, 0], by_hand)
    np.testing.assert_allclose(sent[0][:, 1:], boxes[:, :4] / 2.0 ** np.array(by_hand)[:, None] + 1, rtol=1e-6)
    assert torch.equal(got, crop_tensor(frame, boxes, 64))
    # padded to more rows (the person buckets' fixed shapes), on fixed buffers: the same crops
    graphs = CropGraphs(64, capture=False)
    padded = crop_tensor(frame, boxes, 64, upload, rows=len(boxes) + 3, graphs=graphs)
    assert sent[-1].shape == (len(boxes) + 3, 5) and (sent[-1][len(boxes) :] == sent[-1][0]).all()
    assert torch.equal(padded, got) and list(graphs.runners) == [max(by_hand)]
    host = np.stack([crop_square(rgb, b, 64) for b in boxes]).astype(int)
    assert np.abs(host - got.numpy().astype(int)).reshape(len(boxes), -1).mean(axis=1).max() <= MEAN_TOLERANCE
    # a frame's crops (`crop_batch_tensor`): its boxes in one upload too; on fixed buffers, padded to the crop
    # count of the persons' bucket (3 persons run as 4: 4 x 2 + 1 crops)
    persons = [
        Person(
            face=np.array([40 + 90 * i, 50, 80 + 90 * i, 100, 1.0]),
            body=np.array([20 + 90 * i, 30, 100 + 90 * i, 400, 1.0]),
        )
        for i in range(3)
    ]
    levels = ("face", "body", "context")
    for graphs, rows in ((None, 7), (CropGraphs(64, capture=False), 9)):
        before = len(sent)
        batch = crop_batch_tensor(frame, persons, levels, 64, upload, graphs)
        assert len(sent) == before + 1 and sent[-1].shape == (rows, 5) and len(batch.images) == 7


def test_crop_graphs_stop_at_their_limit_and_cut_the_rest_eagerly():
    """Each frame size gets its own fixed buffers (on CUDA its own graph): photographs of many sizes would
    pile them up, so beyond `limit` new sizes are cut eagerly, with the same crops."""
    graphs = CropGraphs(16, capture=False, limit=3)
    boxes = np.array([[2, 3, 30, 31], [-5, -5, 50, 50]], np.float32)
    rng = np.random.default_rng(5)
    for width in range(40, 46):
        frame = torch.from_numpy(rng.integers(0, 256, (36, width, 3), np.uint8))
        got = crop_tensor(frame, boxes, 16, rows=4, graphs=graphs)
        assert torch.equal(got, crop_tensor(frame, boxes, 16))
    assert sum(len(r.entries) for r in graphs.runners.values()) == 3
    frame = torch.from_numpy(rng.integers(0, 256, (36, 41, 3), np.uint8))  # a size it keeps: its buffers
    assert torch.equal(crop_tensor(frame, boxes, 16, rows=4, graphs=graphs), crop_tensor(frame, boxes, 16))


@pytest.mark.parametrize("shape", [(8, 5, 3), (5, 8, 3)])
def test_device_crops_of_a_frame_too_small_to_halve_match_the_host(shape):
    """A box far larger than a tiny frame asks for a pyramid level the frame cannot reach: both cuts stop
    halving where a side would reach 0 pixels (the host's `Pyramid`), and sample that level."""
    rgb = np.random.default_rng(3).integers(0, 256, shape, np.uint8)
    boxes = np.array([[-400, -400, 404, 404], [0, 0, 5, 5], [-40, -40, 44, 44]], np.float32)
    assert pyramid_level(804, 8) == 6  # 8 x 5 halves twice (4 x 2, 2 x 1), then no more; 5 x 8 likewise
    host = np.stack([crop_square(rgb, b, 8) for b in boxes]).astype(int)
    device = crop_tensor(torch.from_numpy(rgb), boxes, 8).numpy().astype(int)
    assert np.abs(host - device).reshape(len(boxes), -1).mean(axis=1).max() <= MEAN_TOLERANCE


def ramp(h: int = 40, w: int = 200) -> np.ndarray:
    """Pixel column j holds the value j: sampled bilinearly at continuous x, the value is x - 0.5."""
    return np.repeat(np.repeat(np.arange(w, dtype=np.uint8)[None, :, None], h, axis=0), 3, axis=2)


@pytest.mark.parametrize("cut", ["host", "device"])
def test_crops_sample_pixel_centres(cut):
    rgb = ramp()
    crop = lambda box, size: (  # noqa: E731
        crop_square(rgb, box, size) if cut == "host" else crop_tensor(torch.from_numpy(rgb), box[None], size)[0].numpy()
    )
    # grown 4x: crop pixel u samples x = 20 + (u + 0.5) * 10 / 40, value x - 0.5 = 19.625 + u / 4
    grown = crop(np.array([20, 5, 30, 15], np.float32), 40)[10, :, 0].astype(float)
    np.testing.assert_allclose(grown, np.round(19.625 + np.arange(40) / 4), atol=1)
    # shrunk 4x: each crop pixel averages source columns 40+4u .. 43+4u, mean 41.5 + 4u
    shrunk = crop(np.array([40, 0, 120, 80], np.float32), 20)[2, :, 0].astype(float)
    np.testing.assert_allclose(shrunk, 41.5 + 4 * np.arange(20), atol=1)
    # outside the frame: black; inside: the ramp
    left = crop(np.array([-20, 0, 20, 40], np.float32), 40)
    assert (left[:, :19] == 0).all() and left[20, 21:, 0].min() > 0


def test_crop_geometry_by_hand():
    face = np.array([100, 100, 140, 150, 0.9], np.float32)  # 40 x 50, centre (120, 125)
    body = np.array([60, 80, 200, 500, 0.8], np.float32)  # 140 x 420, centre (130, 290)
    persons = [Person(face=face, body=body), Person(face=None, body=body, face_detected=False)]
    boxes, index = crop_boxes(persons, ("face", "body", "context"), 600, 1000)
    half_face, half_body = 50 * FACE_MARGIN / 2, 420 * BODY_MARGIN / 2
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-3)  # noqa: E731
    close(boxes[0], [120 - half_face, 125 - half_face, 120 + half_face, 125 + half_face])
    close(boxes[1], [130 - half_body, 290 - half_body, 130 + half_body, 290 + half_body])
    close(boxes[2], [0, -200, 1000, 800])  # 1000 x 600 letterboxed to 1000 x 1000
    # no face: estimated from the body, side min(0.5 * 140, 0.2 * 420) = 70 at the top, 2 % of 420 down
    side = 70 * FACE_MARGIN
    cy = 80 + 0.02 * 420 + 35
    close(boxes[3], [130 - side / 2, cy - side / 2, 130 + side / 2, cy + side / 2])
    assert index.tolist() == [[0, 1, 2], [3, 4, 2]]  # the context box once, shared
    close(boxes[4], boxes[1])
    assert crop_boxes([], ("face", "context"), 10, 10)[0].shape == (0, 4)


def test_device_crop_batch_follows_the_host_batch():
    rgb = photo("zidane.jpg")
    persons = [
        Person(face=np.array([922, 110, 1070, 258, 0.9], np.float32), body=np.array([700, 40, 1260, 720, 0.9])),
        Person(face=None, body=np.array([100, 200, 500, 720, 0.7], np.float32), face_detected=False),
    ]
    levels = ("face", "body", "context")
    host = crop_batch(rgb, persons, levels, 64)
    device = crop_batch_tensor(torch.from_numpy(rgb), persons, levels, 64)
    assert np.array_equal(host.index, device.index) and device.images.shape == host.images.shape
    assert np.abs(host.images.astype(int) - device.images.numpy().astype(int)).mean() <= MEAN_TOLERANCE
    empty = crop_batch_tensor(torch.from_numpy(rgb), [], levels, 64)
    assert tuple(empty.images.shape) == (0, 64, 64, 3) and empty.index.shape == (0, 3)


def eight_people() -> list[Person]:
    """Eight people of a 1280x720 photograph: small faces (level 0), large bodies (levels 1-2), boxes with
    fractional corners and boxes reaching out of the frame."""
    people = []
    for k in range(8):
        x, side = 40.0 + 150.3 * k, 30.0 + 17.7 * k
        face = np.array([x, 60.5 + 9 * k, x + side, 60.5 + 9 * k + side, 0.9], np.float32)
        body = np.array([x - 80, 20.25, x + 60 + 70 * k, 740.0, 0.8], np.float32)
        people.append(Person(face=face if k % 3 else None, body=body, face_detected=bool(k % 3)))
    return people


@pytest.mark.parametrize("workers", [2, 3, 5, 40])
def test_host_crops_shared_over_threads_are_the_crops_cut_one_by_one(workers):
    rgb = photo("zidane.jpg")
    people, levels = eight_people(), ("face", "body", "context")
    batch = crop_batch(rgb, people, levels, 48, workers=workers)
    boxes, index = crop_boxes(people, levels, *rgb.shape[:2])
    assert len(boxes) == 17 and len({pyramid_level(b[2] - b[0], 48) for b in boxes}) >= 3
    one_by_one = np.stack([crop_square(rgb, box, 48) for box in boxes])  # each from its own pyramid, in order
    assert np.array_equal(batch.index, index) and np.array_equal(batch.images, one_by_one)
    assert np.array_equal(crop_batch(rgb, people, levels, 48, workers=1).images, one_by_one)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_host_crops_are_returned_once_every_thread_has_written_its_share(monkeypatch, workers):
    import threading
    import time

    import ros_fer.crops as crops_module

    real = crops_module.crop_square
    in_pool = []

    def slow_in_pool(*args, **kwargs):
        if threading.current_thread().name.startswith("ros_fer-crops"):
            in_pool.append(1)
            time.sleep(0.02)  # the pool's threads finish well after the caller's own share
        return real(*args, **kwargs)

    monkeypatch.setattr(crops_module, "crop_square", slow_in_pool)
    rgb, people = photo("zidane.jpg"), eight_people()
    boxes, _ = crop_boxes(people, ("face", "body", "context"), *rgb.shape[:2])
    batch = crop_batch(rgb, people, ("face", "body", "context"), 32, workers=workers)
    # the caller cuts every workers-th crop itself (1 thread: all 17); the pool's workers - 1 threads the rest
    assert len(in_pool) == 17 - len(range(0, 17, workers))
    if workers > 1:
        assert crops_module._WORKERS.size == crops_module._WORKERS.pool._max_workers == workers - 1
    assert np.array_equal(batch.images, np.stack([real(rgb, box, 32) for box in boxes]))


def test_host_crops_take_as_many_threads_as_torch_was_given():
    from ros_fer.crops import crop_workers

    threads = torch.get_num_threads()
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            assert crop_workers() == n
    finally:
        torch.set_num_threads(threads)


def test_the_crop_threads_are_made_once_per_count_and_the_old_ones_let_go():
    from ros_fer.crops import _WORKERS

    pool = _WORKERS.get(2)
    assert _WORKERS.get(2) is pool and pool._max_workers == 2
    other = _WORKERS.get(3)
    assert other is not pool and other._max_workers == 3 and pool._shutdown
    assert _WORKERS.get(3) is other


def _crops_in_forked_child(rgb, people, expected) -> None:
    import os

    batch = crop_batch(rgb, people, ("face", "body", "context"), 32, workers=2)
    os._exit(0 if np.array_equal(batch.images, expected) else 3)


def test_host_crops_in_a_forked_worker_get_threads_of_their_own():
    """A DataLoader worker is a fork of a process whose crop threads did not come with it: its crops must
    not wait for them (bounded: the child is killed after 60 s)."""
    import multiprocessing
    import warnings

    rgb, people = photo("zidane.jpg"), eight_people()
    expected = crop_batch(rgb, people, ("face", "body", "context"), 32, workers=2).images  # the parent's pool
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Python >= 3.12: fork of a threaded process
        child = multiprocessing.get_context("fork").Process(target=_crops_in_forked_child, args=(rgb, people, expected))
        child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        child.join(timeout=10)
        pytest.fail("the forked child's crops waited for the parent's threads")
    assert child.exitcode == 0


def test_pipeline_with_device_crops_scores_like_host_crops(tmp_path, monkeypatch):
    from ros_fer.crops import associate
    from ros_fer.params import load_params
    from ros_fer.pipeline import Pipeline
    from ros_fer.runtime import build_runtime

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    params = {"backbone": "tiny-random", "pretrained": "", "backend": "torch", "device": "cpu"}  # CPU-meant
    runtime = build_runtime(load_params(None, params))
    frame = photo("zidane.jpg")
    results = {}
    for device_crops in (False, True):
        pipeline = Pipeline(haar_or_skip()(), runtime, device_crops=device_crops)
        assert pipeline.device_crops is device_crops
        results[device_crops] = pipeline.process(frame, color="rgb").persons
    assert len(results[True]) == len(results[False]) >= 1
    for host, device in zip(results[False], results[True], strict=True):
        np.testing.assert_allclose(device.raw_scores, host.raw_scores, atol=0.02)
    assert Pipeline(haar_or_skip()(), runtime).device_crops is False  # CPU: OpenCV's crops are faster
    # Pipeline.crop (what ros-fer bench times) uploads the frame itself when not handed one
    people = associate(haar_or_skip()().detect(frame), *frame.shape[:2], 8)
    on_device = Pipeline(haar_or_skip()(), runtime, device_crops=True).crop(frame, people)
    on_host = Pipeline(haar_or_skip()(), runtime).crop(frame, people)
    assert isinstance(on_device.images, torch.Tensor) and isinstance(on_host.images, np.ndarray)
    assert np.array_equal(on_device.index, on_host.index)
    assert np.abs(on_device.images.numpy().astype(int) - on_host.images.astype(int)).mean() <= MEAN_TOLERANCE


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_pipeline_cuts_crops_on_the_device(tmp_path, monkeypatch):
    from ros_fer.params import load_params
    from ros_fer.pipeline import Pipeline
    from ros_fer.runtime import build_runtime

    rgb = photo("bus.jpg")
    boxes = np.stack([square(b, 1.0) for b in boxes_for(*rgb.shape[:2])])
    cuda = crop_tensor(torch.from_numpy(rgb).cuda(), boxes, 224)
    assert cuda.is_cuda
    diff = np.abs(np.stack([crop_square(rgb, b, 224) for b in boxes]).astype(int) - cuda.cpu().numpy().astype(int))
    assert diff.mean() <= MEAN_TOLERANCE
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    params = load_params(None, {"backbone": "tiny-random", "pretrained": "", "device": "cuda", "precision": "fp32"})
    pipeline = Pipeline(FixedPeople(), build_runtime(params))
    assert pipeline.device_crops  # chosen once, from the backend's device
    host = Pipeline(FixedPeople(), build_runtime({**params, "device": "cpu"}))
    on_gpu, on_cpu = pipeline.process(rgb, color="rgb").persons, host.process(rgb, color="rgb").persons
    assert len(on_gpu) == len(on_cpu) >= 1
    for a, b in zip(on_gpu, on_cpu, strict=True):
        np.testing.assert_allclose(a.raw_scores, b.raw_scores, atol=0.02)


def test_derived_body_and_estimated_face_by_hand():
    from ros_fer.crops import derive_body, estimate_face

    face = np.array([100, 100, 140, 150, 0.7], np.float32)  # w 40, h 50, centre x 120
    # 1.5 face widths either side of the centre, from 0.3 face heights above to 7 below the face top
    np.testing.assert_allclose(derive_body(face, 600, 1000), [60, 85, 180, 450, 0.7])
    np.testing.assert_allclose(derive_body(face, 300, 150), [60, 85, 150, 300, 0.7])  # clipped to the frame
    np.testing.assert_allclose(derive_body(np.array([0, 0, 40, 50, 1], np.float32), 600, 1000), [0, 0, 80, 350, 1])
    body = np.array([60, 80, 200, 500, 0.8], np.float32)  # 140 x 420
    np.testing.assert_allclose(estimate_face(body), [95, 88.4, 165, 158.4, 0.8], rtol=1e-6)  # side min(70, 84)
    wide = np.array([0, 0, 400, 200, 0.5], np.float32)  # side min(200, 40) = 40
    np.testing.assert_allclose(estimate_face(wide), [180, 4, 220, 44, 0.5], rtol=1e-6)


def test_faces_join_the_tightest_free_body_holding_them_in_its_upper_half():
    from ros_fer.crops import associate
    from ros_fer.detection import Detections

    bodies = np.array(
        [
            [0, 0, 600, 600, 0.9],  # big: holds both faces' centres in its upper half
            [80, 90, 200, 500, 0.8],  # tight around face 1
            [700, 0, 800, 300, 0.7],  # nobody's
        ],
        np.float32,
    )
    faces = np.array(
        [
            [100, 100, 140, 140, 0.6],  # centre (120, 120): in bodies 0 and 1; 1 is tighter
            [300, 100, 340, 140, 0.9],  # centre (320, 120): only in body 0
            [120, 560, 160, 590, 0.95],  # centre y 575: lower half of body 0 and outside body 1
        ],
        np.float32,
    )
    persons = associate(Detections(faces=faces, bodies=bodies), 1000, 1000, 8)
    by_face = {None if p.face is None else int(p.face[0]): p for p in persons}
    assert by_face[100].body[0] == 80 and by_face[100].body_detected
    assert by_face[300].body[0] == 0 and by_face[300].body_detected
    assert not by_face[120].body_detected and by_face[120].notes == ["body derived from face"]
    np.testing.assert_allclose(by_face[120].body[:4], derive_body_of(faces[2], 1000, 1000))
    # the leftover body gets an estimated face
    assert by_face[None].body[0] == 700 and by_face[None].face_source == "estimated"
    assert by_face[None].notes == ["no face found: face estimated from body"] and not by_face[None].face_detected
    assert len(persons) == 4

    # Faces choose in order of their score: the surer face takes the tighter body when both fit.
    two = np.array([[100, 100, 140, 140, 0.5], [110, 100, 150, 140, 0.9]], np.float32)
    both = associate(Detections(faces=two, bodies=bodies[:2]), 1000, 1000, 8)
    surer = next(p for p in both if p.face[4] == np.float32(0.9))
    other = next(p for p in both if p.face[4] == np.float32(0.5))
    assert surer.body[0] == 80 and other.body[0] == 0  # each body used once

    # A centre on the box edge counts as inside (<=); one just below the upper half does not.
    edge = np.array([[180, 275, 220, 315, 0.9]], np.float32)  # centre (200, 295): x2 = 200, y1 + h / 2 = 295

    def with_face(faces):
        persons = associate(Detections(faces=faces, bodies=bodies[1:2]), 1000, 1000, 8)
        return next(p for p in persons if p.face is not None)

    assert with_face(edge).body_detected
    below = np.array([[180, 276, 220, 316, 0.9]], np.float32)  # centre y 296 > 295
    assert not with_face(below).body_detected
    left = np.array([[59, 100, 99, 140, 0.9]], np.float32)  # centre x 79 < 80
    assert not with_face(left).body_detected


def derive_body_of(face, h, w):
    x1, y1, x2, y2 = face[:4]
    fw, fh, cx = x2 - x1, y2 - y1, (x1 + x2) / 2
    return [max(0, cx - 1.5 * fw), max(0, y1 - 0.3 * fh), min(w, cx + 1.5 * fw), min(h, y1 + 7 * fh)]


def test_the_cap_keeps_the_closest_surest_people():
    from ros_fer.crops import associate
    from ros_fer.detection import Detections

    faces = np.array(
        [[0, 0, 10, 10, 0.9], [100, 0, 150, 50, 0.5], [300, 0, 340, 40, 0.9], [500, 0, 560, 60, 0.1]], np.float32
    )
    # priorities (area x score): 90, 1250, 1440, 360
    kept = associate(Detections(faces=faces), 1000, 1000, 2)
    assert [int(p.face[0]) for p in kept] == [300, 100]
    assert [int(p.face[0]) for p in associate(Detections(faces=faces), 1000, 1000, 8)] == [300, 100, 500, 0]
    bodies_only = associate(Detections(bodies=np.array([[0, 0, 100, 400, 0.5]], np.float32)), 1000, 1000, 8)
    assert bodies_only[0].priority == pytest.approx(50 * 50 * 0.5)  # no face: the face estimated from the body


def test_faces_without_a_body_detector_say_so():
    from ros_fer.crops import associate
    from ros_fer.detection import Detections

    face = np.array([[100, 100, 140, 140, 0.9]], np.float32)
    alone = associate(Detections(faces=face, bodies_detected=False), 1000, 1000, 8)[0]
    assert alone.notes == ["body derived from face (no body detector)"] and alone.face_source == "detector"


def test_edge_cases_of_the_geometry():
    from ros_fer.crops import estimate_face

    # a body whose height term binds, away from the top of the frame: side min(0.5 * 400, 0.2 * 200) = 40
    np.testing.assert_allclose(estimate_face(np.array([0, 100, 400, 300, 1], np.float32)), [180, 104, 220, 144, 1])
    # portrait frames are letterboxed left and right, landscape ones top and bottom
    np.testing.assert_allclose(letterbox_box(1000, 600), [-200, 0, 800, 1000])
    np.testing.assert_allclose(letterbox_box(600, 1000), [0, -200, 1000, 800])
    # the shared context box may come first: every later level still gets its own box
    person = Person(face=np.array([100, 100, 140, 150, 0.9], np.float32), body=np.array([60, 80, 200, 500, 0.8]))
    boxes, index = crop_boxes([person, person], ("context", "face", "body"), 600, 1000)
    assert index.tolist() == [[0, 1, 2], [0, 3, 4]] and len(boxes) == 5
    # nobody: empty batches of the right dtype and shape, on both cutters
    empty = crop_batch(np.zeros((10, 10, 3), np.uint8), [], ("face", "context"), 8)
    assert empty.images.shape == (0, 8, 8, 3) and empty.images.dtype == np.uint8 and empty.index.shape == (0, 2)
    on_device = crop_tensor(torch.zeros((10, 10, 3), dtype=torch.uint8), np.zeros((0, 4), np.float32), 8)
    assert on_device.dtype == torch.uint8 and tuple(on_device.shape) == (0, 8, 8, 3)
    # a sub-pixel box is a flat patch of the colour at that place, not an error
    tiny_box = crop_square(ramp(), np.array([50.25, 10, 50.75, 10.5], np.float32), 4)
    assert tiny_box.shape == (4, 4, 3) and abs(int(tiny_box[..., 0].mean()) - 50) <= 1


def test_association_against_an_independent_implementation():
    """Random scenes: each face, surest first, takes the smallest-area free body whose upper half holds the
    face centre, written here from the rule, not from the code."""
    from ros_fer.crops import associate
    from ros_fer.detection import Detections

    rng = np.random.default_rng(11)
    for _ in range(300):
        faces = np.zeros((rng.integers(1, 4), 5), np.float32)
        faces[:, :2] = rng.uniform(0, 500, (len(faces), 2))
        faces[:, 2:4] = faces[:, :2] + rng.uniform(10, 60, (len(faces), 2))
        faces[:, 4] = rng.permutation(np.linspace(0.3, 0.9, len(faces)))
        bodies = np.zeros((rng.integers(1, 6), 5), np.float32)
        bodies[:, :2] = rng.uniform(0, 450, (len(bodies), 2))
        bodies[:, 2:4] = bodies[:, :2] + rng.uniform(20, 400, (len(bodies), 2))
        bodies[:, 4] = 0.8
        expected, free = {}, set(range(len(bodies)))
        for f in sorted(range(len(faces)), key=lambda i: -faces[i, 4]):
            x = (faces[f, 0] + faces[f, 2]) / 2
            y = (faces[f, 1] + faces[f, 3]) / 2
            fits = [
                b
                for b in free
                if bodies[b, 0] <= x <= bodies[b, 2] and bodies[b, 1] <= y <= (bodies[b, 1] + bodies[b, 3]) / 2
            ]
            if fits:
                best = min(fits, key=lambda b: (bodies[b, 2] - bodies[b, 0]) * (bodies[b, 3] - bodies[b, 1]))
                free.discard(best)
                expected[f] = best
        persons = associate(Detections(faces=faces, bodies=bodies), 1000, 1000, 20)
        got = {}
        for p in persons:
            if p.face is None:
                continue
            f = int(np.flatnonzero((faces == p.face).all(axis=1))[0])
            if p.body_detected is True:
                got[f] = int(np.flatnonzero((bodies == p.body).all(axis=1))[0])
            else:
                assert p.body_detected is False and p.notes == ["body derived from face"]
        assert got == expected
        assert sum(p.face is None for p in persons) == len(free)  # every free body: a person without a face
        assert all(p.face_detected is False for p in persons if p.face is None)


def test_faces_on_the_body_edges_and_the_keypoint_threshold():
    from ros_fer.crops import associate
    from ros_fer.detection import Detections

    body = np.array([[100, 100, 200, 400, 0.9]], np.float32)
    for centre in ((100, 120), (200, 120), (150, 100), (150, 250)):  # on the left, right, top, half-height edge
        face = np.array([[centre[0] - 10, centre[1] - 10, centre[0] + 10, centre[1] + 10, 0.9]], np.float32)
        persons = associate(Detections(faces=face, bodies=body), 1000, 1000, 8)
        assert len(persons) == 1 and persons[0].body_detected is True, centre  # joined: one person, not two
    # keypoints seen at 0.6: a face at keypoint_score 0.5, none at 0.7
    kp = np.zeros((1, 17, 3), np.float32)
    kp[0, :5] = [[150, 130, 0.6], [140, 120, 0.6], [160, 120, 0.6], [130, 125, 0.6], [170, 125, 0.6]]
    det = Detections(bodies=body, keypoints=kp)
    low = associate(det, 1000, 1000, 8, keypoint_score=0.5)[0]
    assert low.face_source == "keypoints" and low.face is not None and low.face_detected is True
    high = associate(det, 1000, 1000, 8, keypoint_score=0.7)[0]
    assert high.face_source == "estimated" and high.face is None and high.face_detected is False
