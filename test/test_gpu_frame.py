"""The GPU-resident frame: person buckets and fixed buffers (what CUDA graphs replay), the encoder, head and
softmax in one call, JPEG decoding by torchvision, frames loaded where the pipeline works, streamed frames,
and faces from keypoints handed over by a device detector. Everything but the capture itself runs here on
CPU tensors; the CUDA tests (skipped without a GPU) check the graphs and nvjpeg against the CPU."""

import copy
import math

import cv2
import numpy as np
import pytest
import torch
from conftest import FixedPeople, haar_or_skip, photo, tiny

from ros_fer.backends import TorchBackend
from ros_fer.backends.graphs import BUCKETS, ShapeGraphs, bucket, pad_batch
from ros_fer.errors import ConfigError
from ros_fer.image_conv import ImageError, decode_bytes, decode_compressed, decode_jpeg_tensor, is_jpeg
from ros_fer.params import load_params
from ros_fer.pipeline import Pipeline, as_rgb_tensor
from ros_fer.runtime import build_runtime
from ros_fer.text_bank import build_text_bank
from ros_fer.tracking import Tracker

HAS_CUDA = torch.cuda.is_available()
cuda_only = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def shared_frame(model, persons: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A frame's crops as the pipeline cuts them: each person's own crops, one context crop shared by all."""
    size, levels = model.backbone.image_size, len(model.levels)
    own = levels - 1
    crops = np.random.default_rng(seed).integers(0, 256, (persons * own + 1, size, size, 3), dtype=np.uint8)
    index = np.array([[p * own + j for j in range(own)] + [persons * own] for p in range(persons)], np.int64)
    return crops, index


def test_persons_are_padded_to_a_few_buckets():
    for n in range(1, 40):
        want = min((b for b in (1, 2, 4, 8) if b >= n), default=8 * math.ceil(n / 8))
        assert bucket(n) == want, n
    assert BUCKETS == (1, 2, 4, 8)
    crops = torch.arange(7 * 2, dtype=torch.uint8).view(7, 1, 2, 1).expand(7, 1, 2, 3)
    index = torch.tensor([[0, 1, 6], [2, 3, 6], [4, 5, 6]])  # 3 persons, context shared: 7 crops
    padded_crops, padded_index, persons = pad_batch(crops, index)
    assert persons == 3 and padded_index.shape == (4, 3) and padded_crops.shape == (4 * 2 + 1, 1, 2, 3)
    assert torch.equal(padded_crops[:7], crops) and not padded_crops[7:].any()  # black extra crops
    assert torch.equal(padded_index[:3], index) and not padded_index[3].any()
    # nothing shared, 3 crops per person: 3 persons' 9 crops fit bucket 4's shared count (4 x 2 + 1), 4 don't
    dense = torch.zeros((4 * 3, 1, 2, 3), dtype=torch.uint8)
    assert pad_batch(dense[:9], torch.arange(9).view(3, 3))[0].shape[0] == 9
    assert pad_batch(dense[:12], torch.arange(12).view(4, 3))[0].shape[0] == 12
    assert pad_batch(dense[:9], torch.arange(9).view(9, 1))[0].shape[0] == 16  # one level: one crop per person
    full, full_index = crops[:5], torch.tensor([[0, 1, 4], [2, 3, 4]])
    same = pad_batch(full, full_index)
    assert same[0] is full and same[1] is full_index and same[2] == 2  # a full bucket is left as it is, uncopied


@pytest.mark.parametrize("config", ["mlper", "mpa-fer", "zeroshot"])
def test_bucketed_fixed_buffers_encode_and_score_like_the_plain_forward(config):
    """The static path (what CUDA graphs replay: persons padded to their bucket, fixed input buffers) gives
    the plain forward's features and probabilities for the real persons, at 1..9 persons, from five shapes."""
    model = tiny(config).eval()
    bank = build_text_bank(model).tensors
    plain, static = TorchBackend(model), TorchBackend(copy.deepcopy(model))
    static.static = True
    head = model.head()
    plain_scorer, static_scorer = plain.scorer(head, bank), static.scorer(head, bank)
    for persons in range(1, 10):
        crops, index = shared_frame(model, persons, seed=persons)
        want = plain.encode(crops, index)
        got = static.encode(crops, index)
        for name in want:
            assert got[name].shape == want[name].shape
            torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-5)
        # the fused scorer against the head applied to the plain features, softmaxed here
        probs = torch.softmax(head(want, bank).float(), dim=-1)
        torch.testing.assert_close(plain_scorer(crops, index), probs, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(static_scorer(crops, index), probs, atol=1e-5, rtol=1e-5)
    shapes = {key[1][0] for key in static._encoder.entries}  # index shapes [bucket, L]
    assert sorted(s[0] for s in shapes) == [1, 2, 4, 8, 16] and len(static._encoder.entries) == 5
    assert len(static_scorer.runner.entries) == 5
    assert static_scorer(np.zeros((0, 8, 8, 3), np.uint8), np.zeros((0, 3), np.int64)).shape == (0, 7)


def test_fixed_buffers_hand_back_copies():
    """A later call overwrites the buffers, never an earlier call's result."""
    runner = ShapeGraphs(lambda x: (x * 2, x.sum(dim=0)), capture=False)
    a, b = torch.arange(6.0).view(3, 2), torch.ones(3, 2)
    first = runner(a)
    buffers = next(iter(runner.entries.values()))[0]
    second = runner(b)
    assert next(iter(runner.entries.values()))[0] is buffers  # the same fixed buffers, written again
    assert torch.equal(first[0], a * 2) and torch.equal(first[1], a.sum(dim=0))
    assert torch.equal(second[0], b * 2) and len(runner.entries) == 1
    runner(torch.ones(4, 2))
    assert len(runner.entries) == 2  # one per input shape


def jpeg_of(rgb: np.ndarray, quality: int = 90) -> bytes:
    return cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def test_torchvision_decodes_jpeg_like_opencv():
    rgb = photo("bus.jpg")
    data = jpeg_of(rgb)
    assert is_jpeg(data) and not is_jpeg(cv2.imencode(".png", rgb)[1].tobytes())
    tensor = decode_jpeg_tensor(data, "cpu", rgb.shape[1], rgb.shape[0])
    want = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert tensor.dtype == torch.uint8 and tuple(tensor.shape) == want.shape
    diff = np.abs(tensor.numpy().astype(int) - want.astype(int))
    assert diff.mean() < 0.5 and diff.max() <= 8  # two libjpeg builds: the same IDCT up to rounding
    for decode in (lambda: decode_jpeg_tensor(data, "cpu", 100, 50), lambda: decode_bytes(data, 100, 50)):
        with pytest.raises(ImageError, match="^decoded 810x1080, the header said 100x50$") as err:
            decode()
        assert err.value.reason == "decode"
    message = type("CompressedImage", (), {"data": data, "format": "jpeg"})()
    with pytest.raises(ImageError, match="^decoded 810x1080, the header said 810x1000$"):
        decode_compressed(message, 810, 1000)
    grey = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))[1].tobytes()
    assert tuple(decode_jpeg_tensor(grey, "cpu").shape) == (1080, 810, 3)  # a grey JPEG comes as RGB too
    with pytest.raises(ImageError, match="cannot decode JPEG") as err:
        decode_jpeg_tensor(data[: len(data) // 3] + b"\x00" * 16, "cpu")
    assert err.value.reason == "decode"


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    import os

    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    try:
        params = {"backbone": "tiny-random", "pretrained": "", "backend": "torch", "device": "cpu"}  # CPU-meant
        yield build_runtime(load_params(None, params))
    finally:
        if old is None:
            os.environ.pop("XDG_CACHE_HOME")
        else:
            os.environ["XDG_CACHE_HOME"] = old


def same_persons(a, b, atol: float = 1e-5) -> None:
    assert [p.track_id for p in a] == [p.track_id for p in b] and len(a) >= 1
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x.body_box, y.body_box)
        np.testing.assert_allclose(x.raw_scores, y.raw_scores, atol=atol)
        np.testing.assert_allclose(x.scores, y.scores, atol=atol)


def test_frames_load_from_arrays_bytes_and_tensors(runtime):
    """A JPEG's bytes, its decoded BGR array and an RGB tensor of the same pixels give the same result, on
    the host path and on the device path (here on CPU tensors)."""
    rgb = photo("zidane.jpg")
    data = jpeg_of(rgb, 95)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)  # BGR
    for device_crops in (False, True):
        pipeline = Pipeline(haar_or_skip()(), runtime, device_crops=device_crops)
        want = pipeline.process(decoded, color="bgr").persons
        from_bytes = pipeline.process(data).persons
        from_tensor = pipeline.process(torch.from_numpy(np.ascontiguousarray(decoded[:, :, ::-1]))).persons
        for got in (from_bytes, from_tensor):
            assert [p.body_box.tolist() for p in got] == [p.body_box.tolist() for p in want]
            for x, y in zip(got, want, strict=True):
                np.testing.assert_allclose(x.raw_scores, y.raw_scores, atol=1e-5)
        loaded = pipeline.load(data)
        assert (loaded.tensor is not None) is device_crops and loaded.shape == rgb.shape[:2]
        given = pipeline.load(torch.from_numpy(rgb))  # a tensor on the host path: its pixels, as an array
        assert (given.tensor is not None) is device_crops and np.array_equal(given.host(), rgb)
    # arrays on the device path cross as they came and are made RGB there: nothing per pixel on the host
    device = Pipeline(FixedPeople(), runtime, device_crops=True)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    for frame, color, want in (
        (decoded, "bgr", decoded[:, :, ::-1]),
        (rgb, "rgb", rgb),
        (grey, "bgr", np.repeat(grey[:, :, None], 3, axis=2)),
        (grey, "rgb", np.repeat(grey[:, :, None], 3, axis=2)),
    ):
        loaded = device.load(frame, color)
        assert loaded.rgb is None and np.array_equal(loaded.tensor.numpy(), want), (frame.ndim, color)
        assert np.array_equal(loaded.host(), want)
    for bad in (np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 3), np.float32), np.zeros((0, 4, 3), np.uint8)):
        with pytest.raises(Exception, match="frame must be"):
            device.load(bad)
    host = Pipeline(haar_or_skip()(), runtime)
    assert isinstance(host.decode(data), np.ndarray)  # CPU: OpenCV decodes, the frame stays on the host
    for bad in (
        torch.zeros((4, 4, 3), dtype=torch.float32),
        torch.zeros((4, 4), dtype=torch.uint8),
        torch.zeros((4, 4, 4), dtype=torch.uint8),
        torch.zeros((0, 4, 3), dtype=torch.uint8),
    ):
        with pytest.raises(Exception, match="uint8 \\[H, W, 3\\] RGB"):
            host.process(bad)
    # the pixel limit, as for arrays: checked on the shape (expanded views hold no memory)
    pixel = torch.zeros((1, 1, 3), dtype=torch.uint8)
    assert as_rgb_tensor(pixel) is pixel and as_rgb_tensor(pixel.expand(8192, 8192, 3)).shape[0] == 8192
    with pytest.raises(Exception, match="frame of 8193x8192 pixels is larger than the 67108864 allowed"):
        as_rgb_tensor(pixel.expand(8192, 8193, 3))
    with pytest.raises(Exception, match="frame of 1x67108865 pixels is larger"):  # tall and thin: H x W counts
        as_rgb_tensor(pixel.expand(8192 * 8192 + 1, 1, 3))
    with pytest.raises(ImageError, match="cannot decode"):
        host.process(b"\xff\xd8 not really a jpeg")


