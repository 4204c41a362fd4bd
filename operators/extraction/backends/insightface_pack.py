"""Faces from an InsightFace model pack (buffalo_l, buffalo_s, buffalo_sc, ...).

A pack is a directory of ONNX files, by default ``~/.insightface/models/<pack>/``.
Used here:

- the SCRFD detector (``det_10g.onnx`` in buffalo_l, ``det_500m.onnx`` in
  buffalo_s/sc; any other ``det_*.onnx``/``scrfd*.onnx``, or failing that any file
  with an SCRFD output signature);
- the 3D landmark model ``1k3d68.onnx`` when the pack has it: head pose then comes
  from its 68 3D points, otherwise from the detector's 5 keypoints. (2d106det.onnx
  has no depth and adds nothing to pose, so it is not loaded.)

Face geometry follows the MediaPipe face extractor: bbox normalized (x, y, w, h)
clipped to the frame, area_ratio = w * h, center_distance from (0.5, 0.5);
inside_frame means the unclipped box lies within [0, 1] on both axes.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from facemoment.core.types import Face
from operators.extraction.backends.runtime import (
    FACE_FALLBACK,
    ModelLoadError,
    ModelNotFoundError,
    PathLike,
    as_bgr,
    create_session,
    insightface_pack_candidates,
    input_hw,
    missing_message,
)
from operators.extraction.common import unit
from operators.extraction.backends.scrfd import SCRFD, FaceDetection, estimate_pose_from_5pts

log = logging.getLogger(__name__)

DETECTOR_NAMES = ("det_10g.onnx", "det_2.5g.onnx", "det_500m.onnx")
LANDMARK_3D_NAME = "1k3d68.onnx"
LANDMARK_3D_OUTPUT = 3309  # 1k3d68's flat output; its last 68 * 3 values are the landmarks
LANDMARK_POINTS = 68

# 68-point (iBUG) indices; "left"/"right" as seen in the image.
NOSE_BRIDGE_TOP = 27
NOSE_TIP = 30
NOSE_BASE = 33
LEFT_EYE_OUTER, LEFT_EYE_INNER = 36, 39
RIGHT_EYE_INNER, RIGHT_EYE_OUTER = 42, 45

# On an average face the nose base stands in front of the top of the nose bridge:
# the line between them leans this far toward the camera when the head is level.
NOSE_LINE_TILT_DEG = 8.0

# 1k3d68 sees a square crop of this many times the larger box side around the box centre.
LANDMARK_CROP_SCALE = 1.5


# ---------------------------------------------------------------- head pose from 68 3D points


def head_pose_from_68(points: np.ndarray) -> Tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from 68 3D landmarks (x right, y down, any depth sign).

    The face's axes come from points that do not move with expressions: across
    from the eye corners, down from the top of the nose bridge to the nose base,
    tilted back by NOSE_LINE_TILT_DEG so a level head reads pitch 0. The model's
    depth axis may point either way; it is turned to point away from the camera by
    requiring the nose tip to be nearer than the outer eye corners, true for any
    face turned less than 90 degrees. Conventions as `estimate_pose_from_5pts`.
    """
    p = np.asarray(points, dtype=np.float64).reshape(LANDMARK_POINTS, 3).copy()
    if p[NOSE_TIP, 2] > (p[LEFT_EYE_OUTER, 2] + p[RIGHT_EYE_OUTER, 2]) / 2.0:
        p[:, 2] = -p[:, 2]
    across = unit(unit(p[RIGHT_EYE_OUTER] - p[LEFT_EYE_OUTER]) + unit(p[RIGHT_EYE_INNER] - p[LEFT_EYE_INNER]))
    down = p[NOSE_BASE] - p[NOSE_BRIDGE_TOP]
    down = unit(down - float(down @ across) * across)
    tilt = math.radians(NOSE_LINE_TILT_DEG)
    down = math.cos(tilt) * down + math.sin(tilt) * np.cross(across, down)
    back = np.cross(across, down)
    forward = -back
    yaw = math.atan2(forward[0], -forward[2])
    pitch = math.atan2(-forward[1], math.hypot(forward[0], forward[2]))
    # Undo yaw and pitch; the right axis is then turned only about the view axis.
    cy, sy = math.cos(-yaw), math.sin(-yaw)
    cp, sp = math.cos(-pitch), math.sin(-pitch)
    undo_yaw = np.array([[cy, 0.0, -sy], [0.0, 1.0, 0.0], [sy, 0.0, cy]])
    undo_pitch = np.array([[1.0, 0.0, 0.0], [0.0, cp, sp], [0.0, -sp, cp]])
    right = undo_pitch @ undo_yaw @ across
    roll = math.atan2(right[1], right[0])
    return math.degrees(yaw), math.degrees(pitch), math.degrees(roll)


