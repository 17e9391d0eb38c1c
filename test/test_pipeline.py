"""The frame pipeline on real photographs shipped inside PyPI packages (ultralytics' bus.jpg, zidane.jpg)."""

import cv2
import numpy as np
import pytest
from conftest import photo

from ros_fer.crops import Person, associate, context_crop, crop_square, make_crops
from ros_fer.detection import Detections, OpenCVDetector, box_iou, create_detector
from ros_fer.errors import ConfigError, InputShapeError, WeightsUnavailableError
from ros_fer.params import load_params
from ros_fer.pipeline import Pipeline, as_rgb
from ros_fer.tracking import UNKNOWN, UNTRACKED, Tracker

# Face boxes (x1 y1 x2 y2) in the full-resolution photographs, checked by eye: drawn on the photographs, each
# frames one face (eyes, nose and mouth inside): the two passengers in front of the bus, and Ancelotti.
BUS_FACES = np.array([[114, 417, 164, 467], [261, 420, 320, 479]], np.float32)
ANCELOTTI = np.array([[922, 110, 1070, 258]], np.float32)


def tiny_params(tmp_path, **over):
    return load_params(None, {"backbone": "tiny-random", "pretrained": "", "backend": "torch", **over})


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_faces_found_in_real_photographs():
    zidane = OpenCVDetector().detect(photo("zidane.jpg"))
    assert box_iou(ANCELOTTI, zidane.faces).max() > 0.6
    bus = OpenCVDetector(max_side=1080).detect(photo("bus.jpg"))  # small faces need full resolution
    assert (box_iou(BUS_FACES, bus.faces).max(axis=1) > 0.6).all()
    assert not bus.bodies_detected and len(bus.bodies) == 0


def test_crops_are_well_formed():
    rgb = photo("zidane.jpg")
    box = np.array([100, 50, 228, 178], np.float32)  # inside the frame, 128 px -> 64 px
    crop = crop_square(rgb, box, 64)
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    expected = cv2.resize(rgb[50:178, 100:228], (64, 64), interpolation=cv2.INTER_AREA)
    assert np.abs(crop.astype(int) - expected.astype(int)).mean() < 2
    outside = crop_square(rgb, np.array([-64, -64, 64, 64], np.float32), 64)
    assert (outside[:30, :30] == 0).all() and outside[40:, 40:].any()  # padded with black, not stretched
    ctx = context_crop(rgb, 64)  # 1280x720 letterboxed: black bands top and bottom
    assert (ctx[:10] == 0).all() and ctx[32].any()
    persons = associate(Detections(faces=np.array([[922, 110, 1070, 258, 0.9]], np.float32)), 720, 1280, 8)
    crops = make_crops(rgb, persons, ("face", "body", "context"), 64)
    assert crops.shape == (1, 3, 64, 64, 3) and (crops[0, 2] == ctx).all()


def test_association_and_degradation():
    faces = np.array([[100, 100, 140, 140, 0.9], [500, 100, 540, 140, 0.8]], np.float32)
    bodies = np.array([[60, 80, 180, 500, 0.9], [800, 100, 900, 450, 0.7]], np.float32)
    persons = associate(Detections(faces=faces, bodies=bodies), 600, 1000, 8)
    by_face = {None if p.face is None else int(p.face[0]): p for p in persons}
    assert by_face[100].body_detected and by_face[100].body[0] == 60
    assert not by_face[500].body_detected and "body derived from face" in by_face[500].notes[0]
    assert not by_face[None].face_detected and "face estimated from body" in by_face[None].notes[0]
    assert len(associate(Detections(faces=faces, bodies=bodies), 600, 1000, 1)) == 1


def test_pipeline_results_on_photographs(tmp_path):
    pipeline = Pipeline.from_params(tiny_params(tmp_path, detector_max_side=1080))
    result = pipeline.process(photo("bus.jpg"), color="rgb")
    assert result.width == 810 and result.height == 1080 and len(result.persons) == 2
    for person in result.persons:
        assert person.scores.shape == (7,) and abs(person.scores.sum() - 1) < 1e-4
        assert person.label in pipeline.labels or person.label == UNKNOWN
        assert box_iou(person.face_box[None], BUS_FACES).max() > 0.6
        assert -1 <= person.valence <= 1 and -1 <= person.arousal <= 1
    assert set(result.timings_ms) == {"load", "detect", "crops", "model", "track", "total"}
    ids = [sorted(p.track_id for p in pipeline.process(photo("bus.jpg"), "rgb").persons) for _ in range(3)]
    assert ids[0] == ids[1] == ids[2] and UNTRACKED not in ids[0]  # stable ids across frames
    assert result.to_dict()["persons"][0]["scores"]