def test_streamed_frames_give_the_results_of_frames_one_by_one(runtime):
    frames = [photo("zidane.jpg"), photo("bus.jpg"), photo("zidane.jpg")]

    def fresh():
        return Pipeline(haar_or_skip()(max_side=1080), runtime, tracker=Tracker(runtime.labels.classes))

    one_by_one = fresh()
    want = [one_by_one.process(f, color="rgb").persons for f in frames]
    bgr = [np.ascontiguousarray(f[:, :, ::-1]) for f in frames]  # the order each streamed frame is read in
    streamed = list(fresh().stream(iter(bgr), color="bgr"))
    assert len(streamed) == 3
    for got, expected in zip(streamed, want, strict=True):
        same_persons(got.persons, expected)
        assert set(got.timings_ms) == {"load", "detect", "crops", "model", "track", "total"}
    assert list(fresh().stream([])) == []
    # a frame that cannot be loaded stops the stream after the frame before it has its result
    results, stream = [], fresh().stream([frames[0], np.zeros((4, 4, 4), np.uint8), frames[1]], color="rgb")
    with pytest.raises(Exception, match="H x W x 3"):
        for r in stream:
            results.append(r)
    assert len(results) == 1
    same_persons(results[0].persons, want[0])


# ---- on a CUDA GPU only (scripts/gpu_check.sh runs these) ----