def _normalizes_inside(path: Path) -> bool:
    """Whether the graph starts by subtracting/scaling its input itself (InsightFace's test)."""
    try:
        import onnx
    except ImportError:
        log.warning("onnx is not installed; assuming %s expects (x - 127.5) / 128 input", path.name)
        return False
    graph = onnx.load(str(path), load_external_data=False).graph
    names = [node.name for node in graph.node[:8]]
    has_sub = any(n.startswith("Sub") or n.startswith("_minus") for n in names)
    has_mul = any(n.startswith("Mul") or n.startswith("_mul") for n in names)
    return has_sub and has_mul


class Landmark3D68:
    """InsightFace's 1k3d68: 68 3D landmarks from a square crop around a detected face."""

    def __init__(self, path: PathLike, prefer_gpu: bool = True) -> None:
        self.path = Path(path)
        self.session, self.provider = create_session(self.path, prefer_gpu=prefer_gpu)
        fixed = input_hw(self.session)
        outputs = self.session.get_outputs()
        flat = int(np.prod(outputs[0].shape[1:])) if all(isinstance(d, int) for d in outputs[0].shape[1:]) else 0
        if fixed is None or fixed[0] != fixed[1] or len(outputs) != 1 or flat < LANDMARK_POINTS * 3 or flat % 3:
            raise ModelLoadError(
                f"{self.path} is not a 68-point 3D landmark model: expected a square 1x3xSxS input and one "
                f"output of {LANDMARK_3D_OUTPUT} values; remove it from the pack to use the 5-point pose"
            )
        self.size = fixed[0]
        self.input_name = self.session.get_inputs()[0].name
        self.mean, self.std = (0.0, 1.0) if _normalizes_inside(self.path) else (127.5, 128.0)

    def landmarks(self, bgr: np.ndarray, bbox: np.ndarray) -> np.ndarray:
        """(68, 3) landmarks in image pixels for the face in `bbox` (x1, y1, x2, y2)."""
        x1, y1, x2, y2 = (float(v) for v in bbox[:4])
        cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
        scale = self.size / (max(x2 - x1, y2 - y1) * LANDMARK_CROP_SCALE)
        half = self.size / 2.0
        to_crop = np.array([[scale, 0.0, half - cx * scale], [0.0, scale, half - cy * scale]])
        crop = cv2.warpAffine(bgr, to_crop, (self.size, self.size), borderValue=0.0)
        blob = ((crop[:, :, ::-1].astype(np.float32) - self.mean) / self.std).transpose(2, 0, 1)[np.newaxis]
        flat = np.asarray(self.session.run(None, {self.input_name: np.ascontiguousarray(blob)})[0]).reshape(-1)
        pts = flat.reshape(-1, 3)[-LANDMARK_POINTS:].astype(np.float64)
        # Crop coordinates run from -1 to 1; depth shares the x/y scale.
        pts = pts * half
        pts[:, 0:2] += half
        pts[:, 0] = (pts[:, 0] - half) / scale + cx
        pts[:, 1] = (pts[:, 1] - half) / scale + cy
        pts[:, 2] = pts[:, 2] / scale
        return pts


# ---------------------------------------------------------------- pack


def _find_pack(pack: str, root: Optional[PathLike]) -> Path:
    candidates = insightface_pack_candidates(pack, root)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise ModelNotFoundError(
        missing_message(
            f"InsightFace model pack {pack!r}",
            candidates,
            f"unpack {pack}.zip into {candidates[0]}",
            FACE_FALLBACK,
        )
    )


def _detector_file(pack_dir: Path) -> Path:
    for name in DETECTOR_NAMES:
        if (pack_dir / name).is_file():
            return pack_dir / name
    named = sorted(pack_dir.glob("det_*.onnx")) + sorted(pack_dir.glob("scrfd*.onnx"))
    if named:
        return named[0]
    # No telling name: the first file whose outputs look like SCRFD's.
    for candidate in sorted(pack_dir.glob("*.onnx")):
        try:
            session, _ = create_session(candidate, prefer_gpu=False)
        except ModelLoadError:
            continue
        if len(session.get_outputs()) in (6, 9, 10, 15):
            return candidate
    raise ModelNotFoundError(
        missing_message(
            "face detection model",
            [pack_dir / name for name in DETECTOR_NAMES],
            f"the pack in {pack_dir} needs one of {', '.join(DETECTOR_NAMES)}",
            FACE_FALLBACK,
        )
    )


