"""Faces per frame: MediaPipe face detection, a landmark mesh per face, head pose, expression.

Every frame is processed on its own (the mesh runs in static-image mode), so any
worker can take any frame and no tracking state from earlier frames leaks in.

Pipeline per frame:
1. full-range face detection on the whole frame gives boxes, scores and 6 keypoints;
2. for the most confident `max_faces` detections, the face mesh runs on a square
   crop around the box, scaled to a fixed size. Crops let the mesh see small faces
   (its own detector is short range) and tie every mesh to its detection;
3. head pose and expression come from the mesh; a detection without a mesh gets
   a coarse pose from its keypoints and expression 0.

Angles (degrees): yaw + = face turned toward the image's right side, pitch + =
looking up, roll + = top of the head tilted toward the image's right side.
Mirroring the image flips the signs of yaw and roll.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import cv2
import numpy as np

from facemoment.core.config import ConfigError, ExtractConfig
from facemoment.core.types import Face, Frame, Observation
from operators.extraction.common import frame_observation, run_guarded, unit
from operators.extraction.mediapipe_graph import build_graph, to_rgb

BACKENDS = ("mediapipe",)

Box = Tuple[float, float, float, float]  # x, y, w, h

# Face mesh landmark indices ("right"/"left" are the subject's own sides, so the
# right eye appears on the image's left for a frontal face).
MESH_POINTS = 468
RIGHT_EYE_OUTER = 33
RIGHT_EYE_INNER = 133
LEFT_EYE_INNER = 362
LEFT_EYE_OUTER = 263
FOREHEAD = 151  # middle of the forehead
NOSE_BASE = 2  # below the nose tip, above the upper lip
MOUTH_RIGHT = 61
MOUTH_LEFT = 291
UPPER_LIP_INNER = 13
LOWER_LIP_INNER = 14

# Detection keypoints (subject's sides, as for the mesh).
KP_RIGHT_EYE, KP_LEFT_EYE, KP_NOSE, KP_MOUTH = 0, 1, 2, 3

# Full range (1) finds faces down to a few percent of the frame; short range (0)
# missed the test portrait at 0.6x scale in a 640x480 frame.
DETECTOR_MODEL = 1
# Mesh crop: square side = CROP_SCALE x the larger box side, resized to MESH_INPUT px.
CROP_SCALE = 2.0
MESH_INPUT = 256
# Inside a crop the face is already known, so the mesh's own detector may be lenient.
MESH_MIN_DETECTION_CONFIDENCE = 0.3
# A mesh belongs to a detection when their boxes overlap at least this much (IoU).
MIN_MESH_IOU = 0.3
# A face is inside the frame when its box keeps this far (normalized) from every edge.
INSIDE_MARGIN = 0.01

# Expression: mouth measures relative to the outer eye-corner distance, mapped to 0-1.
# A neutral face (MediaPipe's canonical face) measures width 0.55, lift -0.01,
# opening ~0.06; a broad open smile (skimage astronaut) 0.72, 0.085, 0.11; a closed
# slight smile (matplotlib's Grace Hopper) 0.57, 0.02, 0.0.
SMILE_WIDTH_NEUTRAL = 0.55
SMILE_WIDTH_FULL = 0.75
CORNER_LIFT_FULL = 0.10
OPENING_FULL = 0.30
EXPRESSION_WEIGHTS = (0.45, 0.35, 0.20)  # width, corner lift, opening

# Coarse pose from detection keypoints on a frontal face: nose tip depth in front of
# the eyes (per inter-eye distance) and nose height as a fraction of eyes-to-mouth.
KP_NOSE_DEPTH = 0.55
KP_NOSE_HEIGHT = 0.55


# ---------------------------------------------------------------- head pose


def face_axes(points: np.ndarray) -> np.ndarray:
    """Rotation matrix whose columns are the face's right, down and backward axes.

    `points` are mesh landmarks (468, 3) in an image-aligned right-handed frame:
    x right, y down, z away from the camera, one unit on all axes (pixels).
    """
    p = np.asarray(points, dtype=np.float64)
    across = unit(unit(p[LEFT_EYE_OUTER] - p[RIGHT_EYE_OUTER]) + unit(p[LEFT_EYE_INNER] - p[RIGHT_EYE_INNER]))
    # Forehead to nose base: rigid points (the chin moves with the jaw). This line
    # is perpendicular to the line of sight for people facing a camera; MediaPipe's
    # canonical face holds it ~7 degrees off, which reads portraits as looking down.
    down = p[NOSE_BASE] - p[FOREHEAD]
    down = unit(down - float(down @ across) * across)
    back = np.cross(across, down)
    return np.column_stack([across, down, back])


def _rot_x(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, s], [0.0, -s, c]])


def _rot_y(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]])


def rotation_from_angles(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rotation (degrees in) with the conventions of `head_pose`: R = Ry(yaw) Rx(pitch) Rz(roll)."""
    y, p, r = (math.radians(a) for a in (yaw, pitch, roll))
    c, s = math.cos(r), math.sin(r)
    rot_z = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return _rot_y(y) @ _rot_x(p) @ rot_z