@cuda_only
def test_cuda_graph_scorer_matches_the_cpu_scorer():
    model = tiny("mlper").eval()
    bank = build_text_bank(model).tensors
    cpu = TorchBackend(model).scorer(model.head(), bank)
    gpu = TorchBackend(copy.deepcopy(model), "cuda", "fp16", cuda_graphs=True)
    scorer = gpu.scorer(model.head(), bank)
    for persons in (1, 3, 8, 9):
        crops, index = shared_frame(model, persons, seed=persons)
        got = scorer(crops, index)
        assert got.is_cuda and got.shape == (persons, len(model.labels.classes))
        torch.testing.assert_close(got.cpu(), cpu(crops, index), atol=2e-2, rtol=0)
        on_device = scorer(torch.from_numpy(crops).cuda(), index)  # device crops: nothing uploaded
        torch.testing.assert_close(on_device, got, atol=0, rtol=0)
    assert len(scorer.runner.entries) == 4  # buckets 1, 4, 8, 16


@cuda_only
def test_nvjpeg_decodes_like_the_cpu():
    data = jpeg_of(photo("bus.jpg"))
    gpu, cpu = decode_jpeg_tensor(data, "cuda"), decode_jpeg_tensor(data, "cpu")
    assert gpu.is_cuda and gpu.shape == cpu.shape
    assert (gpu.cpu().int() - cpu.int()).abs().float().mean() < 1.0


