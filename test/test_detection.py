"""Pose detection: faces from head keypoints (each case of the documented rule, by hand), the YOLO pose path
end to end with a random-weight yolo11n-pose, the offline fall-back, and one context encode per frame."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import person_result, photo, tiny

from ros_fer.backends import OnnxRuntimeBackend, TorchBackend, export_onnx
from ros_fer.crops import Person, associate, crop_batch, make_crops
from ros_fer.detection import Detections, OpenCVDetector, YoloDetector, create_detector
from ros_fer.detection.keypoints import (
    FACE_OUT_OF_FRAME,
    HEAD_NOT_VISIBLE,
    SEEN_FROM_BEHIND,
    face_from_keypoints,
)
from ros_fer.errors import ConfigError
from ros_fer.params import load_params
from ros_fer.pipeline import Pipeline

H, W = 480, 640
BODY = np.array([200, 100, 400, 470, 0.9], np.float32)


def keypoints(**points) -> np.ndarray:
    """17 COCO keypoints, all unseen (score 0) except the named ones: name=(x, y[, score])."""
    names = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder"]
    kp = np.zeros((17, 3), np.float32)
    for name, value in points.items():
        kp[names.index(name)] = (*value, 0.9) if len(value) == 2 else value
    return kp


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_frontal_face_from_eyes_nose_and_ears():
    kp = keypoints(
        nose=(300, 160), left_eye=(312, 148), right_eye=(288, 148), left_ear=(325, 152), right_ear=(275, 152)
    )
    face, why = face_from_keypoints(kp, BODY, H, W)
    assert why is None
    # By hand: ears 50 apart x 1.0 = 50; eyes 24 apart x 2.4 = 57.6; the larger wins. Centre x: mean of the
    # five head points = 300; eye line 148, centre 0.1 side below = 153.76.
    side, cy = 57.6, 148 + 0.1 * 57.6
    np.testing.assert_allclose(face[:4], [300 - side / 2, cy - side / 2, 300 + side / 2, cy + side / 2], atol=1e-3)
    assert face[4] == pytest.approx(0.9)


def test_profile_face_from_ear_and_nose():
    kp = keypoints(nose=(340, 160), right_eye=(330, 150, 0.8), right_ear=(300, 152, 0.7))
    face, why = face_from_keypoints(kp, BODY, H, W)
    assert why is None
    side = 1.5 * np.hypot(40, 8)  # ear to nose; no eye pair, no ear pair
    cx = (340 + 330 + 300) / 3
    cy = 150 + 0.1 * side  # the one eye gives the eye line
    np.testing.assert_allclose(face[:4], [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], atol=1e-3)
    assert face[4] == pytest.approx((0.9 + 0.8 + 0.7) / 3)


def test_seen_from_behind_and_hidden_heads_have_no_face():
    behind = keypoints(left_ear=(325, 152), right_ear=(275, 152), left_shoulder=(350, 220), right_shoulder=(250, 220))
    assert face_from_keypoints(behind, BODY, H, W) == (None, SEEN_FROM_BEHIND)
    hidden = keypoints(nose=(300, 160, 0.3), left_eye=(312, 148, 0.2), left_shoulder=(350, 220))
    assert face_from_keypoints(hidden, BODY, H, W) == (None, HEAD_NOT_VISIBLE)
    assert face_from_keypoints(hidden, BODY, H, W, min_score=0.1)[0] is not None  # the threshold is honoured


def test_partly_visible_head_sized_by_the_shoulders():
    kp = keypoints(nose=(300, 160), left_shoulder=(350, 230), right_shoulder=(250, 230))
    face, why = face_from_keypoints(kp, BODY, H, W)
    side = 0.45 * 100
    cy = 160 - 0.15 * side + 0.1 * side  # eye line above the nose, centre below the eye line
    np.testing.assert_allclose(face[:4], [300 - side / 2, cy - side / 2, 300 + side / 2, cy + side / 2], atol=1e-3)


def test_head_at_the_frame_edge():
    # Half a head inside the frame still counts; a head mostly outside it does not.
    inside = keypoints(nose=(10, 160), left_eye=(22, 148), right_eye=(-2, 148))
    face, why = face_from_keypoints(inside, BODY, H, W)
    assert why is None and face[0] < 0 < face[2]
    outside = keypoints(nose=(-15, 160), left_eye=(-3, 148), right_eye=(-27, 148))
    assert face_from_keypoints(outside, BODY, H, W) == (None, FACE_OUT_OF_FRAME)


def test_association_with_keypoints_and_a_face_model():
    frontal = keypoints(nose=(300, 160), left_eye=(312, 148), right_eye=(288, 148))
    behind = keypoints(left_ear=(525, 152), right_ear=(475, 152))
    bodies = np.array([BODY, [420, 100, 600, 470, 0.8]], np.float32)
    det = Detections(bodies=bodies, keypoints=np.stack([frontal, behind]))
    a, b = sorted(associate(det, H, W, 8), key=lambda p: p.body[0])
    assert a.face_source == "keypoints" and a.face_detected and a.notes == []
    assert a.keypoints is frontal or np.array_equal(a.keypoints, frontal)
    assert b.face is None and not b.face_detected and b.face_source == "estimated"
    assert b.notes == [f"{SEEN_FROM_BEHIND}: face estimated from body"]
    # A face model's face inside the first body refines the keypoint face.
    faces = np.array([[280, 130, 320, 175, 0.95]], np.float32)
    refined = associate(Detections(faces, det.bodies, keypoints=det.keypoints), H, W, 8)
    first = next(p for p in refined if p.body[0] == BODY[0])
    assert first.face_source == "detector" and first.face[0] == 280 and first.keypoints is not None


def random_pose(tmp_path=None) -> str:
    return "yolo11n-pose.yaml"  # ultralytics builds it with random weights, offline


def test_yolo_pose_zero_one_and_many_detections():
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), np.uint8)
    assert len(YoloDetector(random_pose(), confidence=1.0).detect(frame).bodies) == 0
    one = YoloDetector(random_pose(), confidence=1e-6, max_det=1).detect(frame)
    assert one.bodies.shape == (1, 5) and one.keypoints.shape == (1, 17, 3)
    many = YoloDetector(random_pose(), confidence=1e-6, max_det=20).detect(frame)
    assert many.bodies.shape == (20, 5) and many.keypoints.shape == (20, 17, 3)
    assert (many.bodies[:, 2] >= many.bodies[:, 0]).all() and many.bodies_detected
    persons = associate(many, 480, 640, 8)
    assert len(persons) == 8 and all(p.keypoints is not None for p in persons)
    assert {p.face_source for p in persons} <= {"keypoints", "estimated"}


def test_yolo_pose_pipeline_end_to_end_on_odd_and_empty_frames(tmp_path):
    params = load_params(
        None,
        {
            "backbone": "tiny-random",
            "pretrained": "",
            "detector": "yolo",
            "person_weights": random_pose(),
            "detector_confidence": 1e-6,
            "max_persons": 3,
        },
    )
    pipeline = Pipeline.from_params(params)
    assert pipeline.detector.name == "yolo-pose" and pipeline.warnings == []
    for shape in ((480, 640, 3), (37, 1001, 3), (1, 1, 3)):
        frame = np.random.default_rng(1).integers(0, 256, shape, np.uint8)
        result = pipeline.process(frame, "rgb")
        assert len(result.persons) <= 3
        for person in result.to_dict()["persons"]:
            assert len(person["keypoints"]) == 17 and all(len(k) == 3 for k in person["keypoints"])
            assert person["face_source"] in ("keypoints", "estimated")
    assert pipeline.process(np.zeros((480, 640, 3), np.uint8), "rgb").persons is not None


def test_yolo_onnx_runtime_matches_torch(tmp_path):
    from ultralytics import YOLO

    weights = tmp_path / "pose.pt"
    YOLO(random_pose()).save(str(weights))
    frame = np.random.default_rng(2).integers(0, 256, (640, 640, 3), np.uint8)
    by_torch = YoloDetector(str(weights), confidence=1e-6, max_det=5, runtime="torch").detect(frame)
    by_onnx = YoloDetector(str(weights), confidence=1e-6, max_det=5, runtime="onnx")
    assert list((tmp_path / "cache" / "ros_fer" / "yolo").glob("pose.*.640.dynamic.onnx"))  # exported, cached
    got = by_onnx.detect(frame)
    np.testing.assert_allclose(got.bodies, by_torch.bodies, atol=0.5)
    np.testing.assert_allclose(got.keypoints, by_torch.keypoints, atol=0.5)
    # a 640x480 frame runs at 640x480 (a dynamic input), as torch runs it: a square letterbox would move every
    # box of random weights, which answer in input coordinates
    frame = np.ascontiguousarray(cv2.resize(photo("zidane.jpg"), (640, 480))[:, :, ::-1])
    want = YoloDetector(str(weights), confidence=1e-6, max_det=5, runtime="torch").detect(frame)
    got = by_onnx.detect(frame)
    assert len(got.bodies) == len(want.bodies) == 5
    np.testing.assert_allclose(got.bodies, want.bodies, atol=0.5)
    np.testing.assert_allclose(got.keypoints, want.keypoints, atol=0.5)


def test_an_exported_yolo_leaves_torch_one_thread_and_the_process_its_own(tmp_path):
    """onnxruntime runs the network; torch's letterbox and NMS run on one thread (no OpenMP workers left
    spinning after them), seen from inside ultralytics' predict (its postprocess callback); torch's own
    network runs on the process's threads, and the process keeps its count either way, an export on an
    empty cache included."""
    import torch
    from ultralytics import YOLO

    weights = tmp_path / "pose.pt"
    YOLO(random_pose()).save(str(weights))
    frame = np.random.default_rng(2).integers(0, 256, (480, 640, 3), np.uint8)
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        for runtime, expected in (("onnx", 1), ("torch", 3)):
            # a face model keeps ultralytics' predict on the export (without one, this package's runner)
            detector = YoloDetector(str(weights), str(weights), confidence=1e-6, max_det=5, runtime=runtime)
            assert torch.get_num_threads() == 3  # ultralytics' export (an empty cache) set it to cores - 1
            seen: list[int] = []
            callback = lambda _, into=seen: into.append(torch.get_num_threads())  # noqa: E731
            detector.person.add_callback("on_predict_postprocess_end", callback)
            for _ in range(2):  # the first predict sets ultralytics' device up (and torch's threads with it)
                detector.detect(frame)
                assert torch.get_num_threads() == 3
            assert seen == [expected, expected], runtime
    finally:
        torch.set_num_threads(threads)


def test_yolo_openvino_runtime_matches_torch(tmp_path):
    """ultralytics' own OpenVINO export (fp32 IR, dynamic input), cached once per weights and size, finds what
    torch finds on a 640x480 frame: both letterbox it to 640x480, not to a 640x640 square (random weights
    answer in input coordinates, so a square letterbox would move every box)."""
    from ultralytics import YOLO

    weights = tmp_path / "pose.pt"
    YOLO(random_pose()).save(str(weights))
    frame = np.ascontiguousarray(cv2.resize(photo("zidane.jpg"), (640, 480))[:, :, ::-1])
    by_torch = YoloDetector(str(weights), confidence=1e-6, max_det=5, runtime="torch").detect(frame)
    by_openvino = YoloDetector(str(weights), confidence=1e-6, max_det=5, runtime="openvino", imgsz=640)
    exported = list((tmp_path / "cache" / "ros_fer" / "yolo").glob("pose.*.640.dynamic_openvino_model"))
    assert len(exported) == 1 and (exported[0] / "metadata.yaml").is_file()
    got = by_openvino.detect(frame)
    assert len(got.bodies) == len(by_torch.bodies) == 5
    np.testing.assert_allclose(got.bodies, by_torch.bodies, atol=0.5)
    np.testing.assert_allclose(got.keypoints, by_torch.keypoints, atol=0.5)
    YoloDetector(str(weights), runtime="openvino")  # the cached export is reused, not made again
    assert list((tmp_path / "cache" / "ros_fer" / "yolo").glob("*_openvino_model")) == exported


@pytest.mark.parametrize("runtime", ["openvino", "onnx"])
def test_the_pose_runner_finds_what_ultralytics_finds_on_the_same_export(tmp_path, runtime):
    """The CPU detector's own runners (OpenVINO: a static model per frame size taking uint8 RGB; onnxruntime:
    one session that does not spin; their own decoding) against ultralytics' predict over the same export: the
    same boxes and keypoints at sizes that need no letterbox, a resize, padding, or both, with every anchor a
    candidate (random weights score about alike: NMS must break ties as ultralytics does). OpenVINO: sizes
    beyond MAX_SHAPES drop the oldest compiled one."""
    from ultralytics import YOLO
    from ultralytics.data.augment import LetterBox

    from ros_fer.backends.openvino import shared_core
    from ros_fer.detection.pose_runners import MAX_SHAPES, OnnxPose, OpenVinoPose

    weights = tmp_path / "pose.pt"
    model = YOLO(random_pose())
    for module in model.model.modules():  # at random init the output hardly depends on the input (x 255
        if isinstance(module, torch.nn.BatchNorm2d):  # moves a keypoint 0.015 px); scaled up, 14 px
            module.weight.data.fill_(1.5)
    model.save(str(weights))
    detector = YoloDetector(str(weights), confidence=1e-6, max_det=5, runtime=runtime)
    if runtime == "openvino":
        assert isinstance(detector.runner, OpenVinoPose)
        assert detector.runner.core is shared_core()  # no Core of its own (each swaps the thread's signal stack)
    else:
        assert isinstance(detector.runner, OnnxPose)
        options = detector.runner.session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        assert options.intra_op_num_threads == torch.get_num_threads()
    pattern = "*_openvino_model" if runtime == "openvino" else "*.onnx"
    export = next((tmp_path / "cache" / "ros_fer" / "yolo").glob(pattern))
    by_ultralytics = YOLO(str(export), task="pose")
    shapes = [(480, 640), (720, 1280), (37, 1001), (500, 333), (1, 1)]
    for h, w in shapes:
        rgb = np.ascontiguousarray(cv2.resize(photo("zidane.jpg"), (w, h))[:, :, ::-1])
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        result = detector._predict(by_ultralytics, bgr, None)
        # the network's input as ultralytics makes it (letterbox, RGB, / 255, planar): the same raw output
        predictor = by_ultralytics.predictor
        theirs = predictor.model(predictor.preprocess([bgr]))
        theirs = np.asarray(theirs[0] if isinstance(theirs, (list, tuple)) else theirs)
        if runtime == "onnx":  # the network's input itself (OpenVINO makes it inside its graph)
            np.testing.assert_allclose(detector.runner.inputs(rgb)[0], predictor.preprocess([bgr]).numpy(), atol=1e-7)
        np.testing.assert_allclose(detector.runner.forward(rgb)[0], theirs, rtol=1e-3, atol=1e-3)
        # the letterboxed pixels themselves, against ultralytics' LetterBox of the BGR frame
        boxed = LetterBox((640, 640), auto=True, stride=32)(image=bgr)
        assert np.array_equal(detector.runner.letterbox(rgb)[0][0], boxed[:, :, ::-1])
        got = detector.detect(rgb)
        assert len(got.bodies) == 5 and got.keypoints.shape == (5, 17, 3)
        np.testing.assert_allclose(got.bodies, detector._boxes(result), atol=0.5)
        np.testing.assert_allclose(got.keypoints, result.keypoints.data.numpy(), atol=0.5)
        assert got.faces.shape == (0, 5) and got.bodies_detected
    if runtime == "openvino":
        assert len(detector.runner.requests) == MAX_SHAPES and (480, 640) not in detector.runner.requests


def test_a_face_model_or_a_non_pose_export_keeps_ultralytics_predict(tmp_path):
    from ultralytics import YOLO

    from ros_fer.detection.pose_runners import onnx_layout, pose_layout

    weights = tmp_path / "pose.pt"
    YOLO(random_pose()).save(str(weights))
    for runtime in ("openvino", "onnx"):
        with_faces = YoloDetector(str(weights), face_weights=str(weights), runtime=runtime)
        assert with_faces.runner is None and with_faces.face is not None
        assert with_faces.detect(np.zeros((64, 96, 3), np.uint8)).faces.shape[1] == 5
    # an ONNX export's metadata as ultralytics writes it (Python literals as text)
    written = {"task": "pose", "stride": "32", "names": "{0: 'person'}", "kpt_shape": "[17, 3]", "end2end": "False"}
    assert onnx_layout("x.onnx", written) == (32, 1)
    assert onnx_layout("x.onnx", {**written, "end2end": "True"}) is None
    assert onnx_layout("x.onnx", {**written, "task": "detect"}) is None
    assert onnx_layout("x.onnx", {**written, "names": "{0: 'a', 1: 'b'}"}) == (32, 2)
    with pytest.raises(ConfigError, match=r"x.onnx: cannot read"):
        onnx_layout("x.onnx", {**written, "names": "{0: [a"})
    folder = tmp_path / "export"
    folder.mkdir()
    meta = folder / "metadata.yaml"
    for text, expected in (
        ("task: pose\nstride: 32\nnames: {0: person}\nkpt_shape: [17, 3]\n", (32, 1)),
        ("task: pose\nend2end: true\nkpt_shape: [17, 3]\n", None),  # YOLO26's NMS-free head
        ("task: pose\nkpt_shape: [5, 3]\n", None),
        ("task: detect\nnames: {0: person}\n", None),
    ):
        meta.write_text(text)
        assert pose_layout(folder) == expected, text
    meta.write_text("task: [pose\n")
    with pytest.raises(ConfigError, match="metadata.yaml"):
        pose_layout(folder)


def test_auto_falls_back_to_haar_offline_with_one_line(tmp_path):
    detector = create_detector("auto", person_weights="yolo11n-pose.pt")  # not cached; YOLO_OFFLINE=1 here
    assert isinstance(detector, OpenCVDetector)
    assert len(detector.warnings) == 1 and "\n" not in detector.warnings[0]
    assert "offline" in detector.warnings[0] and "Haar" in detector.warnings[0]
    with pytest.raises(ConfigError, match=r"'yolo11n-pose.pt' are not cached and this machine is offline.*Fetch"):
        create_detector("yolo", person_weights="yolo11n-pose.pt")
    with pytest.raises(ConfigError, match=r"'/nowhere/pose.pt' not found.*person_weights"):
        create_detector("yolo", person_weights="/nowhere/pose.pt")


def test_infer_says_the_fallback_once(tmp_path):
    import ultralytics

    image = Path(ultralytics.__file__).parent / "assets" / "zidane.jpg"
    cmd = [str(Path(sys.executable).with_name("ros-fer")), "infer", str(image), str(image)]
    cmd += ["--set", "backbone=tiny-random", "--set", "pretrained="]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    warnings = [line for line in res.stderr.splitlines() if line.startswith("ros-fer: warning: detector auto:")]
    assert len(warnings) == 1 and "Haar" in warnings[0]
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(lines) == 2 and lines[0]["persons"]  # Haar still finds Ancelotti


def test_context_crop_is_cut_once_per_frame():
    rgb = np.random.default_rng(3).integers(0, 256, (H, W, 3), np.uint8)
    persons = [Person(face=np.array([10 + 70 * i, 10, 60 + 70 * i, 60, 1], np.float32), body=BODY) for i in range(8)]
    batch = crop_batch(rgb, persons, ("face", "body", "context"), 32)
    assert len(batch.images) == 17 and batch.index.shape == (8, 3)  # 2 per person + 1 context, not 24
    assert (batch.index[:, 2] == batch.index[0, 2]).all()
    dense = make_crops(rgb, persons, ("face", "body", "context"), 32)
    assert np.array_equal(dense, batch.images[batch.index])
    assert len(crop_batch(rgb, persons, ("face",), 32).images) == 8  # no context level: nothing shared


@pytest.mark.parametrize("config", ["mlper", "zeroshot"])
def test_shared_context_gives_the_same_scores(config, tmp_path):
    model = tiny(config).eval()
    size = model.backbone.image_size
    rng = np.random.default_rng(4)
    persons = 5
    own = rng.integers(0, 256, (persons, len(model.levels) - 1, size, size, 3), np.uint8)
    context = rng.integers(0, 256, (1, size, size, 3), np.uint8)
    dense = np.concatenate([own, np.repeat(context[None], persons, axis=0)], axis=1)  # [P, L, S, S, 3]
    shared_images = np.concatenate([own.reshape(-1, size, size, 3), context])
    index = np.concatenate(
        [
            np.arange(persons * (len(model.levels) - 1)).reshape(persons, -1),
            np.full((persons, 1), len(shared_images) - 1),
        ],
        axis=1,
    )
    assert len(shared_images) == 2 * persons + 1
    # Reference: the model's own forward on dense per-person crops (what training runs).
    x = torch.from_numpy(dense).permute(0, 1, 4, 2, 3).float() / 255
    mean = torch.tensor(model.backbone.mean).view(1, 1, 3, 1, 1)
    std = torch.tensor(model.backbone.std).view(1, 1, 3, 1, 1)
    reference = model.encode_image((x - mean) / std)
    onnx = OnnxRuntimeBackend(export_onnx(model, tmp_path / "m.onnx"))
    for backend in (TorchBackend(model), onnx):
        shared = backend.encode(shared_images, index)
        unshared = backend.encode(dense)
        for name in reference:
            assert torch.allclose(shared[name], unshared[name], atol=1e-5), (backend.name, name)
            assert torch.allclose(shared[name], reference[name], atol=1e-4), (backend.name, name)


def test_debug_image_draws_the_skeleton():
    from ros_fer.annotate import draw
    from ros_fer.pipeline import FrameResult

    kp = keypoints(nose=(300, 160), left_eye=(312, 148), right_eye=(288, 148), left_shoulder=(350, 240))
    kp[9] = (250, 400, 0.2)  # a wrist below keypoint_score: not drawn
    person = person_result(face_box=None, face_detected=False, body_box=BODY[:4], keypoints=kp)
    frame = np.zeros((H, W, 3), np.uint8)
    with_pose = draw(frame, FrameResult([person], ("sad", "happy"), W, H))
    without = draw(frame, FrameResult([person_result(face_box=None, body_box=BODY[:4])], ("sad", "happy"), W, H))
    assert (with_pose[160, 300] == 255).all() and (without[160, 300] == 0).all()  # the nose's white dot
    assert (with_pose[154, 306] != 0).any()  # the nose-eye limb
    assert (with_pose[400, 250] == 0).all()  # the unseen wrist


@pytest.mark.parametrize("size", [(480, 640), (360, 640), (720, 1280)])
@pytest.mark.parametrize("decoded", ["candidates", "every anchor"])
def test_pose_on_tensors_matches_ultralytics_predict(size, decoded):
    """The device path (letterbox, the pose module's forward and the best anchors on tensors, here CPU
    tensors; the score threshold and NMS on the host) against ultralytics' own predict on the same frame and
    model. `every anchor`: every candidate brought back is above the threshold (a crowd), so every anchor of
    the output comes back and is decoded instead."""
    import cv2
    import ultralytics

    from ros_fer.detection.yolo import (
        CANDIDATES,
        decode_candidates,
        detect_pose_tensor,
        letterbox_geometry,
        pose_candidates,
        pose_forward,
    )

    photo = cv2.imread(str(Path(ultralytics.__file__).parent / "assets" / "bus.jpg"))
    bgr = cv2.resize(photo, size[::-1], interpolation=cv2.INTER_AREA)
    frame = torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1]))
    detector = YoloDetector(random_pose(), runtime="torch", max_det=30)
    model = detector.person.model.eval()
    with torch.inference_mode():
        raw = pose_forward(model, frame)
    scores = raw[0, 4:-51].max(dim=0).values.numpy()  # each anchor's best class score
    # candidates: the highest threshold that 30 to 1000 anchors pass (random weights score ~1e-4, in many
    # ties); every anchor: a threshold hundreds of anchors pass, 16 candidates brought back
    passing = {float(t): int((scores > t).sum()) for t in np.unique(scores)}
    some = max(t for t, n in passing.items() if 30 <= n <= 1000)
    conf, k = (some, CANDIDATES) if decoded == "candidates" else (1e-4, 16)
    r, pad, _ = letterbox_geometry(*size)
    rows = pose_candidates(raw, k, len(raw[0]) - 4 - 51).numpy()
    assert (decode_candidates(rows, conf, 0.7, 30, r, pad, *size) is None) == (decoded == "every anchor")
    detector.confidence = conf
    want = detector.detect(bgr[:, :, ::-1])
    assert len(want.bodies) >= 3  # the random model finds something to compare
    bodies, kps = detect_pose_tensor(model, frame, conf, 0.7, 30, k=k)
    # 640 x 480: no resize; 640 x 360: padded to 384 (12 grey rows each side); 1280 x 720: halved, then padded
    assert bodies.shape == (len(want.bodies), 5) and kps.shape == (len(want.bodies), 17, 3)
    np.testing.assert_allclose(bodies, want.bodies, atol=1e-3)
    np.testing.assert_allclose(kps, want.keypoints, atol=1e-3)


def test_pipeline_on_the_device_path_matches_the_host_path(tmp_path):
    """The device path of the pipeline (frame uploaded once, pose detection and crops on tensors), run here
    on CPU tensors, against the host path (ultralytics' predict, OpenCV crops) on the same frame."""
    import cv2
    import ultralytics

    from ros_fer.runtime import build_runtime

    frame = cv2.resize(cv2.imread(str(Path(ultralytics.__file__).parent / "assets" / "bus.jpg")), (640, 480))
    params = {"backbone": "tiny-random", "pretrained": "", "backend": "torch", "device": "cpu"}  # CPU-meant
    runtime = build_runtime(load_params(None, params))
    detector = YoloDetector(random_pose(), confidence=1e-4, runtime="torch", max_det=5)
    results = {}
    for device_path in (False, True):
        pipeline = Pipeline(detector, runtime, device_crops=device_path)
        results[device_path] = pipeline.process(frame).persons
        assert pipeline.detected_on == ("device" if device_path else "host")
    assert len(results[True]) == len(results[False]) == 5
    # Persons are ranked by face area x score: random weights give near-ties that float rounding (faces worked
    # out on tensors on the device path) may order either way, so each person is matched by its body box.
    for a in results[True]:
        b = min(results[False], key=lambda p: np.abs(p.body_box - a.body_box).sum())  # noqa: B023
        np.testing.assert_allclose(a.body_box, b.body_box, atol=1e-3)
        np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-3)
        assert a.face_source == b.face_source
        np.testing.assert_allclose(a.raw_scores, b.raw_scores, atol=0.02)
    assert detector.detect_tensor(torch.zeros((48, 64, 3), dtype=torch.uint8)).bodies.shape[1] == 5
    assert (
        YoloDetector(random_pose(), runtime="onnx").detect_tensor(torch.zeros((48, 64, 3), dtype=torch.uint8)) is None
    )
