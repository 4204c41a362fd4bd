"""People and their 17 COCO keypoints from YOLOv8-pose weights the user supplies.

Two kinds of file:

- a plain ONNX export (``yolo export format=onnx``): input ``1x3xSxS`` RGB / 255,
  letterboxed (aspect kept, centred, grey 114 padding), S usually 640; output
  ``(1, 56, A)`` (or transposed ``(1, A, 56)``): per anchor a box (cx, cy, w, h)
  in input pixels, the person score, then 17 x (x, y, confidence) keypoints, with
  the sigmoids already applied by the export;
- a ``.pt`` checkpoint, run through ultralytics (imported only for such files and
  not a dependency of this project).

Poses come back normalized to the original image, strongest first, with
`hand_raised` as in moments.md: a wrist above its shoulder, both keypoints with
confidence >= 0.5.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Tuple

import cv2
import numpy as np

from facemoment.core.types import Pose
from operators.extraction.common import hand_raised
from operators.extraction.backends.runtime import (
    POSE_FALLBACK,
    ModelLoadError,
    PathLike,
    as_bgr,
    create_session,
    input_hw,
    nms,
    resolve_model_file,
)

KEYPOINTS = 17
CHANNELS = 5 + KEYPOINTS * 3
DEFAULT_INPUT = 640
PAD_VALUE = 114
SCORE_THRESHOLD = 0.5
NMS_IOU = 0.5


def letterbox(bgr: np.ndarray, size: Tuple[int, int]) -> Tuple[np.ndarray, float, Tuple[float, float]]:
    """The 1x3xHxW input, the resize ratio and the (left, top) padding in input pixels."""
    in_h, in_w = size
    h, w = bgr.shape[:2]
    ratio = min(in_h / h, in_w / w)
    new_w, new_h = max(1, int(round(w * ratio))), max(1, int(round(h * ratio)))
    pad_w, pad_h = (in_w - new_w) / 2.0, (in_h - new_h) / 2.0
    # Split odd padding the way ultralytics does, so both sides agree to the pixel.
    top, left = int(round(pad_h - 0.1)), int(round(pad_w - 0.1))
    resized = cv2.resize(bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((in_h, in_w, 3), PAD_VALUE, dtype=np.uint8)
    canvas[top : top + new_h, left : left + new_w] = resized
    blob = (canvas[:, :, ::-1].astype(np.float32) / 255.0).transpose(2, 0, 1)[np.newaxis]
    return np.ascontiguousarray(blob), ratio, (float(left), float(top))


def _as_rows(output: np.ndarray) -> np.ndarray:
    """(A, 56) rows from a (1, 56, A), (1, A, 56), (56, A) or (A, 56) output."""
    arr = np.asarray(output)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2 or CHANNELS not in arr.shape:
        raise ModelLoadError(
            f"unexpected YOLOv8-pose output of shape {np.asarray(output).shape}; "
            f"expected (1, {CHANNELS}, A) or (1, A, {CHANNELS})"
        )
    return arr.T if arr.shape[0] == CHANNELS and arr.shape[1] != CHANNELS else arr


def decode(
    output: np.ndarray,
    ratio: float,
    pad: Tuple[float, float],
    image_wh: Tuple[int, int],
    score_threshold: float = SCORE_THRESHOLD,
    iou_threshold: float = NMS_IOU,
) -> List[Pose]:
    """Poses normalized to the original image from a raw YOLOv8-pose output."""
    rows = _as_rows(output).astype(np.float32)
    rows = rows[rows[:, 4] >= score_threshold]
    if rows.shape[0] == 0:
        return []
    cx, cy, bw, bh = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    boxes = np.column_stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])
    keep = nms(boxes, rows[:, 4], iou_threshold)
    width, height = image_wh
    poses: List[Pose] = []
    for person_id, index in enumerate(keep):
        kp = rows[index, 5:].reshape(KEYPOINTS, 3).astype(np.float64)
        x = np.clip((kp[:, 0] - pad[0]) / ratio / width, 0.0, 1.0)
        y = np.clip((kp[:, 1] - pad[1]) / ratio / height, 0.0, 1.0)
        keypoints = [(float(a), float(b), float(c)) for a, b, c in zip(x, y, kp[:, 2])]
        poses.append(
            Pose(
                person_id=person_id,
                confidence=float(rows[index, 4]),
                keypoints=keypoints,
                hand_raised=hand_raised(keypoints),
            )
        )
    return poses


class _OnnxRunner:
    def __init__(self, path: Path, prefer_gpu: bool) -> None:
        self.session, self.provider = create_session(path, prefer_gpu=prefer_gpu, fallback=POSE_FALLBACK)
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or len(self.session.get_outputs()) < 1:
            raise ModelLoadError(f"{path} is not a YOLOv8-pose export: expected one 1x3xSxS input; {POSE_FALLBACK}")
        self.size = input_hw(self.session) or (DEFAULT_INPUT, DEFAULT_INPUT)
        self.input_name = inputs[0].name
        self.output_name = self.session.get_outputs()[0].name

    def __call__(self, bgr: np.ndarray, score_threshold: float, iou_threshold: float) -> List[Pose]:
        blob, ratio, pad = letterbox(bgr, self.size)
        output = self.session.run([self.output_name], {self.input_name: blob})[0]
        return decode(output, ratio, pad, (bgr.shape[1], bgr.shape[0]), score_threshold, iou_threshold)


class _UltralyticsRunner:
    provider = "ultralytics"

    def __init__(self, path: Path) -> None:
        try:
            from ultralytics import YOLO
        except ImportError as exc:
            raise ModelLoadError(
                f"{path} is a PyTorch checkpoint and needs ultralytics, which is not installed: "
                f"`pip install ultralytics`, or export it once with `yolo export model={path.name} format=onnx` "
                f"and use the .onnx file; or {POSE_FALLBACK}"
            ) from exc
        try:
            self.model = YOLO(str(path))
        except Exception as exc:  # ultralytics raises many types for bad checkpoints
            raise ModelLoadError(f"cannot load {path} with ultralytics: {exc}; {POSE_FALLBACK}") from exc

    def __call__(self, bgr: np.ndarray, score_threshold: float, iou_threshold: float) -> List[Pose]:
        height, width = bgr.shape[:2]
        result = self.model.predict(bgr, conf=score_threshold, iou=iou_threshold, verbose=False)[0]
        if result.keypoints is None or result.boxes is None:
            return []
        keypoints = _numpy(result.keypoints.data)
        scores = _numpy(result.boxes.conf).reshape(-1)
        poses: List[Pose] = []
        for person_id in np.argsort(-scores, kind="stable"):
            kp = keypoints[person_id].astype(np.float64).reshape(KEYPOINTS, -1)
            conf = kp[:, 2] if kp.shape[1] > 2 else np.ones(KEYPOINTS)
            points = [
                (float(np.clip(x / width, 0, 1)), float(np.clip(y / height, 0, 1)), float(c))
                for (x, y), c in zip(kp[:, :2], conf)
            ]
            poses.append(
                Pose(
                    person_id=len(poses),
                    confidence=float(scores[person_id]),
                    keypoints=points,
                    hand_raised=hand_raised(points),
                )
            )
        return poses


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "cpu"):
        value = value.cpu()
    if hasattr(value, "numpy"):
        value = value.numpy()
    return np.asarray(value)


class YoloPoseBackend:
    """YOLOv8-pose from `path` (.onnx, or .pt through ultralytics); fails in the constructor."""

    def __init__(
        self,
        path: PathLike,
        score_threshold: float = SCORE_THRESHOLD,
        iou_threshold: float = NMS_IOU,
        prefer_gpu: bool = True,
    ) -> None:
        self.path = resolve_model_file(path, "YOLOv8-pose model", POSE_FALLBACK)
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        suffix = self.path.suffix.lower()
        if suffix == ".onnx":
            self._run: Any = _OnnxRunner(self.path, prefer_gpu)
            # A blank frame through the model proves the output decodes before any real frame.
            try:
                self.detect(np.zeros((64, 64, 3), np.uint8))
            except Exception as exc:
                raise ModelLoadError(f"{self.path} does not run as YOLOv8-pose: {exc}; {POSE_FALLBACK}") from exc
        elif suffix == ".pt":
            self._run = _UltralyticsRunner(self.path)
        else:
            raise ModelLoadError(f"{self.path}: expected a .onnx export or a .pt checkpoint; {POSE_FALLBACK}")
        self.provider = self._run.provider

    def detect(self, image: np.ndarray) -> List[Pose]:
        return self._run(as_bgr(image), self.score_threshold, self.iou_threshold)