@cuda_only
def test_yolo_graphs_detect_like_the_eager_model():
    from ros_fer.detection import YoloDetector
    from ros_fer.detection.yolo import decode_candidates, letterbox_geometry, pose_forward

    frame = torch.from_numpy(np.ascontiguousarray(photo("bus.jpg"))).cuda()
    eager = YoloDetector("yolo11n-pose.yaml", device="cuda", confidence=1e-4, max_det=20)
    graphs = YoloDetector("yolo11n-pose.yaml", device="cuda", confidence=1e-4, max_det=20, cuda_graphs=True)
    graphs.person.model.load_state_dict(eager.person.model.state_dict())
    eager.detect_tensor(frame)  # the fused fp16 copy on the device, then its scores: a threshold that 30 to
    # 1000 anchors pass, so the graph's candidates (not the fall-back on the whole output) decode the frame
    with torch.inference_mode():
        raw = pose_forward(eager._device_model, frame)
    scores = raw[0, 4:-51].float().max(dim=0).values.cpu().numpy()
    passing = {float(t): int((scores > t).sum()) for t in np.unique(scores)}
    eager.confidence = graphs.confidence = max(t for t, n in passing.items() if 30 <= n <= 1000)
    a, b = eager.detect_tensor(frame), graphs.detect_tensor(frame)
    assert len(graphs._graphs) == 1 and len(a.bodies) == len(b.bodies) > 0
    with torch.inference_mode():
        rows = graphs._candidates(frame).cpu().numpy()
    r, pad, _ = letterbox_geometry(*frame.shape[:2])
    assert decode_candidates(rows, graphs.confidence, 0.7, 20, r, pad, *frame.shape[:2]) is not None
    np.testing.assert_allclose(a.bodies, b.bodies, atol=1e-2)
    np.testing.assert_allclose(b.keypoints, a.keypoints, atol=1e-2)
    again = graphs.detect_tensor(frame)
    np.testing.assert_array_equal(again.bodies, b.bodies)