def faces_from_detections(
    detections: Sequence[FaceDetection],
    width: int,
    height: int,
    poses: Sequence[Tuple[float, float, float]],
    expressions: Sequence[float],
) -> List[Face]:
    """Faces in normalized geometry, ordered left to right with ids in that order."""
    faces: List[Face] = []
    for det, (yaw, pitch, roll), expression in zip(detections, poses, expressions):
        x1, y1, x2, y2 = (float(v) for v in det.bbox[:4])
        raw = (x1 / width, y1 / height, x2 / width, y2 / height)
        cx1, cy1 = min(1.0, max(0.0, raw[0])), min(1.0, max(0.0, raw[1]))
        cx2, cy2 = min(1.0, max(0.0, raw[2])), min(1.0, max(0.0, raw[3]))
        box = (cx1, cy1, cx2 - cx1, cy2 - cy1)
        faces.append(
            Face(
                face_id=0,
                confidence=float(det.score),
                bbox=box,
                yaw=float(yaw),
                pitch=float(pitch),
                roll=float(roll),
                expression=float(expression),
                inside_frame=raw[0] >= 0.0 and raw[1] >= 0.0 and raw[2] <= 1.0 and raw[3] <= 1.0,
                area_ratio=box[2] * box[3],
                center_distance=math.hypot(box[0] + box[2] / 2.0 - 0.5, box[1] + box[3] / 2.0 - 0.5),
            )
        )
    faces.sort(key=lambda f: (f.bbox[0], f.bbox[1]))
    for index, face in enumerate(faces):
        face.face_id = index
    return faces


class InsightFaceFaceBackend:
    """Face detection, head pose and (optionally) expression from an InsightFace pack.

    Everything is opened in the constructor: a missing pack or detector raises
    ModelNotFoundError, an unusable file ModelLoadError, each naming the path(s)
    and the MediaPipe fallback.
    """

    def __init__(
        self,
        pack: str = "buffalo_l",
        root: Optional[PathLike] = None,
        det_size: int = 640,
        score_threshold: float = 0.5,
        max_faces: Optional[int] = None,
        expression: Any = None,
        prefer_gpu: bool = True,
    ) -> None:
        self.pack_dir = _find_pack(pack, root)
        self.detector_path = _detector_file(self.pack_dir)
        self.detector = SCRFD(
            self.detector_path, input_size=det_size, score_threshold=score_threshold, prefer_gpu=prefer_gpu
        )
        landmark_path = self.pack_dir / LANDMARK_3D_NAME
        self.landmarks: Optional[Landmark3D68] = (
            Landmark3D68(landmark_path, prefer_gpu=prefer_gpu) if landmark_path.is_file() else None
        )
        self.max_faces = max_faces
        # Anything with intensity(bgr, bbox_px) -> float, e.g. expression_onnx.ExpressionModel.
        self.expression = expression
        self.provider = self.detector.provider

    @property
    def pose_source(self) -> str:
        if self.landmarks is not None:
            return "1k3d68"
        return "5 keypoints" if self.detector.has_keypoints else "none"

    def _pose(self, bgr: np.ndarray, det: FaceDetection) -> Tuple[float, float, float]:
        if self.landmarks is not None:
            try:
                return head_pose_from_68(self.landmarks.landmarks(bgr, det.bbox))
            except ValueError:
                pass  # degenerate landmarks: the keypoint estimate still says something
        if det.keypoints is not None:
            return estimate_pose_from_5pts(det.keypoints, det.bbox)
        return 0.0, 0.0, 0.0

    def detect(self, image: np.ndarray) -> List[Face]:
        bgr = as_bgr(image)
        detections = self.detector.detect(bgr)  # best score first
        if self.max_faces is not None:
            detections = detections[: self.max_faces]
        poses = [self._pose(bgr, det) for det in detections]
        if self.expression is not None:
            expressions = [float(self.expression.intensity(bgr, det.bbox)) for det in detections]
        else:
            expressions = [0.0] * len(detections)
        return faces_from_detections(detections, bgr.shape[1], bgr.shape[0], poses, expressions)