def angles_from_rotation(rot: np.ndarray) -> Tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of a face rotation (columns: right, down, back axes)."""
    forward = -rot[:, 2]  # out of the face, toward the camera when frontal
    yaw = math.atan2(forward[0], -forward[2])
    pitch = math.atan2(-forward[1], math.hypot(forward[0], forward[2]))
    # What is left after undoing yaw and pitch is a rotation about the view axis.
    rest = _rot_x(-pitch) @ _rot_y(-yaw) @ rot
    roll = math.atan2(rest[1, 0], rest[0, 0])
    return math.degrees(yaw), math.degrees(pitch), math.degrees(roll)


def head_pose(points: np.ndarray) -> Tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from mesh landmarks (see `face_axes` for units)."""
    return angles_from_rotation(face_axes(points))


def pose_from_keypoints(keypoints: np.ndarray) -> Tuple[float, float, float]:
    """Coarse (yaw, pitch, roll) from the detector's keypoints, in pixels (6, 2)."""
    kp = np.asarray(keypoints, dtype=np.float64)
    eye_vec = kp[KP_LEFT_EYE] - kp[KP_RIGHT_EYE]
    eye_dist = float(np.linalg.norm(eye_vec))
    if eye_dist < 1e-6:
        return 0.0, 0.0, 0.0
    roll = math.atan2(eye_vec[1], eye_vec[0])
    # Express nose and mouth in the eye-aligned frame, in inter-eye distances.
    c, s = math.cos(-roll), math.sin(-roll)
    unroll = np.array([[c, -s], [s, c]])
    mid = (kp[KP_LEFT_EYE] + kp[KP_RIGHT_EYE]) / 2.0
    nose = unroll @ (kp[KP_NOSE] - mid) / eye_dist
    mouth = unroll @ (kp[KP_MOUTH] - mid) / eye_dist
    yaw = math.atan2(nose[0], KP_NOSE_DEPTH)
    span = max(float(mouth[1]), 1e-6)
    pitch = math.atan2((KP_NOSE_HEIGHT - nose[1] / span) * span, KP_NOSE_DEPTH)
    return math.degrees(yaw), math.degrees(pitch), math.degrees(roll)


# ---------------------------------------------------------------- expression


@dataclass(frozen=True)
class MouthShape:
    """Mouth measures in outer eye-corner distances, in the face's own axes."""

    width: float  # corner to corner
    lift: float  # how far the corners sit above the lip centre
    opening: float  # inner upper lip to inner lower lip


def mouth_shape(points: np.ndarray) -> MouthShape:
    p = np.asarray(points, dtype=np.float64)
    axes = face_axes(p)
    across, down = axes[:, 0], axes[:, 1]
    eye_dist = float(np.linalg.norm(p[LEFT_EYE_OUTER] - p[RIGHT_EYE_OUTER]))
    if eye_dist < 1e-9:
        raise ValueError("degenerate landmarks")
    width = float((p[MOUTH_LEFT] - p[MOUTH_RIGHT]) @ across)
    centre = float((p[UPPER_LIP_INNER] + p[LOWER_LIP_INNER]) @ down) / 2.0
    corners = float((p[MOUTH_LEFT] + p[MOUTH_RIGHT]) @ down) / 2.0
    opening = float((p[LOWER_LIP_INNER] - p[UPPER_LIP_INNER]) @ down)
    return MouthShape(width / eye_dist, (centre - corners) / eye_dist, max(0.0, opening) / eye_dist)