@cuda_only
def test_the_cuda_pipeline_keeps_the_frame_on_the_gpu(tmp_path):
    params = load_params(None, {"backbone": "tiny-random", "pretrained": "", "device": "cuda", "precision": "fp16"})
    pipeline = Pipeline(FixedPeople(), build_runtime(params))
    assert pipeline.device_crops and pipeline.runtime.backend.cuda_graphs  # cuda_graphs: auto
    done = pipeline.warm_up("640x480")  # the scorer's buckets and nvjpeg's first decode, before any frame
    assert done["jpeg"] and done["buckets"] and "nvjpeg" in Pipeline.describe_warm_up(done)
    data = jpeg_of(photo("bus.jpg"))
    assert isinstance(pipeline.decode(data), torch.Tensor) and pipeline.decode(data).is_cuda
    host = Pipeline(FixedPeople(), build_runtime({**params, "device": "cpu", "precision": "fp32"}))
    want = host.process(data).persons
    got = pipeline.process(data).persons
    assert len(got) == len(want) >= 1
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a.raw_scores, b.raw_scores, atol=0.03)
    streamed = list(pipeline.stream([data] * 3))
    assert len(streamed) == 3 and all(len(r.persons) == len(want) for r in streamed)
    # the crops were replayed from CUDA graphs (captured at the warm-up): the same as cut eagerly
    from ros_fer.crops import crop_tensor

    cuts = pipeline._crop_graphs.runners.values()
    assert any(graph is not None for runner in cuts for _, graph, _ in runner.entries.values())
    frame, size = pipeline.decode(data), pipeline.runtime.image_size
    boxes = np.array([[100, 200, 400, 500], [-50, 300, 250, 600], [0, 0, 810, 810]], np.float32)
    replayed = crop_tensor(frame, boxes, size, rows=4, graphs=pipeline._crop_graphs)
    assert torch.equal(replayed, crop_tensor(frame, boxes, size)) and replayed.is_cuda
    assert torch.equal(crop_tensor(frame, boxes, size, rows=4, graphs=pipeline._crop_graphs), replayed)


def test_capture_takes_only_device_tensors_and_a_failed_capture_runs_eagerly():
    """Host tensors never reach the capture branch (a graph of them would replay stale output): with
    `capture` on and CPU inputs, each call runs the function on the fixed buffers and returns its values."""
    from ros_fer.backends.graphs import ShapeGraphs

    runner = ShapeGraphs(lambda x: (x * 2 + 1,), capture=True)
    for value in (1.0, 5.0):
        (out,) = runner(torch.full((2, 3), value))
        assert torch.equal(out, torch.full((2, 3), value * 2 + 1))
    (entry,) = runner.entries.values()
    assert entry[1] is None and runner.failed == []  # eager, and nothing was attempted


def test_a_loaded_frame_waits_for_its_upload_before_coming_to_the_host():
    from ros_fer.pipeline import LoadedFrame

    order = []

    class Ready:  # the upload stream's event: host() must wait on it before reading the tensor
        def synchronize(self):
            order.append("waited")

    class Tensor:
        def cpu(self):
            order.append("read")
            return torch.zeros((2, 2, 3), dtype=torch.uint8)

    frame = LoadedFrame(None, Tensor(), Ready(), 0.0)
    assert frame.host().shape == (2, 2, 3) and order == ["waited", "read"]