def test_pipeline_with_onnxruntime_matches_torch(tmp_path):
    frame = photo("zidane.jpg")
    results = {}
    for backend in ("torch", "onnxruntime"):
        # fp32 on both: precision auto would pick int8 for onnxruntime on the CPU
        pipeline = Pipeline.from_params(tiny_params(tmp_path, backend=backend, smoothing=0.0, precision="fp32"))
        results[backend] = pipeline.process(frame, "rgb").persons
    assert len(results["torch"]) == len(results["onnxruntime"]) >= 1
    for a, b in zip(results["torch"], results["onnxruntime"], strict=True):
        assert np.abs(a.raw_scores - b.raw_scores).max() < 1e-4


def test_empty_and_bad_frames(tmp_path):
    pipeline = Pipeline.from_params(tiny_params(tmp_path))
    assert pipeline.process(np.zeros((480, 640, 3), np.uint8)).persons == []
    grey = cv2.cvtColor(photo("zidane.jpg"), cv2.COLOR_RGB2GRAY)
    assert pipeline.process(grey).width == 1280
    for bad, message in (
        (np.zeros((4, 4, 3), np.float32), "uint8"),
        (np.zeros((4, 4, 4), np.uint8), "H x W x 3"),
        (np.zeros((0, 4, 3), np.uint8), "H x W x 3"),
    ):
        with pytest.raises(InputShapeError, match=message):
            as_rgb(bad, "rgb")


