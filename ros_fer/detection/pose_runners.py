"""YOLO pose on OpenVINO and onnxruntime without ultralytics' predictor: ultralytics' own exports (cached by
`yolo.cached_export`, both with a dynamic input), run on the letterboxed frame at its own size and decoded by
the same rule as the device path (`yolo.decode_candidates`: ultralytics' score threshold, per-class NMS and
letterbox undone).

- OpenVINO: compiled once per letterboxed frame size as a static model that takes the frame's uint8 RGB pixels
  itself (OpenVINO's pre-processing: to float, / 255, to planar, inside the graph). Measured on machine B
  (Intel Xeon, AMX, 2 cores), YOLO11n-pose at 640x480: ultralytics' predict over its dynamic-shape model
  29-30 ms, of which the network ran 25 ms (27.2 ms dynamic against 24.0 static, interleaved) and its host
  letterbox, float conversion and post-processing ~4 ms.
- onnxruntime: one session whose threads sleep after each run (`session.intra_op.allow_spinning` 0).
  ultralytics' own session spins them on: on machine A (AMD EPYC, 2 cores) torch's detection right after it
  took 134 ms against 85 ms after the encoder, and the probe's figure for whichever runtime it timed next
  was inflated."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np
import yaml

from ..errors import ConfigError

MAX_SHAPES = 4  # compiled frame sizes kept (a camera has one; a batch of files of many sizes recompiles)


def layout_of(meta) -> tuple[int, int] | None:
    """(stride, classes) of an ultralytics pose export from its metadata (a dict), None for what these
    runners do not decode (another task, an end-to-end head, keypoints other than COCO's 17 x (x, y, v))."""
    if not isinstance(meta, dict) or meta.get("task") != "pose" or meta.get("end2end"):
        return None
    if list(meta.get("kpt_shape") or [17, 3]) != [17, 3]:
        return None
    return int(meta.get("stride", 32)), len(meta.get("names") or {0: "person"})


def pose_layout(folder: str | Path) -> tuple[int, int] | None:
    """`layout_of` an ultralytics OpenVINO export folder's metadata.yaml."""
    meta_path = Path(folder) / "metadata.yaml"
    try:
        meta = yaml.safe_load(meta_path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{meta_path}: cannot read the export's metadata ({exc})") from exc
    return layout_of(meta)


def onnx_layout(path: str | Path, custom: dict[str, str]) -> tuple[int, int] | None:
    """`layout_of` an ultralytics ONNX export's metadata (the model's custom metadata: each value a Python
    literal as text, `{0: 'person'}`, `[17, 3]`, `False`, which YAML reads alike)."""
    try:
        meta = {k: yaml.safe_load(v) for k, v in custom.items()}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: cannot read the export's metadata ({exc})") from exc
    return layout_of(meta)


def anchor_rows(raw: np.ndarray, conf: float, nc: int) -> np.ndarray:
    """The pose head's raw output [1, 4 + nc + 51, anchors] -> the anchors scoring above `conf` as
    `yolo.pose_candidates` rows (float32 [n, 58]: centre x, y, width, height, score, class, the anchor's
    index, then 17 x (x, y, visibility)), in anchor order."""
    pred = raw[0]
    scores = pred[4 : 4 + nc]
    best = scores.max(axis=0)
    keep = np.flatnonzero(best > conf)
    cls = scores[:, keep].argmax(axis=0) if nc > 1 else np.zeros(len(keep), np.int64)
    columns = [pred[:4, keep], best[keep][None], cls[None].astype(np.float32), keep[None].astype(np.float32)]
    return np.concatenate([*columns, pred[4 + nc :, keep]], axis=0).T.astype(np.float32, copy=False)


class PoseRunner:
    """`__call__(rgb)` -> (bodies [P, 5], keypoints [P, 17, 3]) float32 in frame pixels, as ultralytics'
    predict over the same export finds them (`test_detection`). A runtime's runner gives `forward`."""

    def __init__(self, layout: tuple[int, int], imgsz: int, conf: float, max_det: int, iou: float = 0.7):
        self.stride, self.nc = layout
        self.imgsz, self.conf, self.max_det, self.iou = imgsz, conf, max_det, iou

    def letterbox(self, rgb: np.ndarray):
        """ultralytics' letterbox (`yolo.letterbox_geometry`; OpenCV's bilinear resize, grey 114 padding) of a
        uint8 RGB frame -> (input [1, H', W', 3] uint8, r, (pad_x, pad_y))."""
        from .yolo import letterbox_geometry

        h, w = rgb.shape[:2]
        r, (left, top), (nh, nw, full_h, full_w) = letterbox_geometry(h, w, self.imgsz, self.stride)
        x = rgb if (nh, nw) == (h, w) else cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)
        if (full_h, full_w) != (nh, nw):
            grey = (114, 114, 114)
            x = cv2.copyMakeBorder(x, top, full_h - nh - top, left, full_w - nw - left, cv2.BORDER_CONSTANT, value=grey)
        return np.ascontiguousarray(x)[None], r, (left, top)

    def forward(self, rgb: np.ndarray):
        """The network's raw output [1, 4 + nc + 51, anchors] for a uint8 RGB frame, with the letterbox's
        (r, (pad_x, pad_y))."""
        raise NotImplementedError

    def __call__(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from .yolo import decode_candidates, torch_threads

        h, w = rgb.shape[:2]
        raw, r, pad = self.forward(rgb)
        rows = anchor_rows(raw, self.conf, self.nc)
        with torch_threads(1):  # NMS on a few rows: no OpenMP workers left spinning after it
            return decode_candidates(rows, self.conf, self.iou, self.max_det, r, pad, h, w, complete=True)


class OpenVinoPose(PoseRunner):
    """ultralytics' OpenVINO export, compiled per letterboxed frame size (MAX_SHAPES kept), uint8 RGB in."""

    def __init__(
        self, folder: str | Path, layout: tuple[int, int], imgsz: int, conf: float, max_det: int, iou: float = 0.7
    ):
        import torch

        from ..backends.openvino import import_openvino, shared_core

        super().__init__(layout, imgsz, conf, max_det, iou)
        xmls = sorted(Path(folder).glob("*.xml"))
        if not xmls:
            raise ConfigError(f"{folder}: no OpenVINO model (*.xml) in the export")
        # the process's one Core (`backends.openvino.shared_core`: each Core swaps the thread's signal stack)
        self.xml, self.ov, self.core = xmls[0], import_openvino(), shared_core()
        # ultralytics' own compile settings (LATENCY), on the process's threads as the encoder's OpenVINO
        self.config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": max(1, torch.get_num_threads())}
        self.requests: OrderedDict[tuple[int, int], object] = OrderedDict()

    def _request(self, h: int, w: int):
        """The infer request of a static model for letterboxed inputs of h x w (made once, MAX_SHAPES kept)."""
        request = self.requests.get((h, w))
        if request is not None:
            self.requests.move_to_end((h, w))
            return request
        from openvino.preprocess import PrePostProcessor

        model = self.core.read_model(str(self.xml))
        model.reshape([1, 3, h, w])
        ppp = PrePostProcessor(model)
        ppp.input().tensor().set_element_type(self.ov.Type.u8).set_layout(self.ov.Layout("NHWC"))
        ppp.input().model().set_layout(self.ov.Layout("NCHW"))
        ppp.input().preprocess().convert_element_type(self.ov.Type.f32).scale(255.0)
        request = self.core.compile_model(ppp.build(), "CPU", self.config).create_infer_request()
        self.requests[(h, w)] = request
        while len(self.requests) > MAX_SHAPES:
            self.requests.popitem(last=False)
        return request

    def forward(self, rgb: np.ndarray):
        x, r, pad = self.letterbox(rgb)
        request = self._request(*x.shape[1:3])  # synchronous: the letterboxed frame is read in place
        return np.asarray(request.infer({0: x}, share_inputs=True)[0]), r, pad


class OnnxPose(PoseRunner):
    """ultralytics' ONNX export (a dynamic input) on one onnxruntime session whose threads do not spin; the
    letterboxed frame goes in as float32 planar / 255, as ultralytics' preprocessing makes it."""

    def __init__(self, session, layout: tuple[int, int], imgsz: int, conf: float, max_det: int, iou: float = 0.7):
        super().__init__(layout, imgsz, conf, max_det, iou)
        self.session = session
        self.input = session.get_inputs()[0].name

    def inputs(self, rgb: np.ndarray):
        """The network's input for a uint8 RGB frame: the letterboxed frame as float32 [1, 3, H', W'] / 255,
        made in one pass; with the letterbox's (r, (pad_x, pad_y))."""
        x, r, pad = self.letterbox(rgb)
        return cv2.dnn.blobFromImage(x[0], 1 / 255), r, pad

    def forward(self, rgb: np.ndarray):
        blob, r, pad = self.inputs(rgb)
        return self.session.run(None, {self.input: blob})[0], r, pad


def onnx_session(path: str | Path, threads: int):
    """An onnxruntime CPU session of `path` on `threads` intra-op threads that sleep after each run
    (`backends.onnx.session_options`, as the encoder's)."""
    import onnxruntime as ort

    from ..backends.onnx import session_options

    return ort.InferenceSession(str(path), session_options(max(1, threads)), providers=["CPUExecutionProvider"])


def pose_runner(runtime: str, export: str | Path, imgsz: int, conf: float, max_det: int) -> PoseRunner | None:
    """This package's runner of a YOLO pose export on `runtime` (openvino, onnx), None where the export is not
    one these runners decode (`layout_of`)."""
    import torch

    if runtime == "openvino":
        layout = pose_layout(export)
        return OpenVinoPose(export, layout, imgsz, conf, max_det) if layout is not None else None
    if runtime == "onnx":
        session = onnx_session(export, torch.get_num_threads())
        layout = onnx_layout(export, session.get_modelmeta().custom_metadata_map)
        return OnnxPose(session, layout, imgsz, conf, max_det) if layout is not None else None
    return None