def test_warm_up_prepares_every_person_bucket_before_the_first_frame():
    """With static shapes (what CUDA graphs replay; turned on here without a GPU), `warm_up` runs the scorer
    once per person bucket up to max_persons, in the crop shapes real frames give: frames of 1..max_persons
    people then find their entry ready (no new shape, so on CUDA no capture at a frame)."""
    over = {"backbone": "tiny-random", "pretrained": "", "device": "cpu", "backend": "torch", "max_persons": 6}
    params = load_params(None, over)
    runtime = build_runtime(params)
    assert Pipeline(FixedPeople(), runtime).warm_up("640x480") == {}  # nothing static: nothing to prepare
    runtime.backend.static = True
    pipeline = Pipeline(FixedPeople(), runtime, max_persons=6)
    done = pipeline.warm_up("640x480")
    assert done["buckets"] == [1, 2, 4, 8] and done["frame"] is None  # no CUDA detector graph on the CPU
    assert "person buckets [1, 2, 4, 8]" in Pipeline.describe_warm_up(done)
    entries = set(pipeline._scorer.runner.entries)
    assert len(entries) == 4
    rgb = photo("bus.jpg")
    # device crops (what the GPU frame cuts): their fixed buffers warmed too, per bucket at the frame's size
    device = Pipeline(FixedPeople(), runtime, max_persons=6, device_crops=True)
    assert device.warm_up(f"{rgb.shape[1]}x{rgb.shape[0]}")["buckets"] == [1, 2, 4, 8]
    cuts = {depth: set(runner.entries) for depth, runner in device._crop_graphs.runners.items()}
    assert sum(len(shapes) for shapes in cuts.values()) == 4
    for persons in range(1, 7):
        faces = [(40 + 120 * i, 400, 100 + 120 * i, 460) for i in range(persons)]
        bodies = [(20 + 120 * i, 380, 120 + 120 * i, 900) for i in range(persons)]
        for each in (pipeline, device):
            each.detector = FixedPeople(faces, bodies)
            assert len(each.process(rgb, "rgb").persons) == persons
        assert set(pipeline._scorer.runner.entries) == entries, persons  # every frame met a prepared shape
        assert set(device._scorer.runner.entries) == entries, persons
        assert {depth: set(runner.entries) for depth, runner in device._crop_graphs.runners.items()} == cuts
    # a YOLO detector with graphs (on the CPU they run eagerly): warmed at the frame size, also behind the
    # bench's known-box wrapper (which once hid the detector's graphs, so its first frame captured them)
    from ros_fer.bench import KnownBoxes
    from ros_fer.detection import Detections, YoloDetector

    yolo = YoloDetector("yolo11n-pose.yaml", device="cpu")
    yolo.cuda_graphs = True  # as on CUDA (CPU tensors are never captured: they run eagerly)
    for detector in (yolo, KnownBoxes(yolo, Detections())):
        assert Pipeline(detector, runtime, max_persons=1).warm_up("320x240")["frame"] == "320x240"
    with pytest.raises(ConfigError, match="warmup_frame must be WIDTHxHEIGHT"):
        Pipeline.from_params({**params, "warmup_frame": "640*480"})


@cuda_only
def test_numpy_frames_stream_through_the_pinned_ring_on_the_upload_stream(tmp_path):
    """Raw numpy frames (no JPEG) streamed back to back: each is uploaded through the backend's pinned buffers
    on the pipeline's upload stream while the previous frame computes; every frame's result equals the same
    frame processed alone (a buffer reused before its copy left would mix frames)."""
    params = load_params(None, {"backbone": "tiny-random", "pretrained": "", "device": "cuda", "precision": "fp32"})
    pipeline = Pipeline(FixedPeople(), build_runtime(params))
    assert pipeline.gpu_frame and pipeline._upload_stream is not None
    base = photo("bus.jpg")
    frames = [np.ascontiguousarray(np.roll(base, 97 * i, axis=1)) for i in range(6)]  # same shape, new pixels
    alone = [pipeline.process(f, "rgb").persons for f in frames]
    pipeline.reset()
    streamed = [r.persons for r in pipeline.stream(frames, "rgb")]
    pipeline.reset()  # the same frames as a camera's bgr8 images: their channels reversed on the device
    bgr = [r.persons for r in pipeline.stream([np.ascontiguousarray(f[:, :, ::-1]) for f in frames], "bgr")]
    assert len(streamed) == len(bgr) == len(frames)
    for want, got in [*zip(alone, streamed, strict=True), *zip(alone, bgr, strict=True)]:
        assert len(want) == len(got) >= 1
        for a, b in zip(want, got, strict=True):
            np.testing.assert_allclose(a.raw_scores, b.raw_scores, atol=1e-4)
    ring = pipeline.runtime.backend._pinned
    frame_key = (torch.uint8, tuple(base.shape))
    assert frame_key in ring._rings and all(slot[0].is_pinned() for slot in ring._rings[frame_key])
