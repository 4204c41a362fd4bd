"""SCRFD face detection on onnxruntime, and a head pose estimate from its 5 keypoints.

Model contract (InsightFace's SCRFD exports, e.g. det_10g.onnx / det_500m.onnx):

- input ``1x3xHxW`` float32, RGB, ``(pixel - 127.5) / 128``; the image is resized
  keeping its aspect ratio into HxW (640x640 unless the model fixes another size)
  and padded at the bottom/right with black;
- outputs per stride s in (8, 16, 32) (or 8..128 for 5-level exports), each level
  with A anchors per feature-map cell (2 for the standard exports, 1 for 5-level):
  scores ``(N, 1)``, box distances ``(N, 4)`` and optionally keypoint offsets
  ``(N, 10)``, all optionally with a leading batch dimension of 1. Distances and
  offsets are in stride units from the anchor centre ``(col * s, row * s)``; boxes
  are ``(cx - l, cy - t, cx + r, cy + b)``.

A standard export orders them ``[scores_8, scores_16, scores_32, bbox_8, ...,
kps_32]``; the decoder groups them by their last dimension and orders each group
by size (the finest stride has the most rows), which gives that order for
standard exports and also accepts exports that interleave them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from operators.extraction.backends.runtime import (
    FACE_FALLBACK,
    ModelLoadError,
    PathLike,
    as_bgr,
    create_session,
    input_hw,
    nms,
)

DEFAULT_INPUT_SIZE = (640, 640)  # (width, height), used when the model's input is dynamic
SCORE_THRESHOLD = 0.5
NMS_IOU = 0.4
STRIDES_BY_LEVELS = {3: (8, 16, 32), 5: (8, 16, 32, 64, 128)}

# 5 keypoints in image order: the eye on the image's left (the subject's right eye),
# the eye on the image's right, the nose tip, the mouth corners on the image's left and right.
KP_LEFT_EYE, KP_RIGHT_EYE, KP_NOSE, KP_LEFT_MOUTH, KP_RIGHT_MOUTH = range(5)

# Geometry of an average frontal face for the 5-point pose estimate:
# the nose tip sits halfway from the eye line to the mouth line, the mouth line
# lies 1.15 inter-eye distances below the eyes, the nose tip stands 0.5
# inter-eye distances in front of the eyes and the mouth corners.
FRONTAL_NOSE_HEIGHT = 0.5
MOUTH_HEIGHT = 1.15
NOSE_DEPTH = 0.5


@dataclass
class FaceDetection:
    """One face in the original image's pixels."""

    bbox: np.ndarray  # (4,) x1, y1, x2, y2
    score: float
    keypoints: Optional[np.ndarray]  # (5, 2) in KP_* order, or None for exports without keypoints


Size = Union[int, Tuple[int, int]]


def _size_wh(size: Size) -> Tuple[int, int]:
    if isinstance(size, int):
        return size, size
    width, height = size
    return int(width), int(height)