def _ramp(value: float, low: float, high: float) -> float:
    return min(1.0, max(0.0, (value - low) / (high - low)))


def expression_intensity(shape: MouthShape) -> float:
    """0 for a neutral mouth, near 1 for a broad, open smile."""
    parts = (
        _ramp(shape.width, SMILE_WIDTH_NEUTRAL, SMILE_WIDTH_FULL),
        _ramp(shape.lift, 0.0, CORNER_LIFT_FULL),
        _ramp(shape.opening, 0.0, OPENING_FULL),
    )
    return float(sum(w * v for w, v in zip(EXPRESSION_WEIGHTS, parts)))


def expression_from_landmarks(points: np.ndarray) -> float:
    return expression_intensity(mouth_shape(points))


# ---------------------------------------------------------------- boxes


def box_iou(a: Box, b: Box) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def clip_box(box: Box) -> Box:
    x, y, w, h = box
    x0, y0 = min(1.0, max(0.0, x)), min(1.0, max(0.0, y))
    x1, y1 = min(1.0, max(0.0, x + w)), min(1.0, max(0.0, y + h))
    return (x0, y0, x1 - x0, y1 - y0)


def box_inside(box: Box, margin: float = INSIDE_MARGIN) -> bool:
    x, y, w, h = box
    return x >= margin and y >= margin and x + w <= 1.0 - margin and y + h <= 1.0 - margin


def center_distance(box: Box) -> float:
    x, y, w, h = box
    return math.hypot(x + w / 2.0 - 0.5, y + h / 2.0 - 0.5)


# ---------------------------------------------------------------- extractor


@dataclass
class _Detection:
    box: Box  # normalized, as detected (may reach past the frame)
    score: float
    keypoints: np.ndarray  # (6, 2) pixels