def test_offline_start_names_the_missing_weights(tmp_path):
    params = load_params(None, {"backbone": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"})
    with pytest.raises(WeightsUnavailableError, match="give a local weight file instead of the pretrained tag"):
        Pipeline.from_params(params)


def test_tracker_smoothing_hysteresis_and_unknown():
    tracker = Tracker(("a", "b", "c"), smoothing=0.5, hysteresis=0.1, unknown_threshold=0.4)
    box = np.array([[100, 100, 200, 400, 0.9]], np.float32)
    first = tracker.update(box, np.array([[0.7, 0.2, 0.1]]))[0]
    assert first.label == "a" and first.track_id == 1
    # 0.5*0.7 + 0.5*0.2 = 0.45 for a, 0.5*0.2 + 0.5*0.75 = 0.475 for b: b leads by 0.025 < 0.1, a stays.
    second = tracker.update(box, np.array([[0.2, 0.75, 0.05]]))[0]
    assert np.allclose(second.scores, [0.45, 0.475, 0.075]) and second.label == "a"
    third = tracker.update(box, np.array([[0.0, 0.95, 0.05]]))[0]  # a 0.225, b 0.7125: switch
    assert third.label == "b" and third.track_id == 1
    flat = Tracker(("a", "b", "c"), smoothing=0.0, unknown_threshold=0.4)
    assert flat.update(box, np.array([[0.35, 0.33, 0.32]]))[0].label == UNKNOWN


def test_yolo_detector_builds_offline_and_runs(tmp_path):
    detector = create_detector("yolo", "cpu", person_weights="yolo11n.yaml", confidence=0.01)  # untrained, offline
    det = detector.detect(photo("bus.jpg"))
    assert det.bodies.ndim == 2 and det.bodies.shape[1] == 5 and det.bodies_detected
    with pytest.raises(ConfigError, match="YOLO weights 'yolo11n.pt' are not cached and this machine is offline"):
        create_detector("yolo", "cpu", person_weights="yolo11n.pt")
    assert isinstance(create_detector("auto", "cpu", person_weights="x.pt"), OpenCVDetector)  # no such weights


def test_person_priority_prefers_close_faces():
    near = Person(face=np.array([0, 0, 100, 100, 0.9], np.float32), body=np.zeros(5, np.float32))
    far = Person(face=np.array([0, 0, 20, 20, 0.9], np.float32), body=np.zeros(5, np.float32))
    assert near.priority > far.priority


def test_default_zero_shot_scores_are_open_clips_own(tmp_path):
    """The node's default scoring (zero-shot, each level's crop against that level's prompts), checked against
    open_clip's own encode_image / encode_text and tokenizer on the same random model, with the prompts written
    out from the YAML files by hand: no Head, TextBank or ImageSide code on this side."""
    import open_clip
    import torch
    import yaml

    from ros_fer.crops import crop_batch
    from ros_fer.paths import config_dir
    from ros_fer.runtime import build_runtime

    params = tiny_params(tmp_path)
    assert params["model"] == "zeroshot"  # the shipped default
    runtime = build_runtime(params)
    pipeline = Pipeline(OpenCVDetector(), runtime)
    rgb = photo("zidane.jpg")
    faces = np.array([[922, 110, 1070, 258, 0.9], [300, 200, 380, 280, 0.8]], np.float32)
    persons = associate(Detections(faces=faces), 720, 1280, 8)
    crops = crop_batch(rgb, persons, runtime.levels, runtime.image_size)
    probs = pipeline.scores(crops)

    clip = runtime.backend.side.model.clip  # open_clip's CLIP module, its own methods below
    emotions = yaml.safe_load((config_dir() / "labels.yaml").read_text())["emotions"]
    prompts = yaml.safe_load((config_dir() / "prompts" / "mlper.yaml").read_text())
    classes = ["surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"]  # basic7
    tokenizer = open_clip.get_tokenizer("tiny-random")
    mean = torch.tensor(clip.visual.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(clip.visual.image_std).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = 0
        for j, level in enumerate(("face", "body", "context")):
            texts = [
                prompts["level_templates"][level].format(
                    adjective=emotions[c]["adjective"], **{level: prompts["classes"][c][level]}
                )
                for c in classes
            ]
            text = clip.encode_text(tokenizer(texts))
            images = torch.from_numpy(crops.dense()[:, j]).permute(0, 3, 1, 2).float() / 255
            image = clip.encode_image((images - mean) / std)
            text, image = text / text.norm(dim=-1, keepdim=True), image / image.norm(dim=-1, keepdim=True)
            logits = logits + clip.logit_scale.exp() * image @ text.T / 3
        expected = logits.softmax(dim=-1).numpy()
    assert probs.shape == (2, 7)
    np.testing.assert_allclose(probs, expected, atol=1e-4)


def test_json_of_a_frame_written_out_by_hand():
    """What `ros-fer infer` prints per frame: every key, its rounding, and None for what is absent."""
    import json

    from conftest import person_result

    from ros_fer.pipeline import FrameResult

    kp = np.zeros((17, 3), np.float32)
    kp[0] = [12.345, 67.891, 0.98765]
    full = person_result(
        track_id=4,
        label="sad",
        confidence=0.123456,
        scores=np.array([0.654321, 0.345679]),
        face_box=np.array([1.26, 2.34, 3.35, 4.44]),
        body_box=np.array([0.04, 10.96, 100.55, 200.0]),
        face_detected=False,
        body_detected=False,
        notes=["body derived from face"],
        valence=-0.123456,
        arousal=0.5,
        keypoints=kp,
        face_source="keypoints",
    )
    bare = person_result(face_box=None, face_source="estimated")  # no face, no pose, no valence/arousal
    frame = FrameResult([full, bare], ("sad", "happy"), 640, 480, {"detect": 1.23456, "total": 10.0})
    out = json.loads(json.dumps(frame.to_dict()))
    assert out["width"] == 640 and out["height"] == 480 and out["labels"] == ["sad", "happy"]
    assert out["timings_ms"] == {"detect": 1.23, "total": 10.0}
    assert out["persons"][0] == {
        "track_id": 4,
        "label": "sad",
        "confidence": 0.1235,
        "scores": [0.6543, 0.3457],
        "face_box": [1.3, 2.3, 3.4, 4.4],
        "body_box": [0.0, 11.0, 100.5, 200.0],
        "face_detected": False,
        "face_source": "keypoints",
        "body_detected": False,
        "keypoints": [[12.3, 67.9, 0.988]] + [[0.0, 0.0, 0.0]] * 16,
        "notes": ["body derived from face"],
        "valence": -0.1235,
        "arousal": 0.5,
    }
    second = out["persons"][1]
    assert second["face_box"] is None and second["keypoints"] is None and second["face_source"] == "estimated"
    assert second["valence"] is None and second["arousal"] is None  # NaN: no mapping
    assert second["scores"] == [0.2, 0.8] and second["confidence"] == 0.8 and second["track_id"] == 1


def test_frames_are_checked_and_turned_to_rgb_by_hand():
    from ros_fer.pipeline import MAX_PIXELS

    bgr = np.zeros((2, 3, 3), np.uint8)
    bgr[..., 0] = 255  # blue
    assert as_rgb(bgr, "bgr")[0, 0].tolist() == [0, 0, 255] and as_rgb(bgr, "rgb")[0, 0].tolist() == [255, 0, 0]
    assert as_rgb(np.full((2, 3), 7, np.uint8), "bgr").shape == (2, 3, 3)
    with pytest.raises(InputShapeError) as info:
        as_rgb(np.zeros((2, 3, 3), np.float32), "bgr")
    assert str(info.value) == "frame must be a uint8 numpy array, got float32"
    with pytest.raises(InputShapeError) as info:
        as_rgb([[1, 2]], "bgr")
    assert str(info.value) == "frame must be a uint8 numpy array, got <class 'list'>"
    for shape in ((2, 3, 4), (0, 3, 3), (2, 0, 3), (2, 3, 3, 1)):
        with pytest.raises(InputShapeError, match=r"frame must be H x W x 3 \(or H x W\), got"):
            as_rgb(np.zeros(shape, np.uint8), "bgr")
    side = int(MAX_PIXELS**0.5)
    tall = np.lib.stride_tricks.as_strided(np.zeros(3, np.uint8), (side + 1, side, 3), (0, 0, 1))
    with pytest.raises(InputShapeError) as info:
        as_rgb(tall, "bgr")
    assert str(info.value) == f"frame of {side}x{side + 1} pixels is larger than the {MAX_PIXELS} allowed"
    at_limit = np.lib.stride_tricks.as_strided(np.zeros(3, np.uint8), (side, side, 3), (0, 0, 1))
    assert as_rgb(at_limit, "rgb").shape == (side, side, 3)  # exactly the limit: accepted
    assert as_rgb(np.full((1, 1, 3), 9, np.uint8), "bgr").tolist() == [[[9, 9, 9]]]  # one pixel is a frame
    assert as_rgb(np.full((1, 1), 9, np.uint8), "bgr").shape == (1, 1, 3)
    # RGB that came as a view (channels reversed in place): one contiguous copy, so that OpenCV downstream
    # (the detector, every crop) does not copy the whole frame again each time
    view = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)[..., ::-1]
    got = as_rgb(view, "rgb")
    assert got.flags.c_contiguous and got.tolist() == view.tolist()


def test_pipeline_parameters_reach_their_parts_and_untracked_results(tmp_path):
    import time

    params = tiny_params(
        tmp_path,
        max_persons=1,
        keypoint_score=0.7,
        smoothing=0.3,
        hysteresis=0.2,
        unknown_threshold=0.25,
        track_buffer=7,
        valence_arousal=False,
        detector="opencv",
        detector_max_side=1080,
    )
    pipeline = Pipeline.from_params(params)
    assert pipeline.max_persons == 1 and pipeline.keypoint_score == 0.7 and pipeline.valence is None
    t = pipeline.tracker
    assert (t.alpha, t.hysteresis, t.threshold, t.buffer) == (0.3, 0.2, 0.25, 7)
    assert isinstance(pipeline.detector, OpenCVDetector)
    frame = photo("bus.jpg")
    start = time.perf_counter()
    result = pipeline.process(frame, color="rgb")
    elapsed = (time.perf_counter() - start) * 1e3
    assert len(result.persons) == 1 and np.isnan(result.persons[0].valence)  # max_persons, no mapping
    stages = result.timings_ms
    assert abs(sum(stages[k] for k in ("load", "detect", "crops", "model", "track")) - stages["total"]) < 1e-6
    assert 0.5 * elapsed <= stages["total"] <= elapsed  # milliseconds, of this very call
    # without a tracker: this frame's own probabilities, its best class, no track
    untracked = Pipeline(pipeline.detector, pipeline.runtime, max_persons=2, tracker=None)
    people = untracked.process(frame, color="rgb").persons
    assert len(people) == 2
    for p in people:
        best = int(np.argmax(p.raw_scores))
        assert p.track_id == -1 and p.label == untracked.labels[best] and p.confidence == p.raw_scores[best]
        assert p.scores is p.raw_scores and len(p.face_box) == 4 and len(p.body_box) == 4
        assert (
            p.face_detected is True
            and p.body_detected is False
            and p.notes == ["body derived from face (no body detector)"]
        )
        assert -1 <= p.valence <= 1  # valence_arousal defaults to on


def test_pipeline_says_its_parts_warnings():
    class Warned(OpenCVDetector):
        warnings = ["detector: a line"]

    from ros_fer.labels import load_label_set
    from ros_fer.runtime import Runtime

    runtime = Runtime(
        backend=type("B", (), {"name": "onnxruntime", "device": "cpu"})(),
        head=None,
        text={},
        labels=load_label_set("basic7"),
        levels=("face",),
        image_size=32,
        description="",
        warnings=["runtime: a line"],
    )
    pipeline = Pipeline(Warned(), runtime)
    assert pipeline.warnings == ["runtime: a line", "detector: a line"] and pipeline.device_crops is False
    with pytest.raises(ConfigError, match="device crops need the torch backend, not onnxruntime"):
        Pipeline(Warned(), runtime, device_crops=True)


def test_colour_order_and_tracks_across_frames(tmp_path):
    pipeline = Pipeline.from_params(tiny_params(tmp_path, detector="opencv"))
    rgb = photo("zidane.jpg")
    first = pipeline.process(rgb[:, :, ::-1].copy(), color="bgr").persons  # the same frame, given as BGR
    pipeline.reset()
    same = pipeline.process(rgb, color="rgb").persons
    assert len(first) == len(same) >= 1
    np.testing.assert_allclose(first[0].raw_scores, same[0].raw_scores, atol=1e-6)
    later = pipeline.process(rgb, color="rgb").persons  # the tracker follows the person to the next frame
    assert later[0].track_id == same[0].track_id >= 1
    swapped = pipeline.process(rgb[:, :, ::-1].copy(), color="rgb").persons  # wrong order: other scores
    assert np.abs(swapped[0].raw_scores - same[0].raw_scores).max() > 1e-4


def test_retune_applies_the_runtime_parameters_from_the_next_frame(tmp_path):
    """What `ros2 param set` changes on a running node (params.RUNTIME) reaches the parts without a reload:
    the same pipeline, the same tracks, new settings on the next frame."""
    from ros_fer.detection.yolo import YoloDetector
    from ros_fer.params import RUNTIME

    pipeline = Pipeline.from_params(tiny_params(tmp_path, detector="opencv", detector_max_side=1080, max_persons=2))
    frame = photo("bus.jpg")
    before = pipeline.process(frame, color="rgb").persons
    assert len(before) == 2 and all(np.isfinite(p.valence) for p in before)
    runtime, tracker = pipeline.runtime, pipeline.tracker
    new = tiny_params(
        tmp_path,
        detector="opencv",
        max_persons=1,
        keypoint_score=0.9,
        smoothing=0.1,
        hysteresis=0.3,
        unknown_threshold=1.01,
        valence_arousal=False,
        detector_confidence=0.66,
    )
    assert {"max_persons", "keypoint_score", "smoothing", "valence_arousal", "detector_confidence"} <= set(RUNTIME)
    pipeline.retune(new)
    assert pipeline.runtime is runtime and pipeline.tracker is tracker  # nothing rebuilt
    assert (tracker.alpha, tracker.hysteresis, tracker.threshold) == (0.1, 0.3, 1.01)
    assert pipeline.max_persons == 1 and pipeline.keypoint_score == 0.9
    after = pipeline.process(frame, color="rgb").persons
    assert len(after) == 1 and after[0].label == "unknown" and np.isnan(after[0].valence)
    assert after[0].track_id == before[0].track_id  # the same track, kept across the retune
    pipeline.retune({**new, "valence_arousal": True, "unknown_threshold": 0.0})
    emotions = runtime.labels.emotions
    again = pipeline.process(frame, color="rgb").persons[0]
    assert again.label != "unknown"
    assert again.valence == pytest.approx(float(again.scores @ [e.valence for e in emotions]), abs=1e-5)
    assert again.arousal == pytest.approx(float(again.scores @ [e.arousal for e in emotions]), abs=1e-5)
    # the YOLO detector's score threshold follows detector_confidence (Haar has none to set)
    yolo = YoloDetector("yolo11n-pose.yaml", "", "cpu", 0.4, runtime="torch")
    with_yolo = Pipeline(yolo, runtime, tracker=None)
    with_yolo.retune(new)
    assert yolo.confidence == 0.66 and with_yolo.tracker is None


def test_tracks_are_assigned_while_the_scores_are_computed(tmp_path):
    """ByteTrack needs the boxes only: `submit` assigns the tracks before anything waits for the scores, and
    `result` then only smooths. The results are those of `Tracker.update` fed the same boxes and scores."""
    from conftest import FixedPeople

    from ros_fer.runtime import build_runtime

    runtime = build_runtime(tiny_params(tmp_path, device="cpu"))
    faces, bodies = [(40, 400, 100, 460), (300, 400, 360, 460)], [(20, 380, 120, 900), (280, 380, 380, 900)]
    pipeline = Pipeline(FixedPeople(faces, bodies), runtime, tracker=Tracker(runtime.labels.classes))
    reference = Tracker(runtime.labels.classes)
    events = []
    scored = pipeline.probabilities

    class Scores:  # the scores as the device hands them back: reading them is the wait
        def __init__(self, probs):
            self.probs = probs

        def cpu(self):
            events.append("scores read")
            return self.probs

    pipeline.probabilities = lambda crops: Scores(scored(crops))
    assign = pipeline.tracker.assign
    pipeline.tracker.assign = lambda boxes: events.append("tracks assigned") or assign(boxes)
    rgb = photo("bus.jpg")
    for frame in range(3):
        pending = pipeline.submit(pipeline.load(rgb, "rgb"))
        assert events[-1] == "tracks assigned"  # before the scores were read
        result = pending.result()
        assert events[-2:] == ["tracks assigned", "scores read"]
        boxes = np.stack([p.body for p in pending.persons])
        want = reference.update(boxes, np.stack([p.raw_scores for p in result.persons]))
        assert [p.track_id for p in result.persons] == [w.track_id for w in want]
        np.testing.assert_allclose([p.scores for p in result.persons], [w.scores for w in want], rtol=1e-6)
        assert frame == 0 or all(p.track_id != UNTRACKED for p in result.persons)  # confirmed from frame 2


DENORMAL_CHECK = r"""
import threading

import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper


def through_onnxruntime():  # a session made now: its Mul runs on this thread
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "one"], ["y"])],
        "times_one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return float(session.run(None, {"x": np.array([1e-39], np.float32)})[0][0])


tiny = torch.tensor([1e-39])  # a denormal in fp32
before = [float(tiny * 1.0), through_onnxruntime()]
from ros_fer.params import load_params
from ros_fer.pipeline import Pipeline

Pipeline.from_params(load_params(None, {"backbone": "tiny-random", "pretrained": "", "backend": "torch"}))
later = []
thread = threading.Thread(target=lambda: later.append(float(tiny * 1.0)))
thread.start()
thread.join()
print((before, [float(tiny * 1.0), later[0], through_onnxruntime()]))
"""


def test_a_pipeline_reads_denormals_as_zero_on_its_thread_and_those_started_after():
    """Built, a pipeline has this thread (and threads started after it, and onnxruntime on it) read a
    denormal float as zero (FTZ/DAZ: `machine.flush_denormals`); before, 1e-39 stays 1e-39. A fresh process:
    the mode is per thread, and what ran before in this one may have set it."""
    import ast
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", DENORMAL_CHECK], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    before, after = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    assert before == pytest.approx([1e-39, 1e-39], rel=1e-3), before
    assert after == [0.0, 0.0, 0.0], after