def letterbox_blob(bgr: np.ndarray, input_wh: Tuple[int, int]) -> Tuple[np.ndarray, float]:
    """The 1x3xHxW input for `bgr` and the factor from image pixels to input pixels."""
    in_w, in_h = input_wh
    h, w = bgr.shape[:2]
    if h / w > in_h / in_w:
        new_h = in_h
        new_w = max(1, int(new_h * w / h))
    else:
        new_w = in_w
        new_h = max(1, int(new_w * h / w))
    scale = new_h / h
    canvas = np.zeros((in_h, in_w, 3), dtype=np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(bgr, (new_w, new_h))
    rgb = canvas[:, :, ::-1].astype(np.float32)
    blob = ((rgb - 127.5) / 128.0).transpose(2, 0, 1)[np.newaxis]
    return np.ascontiguousarray(blob), scale


def anchor_centres(height: int, width: int, stride: int, anchors: int) -> np.ndarray:
    """(cells * anchors, 2) anchor centres in input pixels, row-major, anchors of a cell adjacent."""
    cols, rows = np.meshgrid(np.arange(width), np.arange(height))
    centres = np.stack([cols, rows], axis=-1).reshape(-1, 2).astype(np.float32) * stride
    return np.repeat(centres, anchors, axis=0)


def _group_outputs(outputs: Sequence[np.ndarray]) -> Tuple[List[np.ndarray], List[np.ndarray], List[np.ndarray]]:
    """Scores, boxes and keypoints per level, finest stride first, as 2-D arrays."""
    groups = {1: [], 4: [], 10: []}  # type: ignore[var-annotated]
    for out in outputs:
        arr = np.asarray(out)
        if arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 2 or arr.shape[1] not in groups:
            raise ModelLoadError(
                f"unexpected SCRFD output of shape {np.asarray(out).shape}; expected (N, 1), (N, 4) or (N, 10)"
            )
        groups[arr.shape[1]].append(arr)
    for key in groups:
        groups[key].sort(key=lambda a: -a.shape[0])
    scores, boxes, kps = groups[1], groups[4], groups[10]
    if len(scores) not in STRIDES_BY_LEVELS or len(boxes) != len(scores) or len(kps) not in (0, len(scores)):
        raise ModelLoadError(
            f"SCRFD outputs do not form 3 or 5 levels of scores/boxes(/keypoints): "
            f"{len(scores)} score, {len(boxes)} box and {len(kps)} keypoint outputs"
        )
    for level, (s, b) in enumerate(zip(scores, boxes)):
        if s.shape[0] != b.shape[0] or (kps and kps[level].shape[0] != s.shape[0]):
            raise ModelLoadError(f"SCRFD level {level} outputs disagree on their number of anchors")
    return scores, boxes, kps


def decode(
    outputs: Sequence[np.ndarray],
    input_hw_: Tuple[int, int],
    scale: float,
    score_threshold: float = SCORE_THRESHOLD,
    iou_threshold: float = NMS_IOU,
) -> List[FaceDetection]:
    """Detections in original-image pixels from raw SCRFD outputs (see the module doc)."""
    in_h, in_w = input_hw_
    scores, boxes, kps = _group_outputs(outputs)
    strides = STRIDES_BY_LEVELS[len(scores)]
    all_scores, all_boxes, all_kps = [], [], []
    for level, stride in enumerate(strides):
        rows, cols = in_h // stride, in_w // stride
        count = scores[level].shape[0]
        if rows * cols == 0 or count % (rows * cols):
            raise ModelLoadError(
                f"SCRFD stride {stride} output has {count} rows, not a multiple of the "
                f"{rows}x{cols} feature map of a {in_w}x{in_h} input"
            )
        centres = anchor_centres(rows, cols, stride, count // (rows * cols))
        level_scores = scores[level][:, 0]
        keep = np.flatnonzero(level_scores >= score_threshold)
        if keep.size == 0:
            continue
        c = centres[keep]
        d = boxes[level][keep].astype(np.float32) * stride
        all_boxes.append(np.column_stack([c[:, 0] - d[:, 0], c[:, 1] - d[:, 1], c[:, 0] + d[:, 2], c[:, 1] + d[:, 3]]))
        all_scores.append(level_scores[keep].astype(np.float32))
        if kps:
            offsets = kps[level][keep].astype(np.float32).reshape(-1, 5, 2) * stride
            all_kps.append(c[:, np.newaxis, :] + offsets)
    if not all_scores:
        return []
    box_arr = np.concatenate(all_boxes) / scale
    score_arr = np.concatenate(all_scores)
    kp_arr = np.concatenate(all_kps) / scale if all_kps else None
    return [
        FaceDetection(
            bbox=box_arr[i],
            score=float(score_arr[i]),
            keypoints=None if kp_arr is None else kp_arr[i],
        )
        for i in nms(box_arr, score_arr, iou_threshold)
    ]


class SCRFD:
    """An SCRFD detector loaded from `path`; fails in the constructor when it cannot run."""

    def __init__(
        self,
        path: PathLike,
        input_size: Size = DEFAULT_INPUT_SIZE,
        score_threshold: float = SCORE_THRESHOLD,
        iou_threshold: float = NMS_IOU,
        prefer_gpu: bool = True,
        fallback: str = FACE_FALLBACK,
    ) -> None:
        self.path = path
        self.session, self.provider = create_session(path, prefer_gpu=prefer_gpu, fallback=fallback)
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ModelLoadError(f"{path} is not an SCRFD detector: expected one 1x3xHxW input; {fallback}")
        fixed = input_hw(self.session)
        self.input_wh = (fixed[1], fixed[0]) if fixed else _size_wh(input_size)
        self.input_name = inputs[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        if len(self.output_names) not in (6, 9, 10, 15):
            raise ModelLoadError(
                f"{path} is not an SCRFD detector: it has {len(self.output_names)} outputs, "
                f"expected 6 or 9 (3 strides) or 10 or 15 (5 strides); {fallback}"
            )
        # One blank image through the model proves the outputs decode, before any frame arrives.
        try:
            self.detect(np.zeros((self.input_wh[1], self.input_wh[0], 3), np.uint8))
        except Exception as exc:
            raise ModelLoadError(f"{path} does not run as SCRFD: {exc}; {fallback}") from exc

    @property
    def has_keypoints(self) -> bool:
        return len(self.output_names) in (9, 15)

    def detect(self, image: np.ndarray) -> List[FaceDetection]:
        bgr = as_bgr(image)
        blob, scale = letterbox_blob(bgr, self.input_wh)
        outputs = self.session.run(self.output_names, {self.input_name: blob})
        return decode(outputs, (blob.shape[2], blob.shape[3]), scale, self.score_threshold, self.iou_threshold)


# ---------------------------------------------------------------- head pose


def estimate_pose_from_5pts(kps: Any, bbox: Any = None) -> Tuple[float, float, float]:
    """Coarse (yaw, pitch, roll) in degrees from 5 face keypoints in pixels (KP_* order).

    Conventions (the project's): yaw + = face turned toward the image's right,
    pitch + = looking up, roll + = top of the head tilted toward the image's right;
    mirroring the image flips yaw and roll.

    The face is taken as an average frontal face seen without perspective:
    roll is the angle of the eye line; after undoing roll, yaw comes from how far the
    nose tip sits beside the eye-to-mouth midline (``tan yaw = offset / NOSE_DEPTH``
    in inter-eye distances) and pitch from where the nose tip sits between the eye
    line and the mouth line (half-way when level). Returns zeros for degenerate
    keypoints (eyes on top of each other, mouth not below the eyes); `bbox`
    (x1, y1, x2, y2) sets the scale that counts as degenerate.
    """
    p = np.asarray(kps, dtype=np.float64).reshape(5, 2)
    eye_vec = p[KP_RIGHT_EYE] - p[KP_LEFT_EYE]
    eye_dist = float(np.hypot(*eye_vec))
    size = eye_dist
    if bbox is not None:
        b = np.asarray(bbox, dtype=np.float64).reshape(-1)
        size = max(float(b[2] - b[0]), float(b[3] - b[1]), 1e-6)
    if eye_dist < 1e-3 * max(size, 1.0):
        return 0.0, 0.0, 0.0
    roll = math.atan2(eye_vec[1], eye_vec[0])
    c, s = math.cos(-roll), math.sin(-roll)
    unroll = np.array([[c, -s], [s, c]])
    eye_mid = (p[KP_LEFT_EYE] + p[KP_RIGHT_EYE]) / 2.0
    nose = unroll @ (p[KP_NOSE] - eye_mid)
    mouth = unroll @ ((p[KP_LEFT_MOUTH] + p[KP_RIGHT_MOUTH]) / 2.0 - eye_mid)
    if mouth[1] < 1e-3 * eye_dist:
        return 0.0, 0.0, math.degrees(roll)
    height = nose[1] / mouth[1]  # where the nose sits between eye line (0) and mouth line (1)
    offset = (nose[0] - height * mouth[0]) / eye_dist
    yaw = math.atan2(offset, NOSE_DEPTH)
    pitch = math.atan2(FRONTAL_NOSE_HEIGHT - height, NOSE_DEPTH / MOUTH_HEIGHT)
    return math.degrees(yaw), math.degrees(pitch), math.degrees(roll)