def _square_crop(image: np.ndarray, cx: float, cy: float, side: float) -> Tuple[np.ndarray, int, int, int]:
    """A side x side crop centred on (cx, cy), black where it leaves the image."""
    h, w = image.shape[:2]
    side_px = max(8, int(round(side)))
    x0, y0 = int(round(cx - side_px / 2.0)), int(round(cy - side_px / 2.0))
    x1, y1 = x0 + side_px, y0 + side_px
    inner = image[max(0, y0) : min(h, y1), max(0, x0) : min(w, x1)]
    if inner.size == 0:
        return np.zeros((side_px, side_px, 3), np.uint8), x0, y0, side_px
    pads = (max(0, -y0), max(0, y1 - h), max(0, -x0), max(0, x1 - w))
    if any(pads):
        inner = cv2.copyMakeBorder(inner, *pads, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    return inner, x0, y0, side_px


class FaceExtractor:
    name = "face"

    def __init__(self, cfg: ExtractConfig, detector_model: int = DETECTOR_MODEL) -> None:
        if cfg.face_backend not in BACKENDS:
            raise ConfigError(
                f"face backend {cfg.face_backend!r} is not supported; available: {', '.join(BACKENDS)}"
            )
        if cfg.max_faces < 1:
            raise ConfigError(f"extract.max_faces must be at least 1, got {cfg.max_faces}")
        self.cfg = cfg
        self.detector_model = detector_model
        self._lock = threading.RLock()  # the graphs must not run concurrently
        self._detector: Any = None
        self._mesh: Any = None

    def load(self) -> None:
        """Build the MediaPipe graphs (done on first `extract` otherwise)."""
        with self._lock:
            if self._detector is not None:
                return
            from mediapipe.python.solutions import face_detection, face_mesh

            threads = self.cfg.graph_threads
            self._detector = build_graph(
                face_detection.FaceDetection,
                threads,
                model_selection=self.detector_model,
                min_detection_confidence=self.cfg.min_detection_confidence,
            )
            # Static-image mode: a fresh detection on every call, no tracking across frames.
            self._mesh = build_graph(
                face_mesh.FaceMesh,
                threads,
                static_image_mode=True,
                max_num_faces=self.cfg.max_faces,
                refine_landmarks=False,
                min_detection_confidence=MESH_MIN_DETECTION_CONFIDENCE,
            )

    def close(self) -> None:
        with self._lock:
            for graph in (self._detector, self._mesh):
                if graph is not None:
                    graph.close()
            self._detector = self._mesh = None

    def extract(self, frame: Frame) -> Observation:
        result, failed, started = run_guarded(self, frame, self._faces)
        if failed is not None:
            return failed
        faces, meshed = result
        return frame_observation(
            self.name,
            frame,
            started,
            faces=faces,
            signals={"face_count": float(len(faces)), "mesh_count": float(meshed)},
        )

    # -- steps

    def _faces(self, image: np.ndarray) -> Tuple[List[Face], int]:
        rgb = to_rgb(image)
        detections = sorted(self._detect(rgb), key=lambda d: d.score, reverse=True)
        faces: List[Face] = []
        meshed = 0
        for rank, det in enumerate(detections):
            points = self._mesh_for(rgb, det) if rank < self.cfg.max_faces else None
            if points is not None:
                meshed += 1
                yaw, pitch, roll = head_pose(points)
                expression = expression_from_landmarks(points)
            else:
                yaw, pitch, roll = pose_from_keypoints(det.keypoints)
                expression = 0.0
            box = clip_box(det.box)
            faces.append(
                Face(
                    face_id=0,
                    confidence=det.score,
                    bbox=box,
                    yaw=yaw,
                    pitch=pitch,
                    roll=roll,
                    expression=expression,
                    inside_frame=box_inside(det.box),
                    area_ratio=box[2] * box[3],
                    center_distance=center_distance(box),
                )
            )
        faces.sort(key=lambda f: (f.bbox[0], f.bbox[1]))
        for index, face in enumerate(faces):
            face.face_id = index
        return faces, meshed

    def _detect(self, rgb: np.ndarray) -> List[_Detection]:
        h, w = rgb.shape[:2]
        result = self._detector.process(rgb)
        found: List[_Detection] = []
        for det in result.detections or []:
            loc = det.location_data
            rel = loc.relative_bounding_box
            if rel.width <= 0 or rel.height <= 0:
                continue
            keypoints = np.array([[kp.x * w, kp.y * h] for kp in loc.relative_keypoints], dtype=np.float64)
            if keypoints.shape != (6, 2):
                keypoints = np.zeros((6, 2))
            box = (float(rel.xmin), float(rel.ymin), float(rel.width), float(rel.height))
            found.append(_Detection(box=box, score=float(det.score[0]), keypoints=keypoints))
        return found

    def _mesh_for(self, rgb: np.ndarray, det: _Detection) -> Optional[np.ndarray]:
        """Mesh landmarks (468, 3) in frame pixels for one detection, or None."""
        h, w = rgb.shape[:2]
        x, y, bw, bh = det.box
        side = CROP_SCALE * max(bw * w, bh * h)
        crop, x0, y0, side_px = _square_crop(rgb, (x + bw / 2.0) * w, (y + bh / 2.0) * h, side)
        interp = cv2.INTER_AREA if side_px > MESH_INPUT else cv2.INTER_LINEAR
        crop = cv2.resize(crop, (MESH_INPUT, MESH_INPUT), interpolation=interp)
        result = self._mesh.process(crop)
        best: Optional[np.ndarray] = None
        best_iou = MIN_MESH_IOU
        for landmarks in result.multi_face_landmarks or []:
            rel = np.array([[p.x, p.y, p.z] for p in landmarks.landmark], dtype=np.float64)
            if rel.shape[0] < MESH_POINTS:
                continue
            # Crop-normalized to frame pixels; z shares the crop's x scale.
            points = np.column_stack([x0 + rel[:, 0] * side_px, y0 + rel[:, 1] * side_px, rel[:, 2] * side_px])
            overlap = box_iou(det.box, _points_box(points, w, h))
            if overlap >= best_iou:
                best, best_iou = points, overlap
        return best


def _points_box(points: np.ndarray, width: int, height: int) -> Box:
    x0, y0 = points[:, 0].min() / width, points[:, 1].min() / height
    x1, y1 = points[:, 0].max() / width, points[:, 1].max() / height
    return (float(x0), float(y0), float(x1 - x0), float(y1 - y0))
