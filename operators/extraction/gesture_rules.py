"""Hand gesture rules on the 21 MediaPipe hand landmarks (moments.md "gesture").

Pure functions, no model. Landmarks are (x, y, z) in one unit on every axis
(e.g. pixels: x·width, y·height, z·width); y points down the image.

Every rule compares distances, so it holds for left and right hands, palms or backs
toward the camera, and mirrored images alike; only `thumbs_up` looks at a direction
(the thumb must point up the image, which mirroring does not change).

A finger counts as up when its tip is farther than its PIP joint from the wrist
(the thumb: tip farther than its IP joint from the pinky's knuckle, i.e. out along
the palm's side). `fingers_up` applies exactly that. `classify` is stricter: it names
a gesture only when every finger it looks at is clearly up or clearly down, so a
half-raised finger makes the hand "none" rather than a wrong gesture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

LANDMARK_COUNT = 21
WRIST = 0
THUMB_MCP, THUMB_IP, THUMB_TIP = 2, 3, 4
INDEX_TIP = 8
MIDDLE_MCP = 9
PINKY_MCP = 17
# (PIP, TIP) of index, middle, ring and pinky.
FINGER_JOINTS = ((6, 8), (10, 12), (14, 16), (18, 20))

FINGER_NAMES = ("thumb", "index", "middle", "ring", "pinky")

# Rule confidences (moments.md).
RULE_CONFIDENCE = {
    "ok_sign": 0.8,
    "v_sign": 0.9,
    "thumbs_up": 0.9,
    "open_palm": 0.85,
    "fist": 0.85,
    "pointing": 0.85,
}
NONE = "none"

# Clear margins, in palm sizes (wrist to middle knuckle). A straight index finger
# measures about +0.5, a finger curled into the fist about -0.4 and a half-curled one
# about 0; an out-stretched thumb about +0.15 and one folded over the palm -0.25.
FINGER_CLEAR_MARGIN = 0.15
THUMB_CLEAR_MARGIN = 0.06
# Thumb and index tips "touch" closer than this (landmarks sit inside the finger
# pads, so touching pads leave about 0.1-0.15 palm sizes between them).
OK_TOUCH_FRACTION = 0.25
# thumbs_up: the thumb (knuckle to tip) within this angle of straight up the image.
THUMB_UP_MAX_TILT_DEG = 50.0
# Below this palm size (in the landmarks' unit) the hand is too degenerate to judge.
MIN_PALM_SIZE = 1e-6


@dataclass(frozen=True)
class GestureResult:
    gesture: str
    rule_confidence: float
    confidence: float  # rule confidence x hand detection confidence
    detected: bool  # a gesture other than "none" with confidence >= the threshold


def as_points(landmarks: Sequence[Sequence[float]]) -> np.ndarray:
    """The landmarks as a (21, 3) float array; (21, 2) gets z = 0."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.ndim != 2 or points.shape[0] != LANDMARK_COUNT or points.shape[1] not in (2, 3):
        raise ValueError(f"expected {LANDMARK_COUNT} hand landmarks of (x, y[, z]), got shape {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError("hand landmarks contain NaN or infinite values")
    if points.shape[1] == 2:
        points = np.column_stack([points, np.zeros(LANDMARK_COUNT)])
    return points


def _dist(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b))


def palm_size(points: np.ndarray) -> float:
    return _dist(points[WRIST], points[MIDDLE_MCP])


def extension_margins(landmarks: Sequence[Sequence[float]]) -> List[float]:
    """Per finger [thumb, index, middle, ring, pinky]: how far the finger is past the
    up/down boundary, in palm sizes (> 0 up, < 0 down)."""
    p = as_points(landmarks)
    palm = palm_size(p)
    if palm < MIN_PALM_SIZE:
        raise ValueError("degenerate hand: wrist and middle knuckle coincide")
    thumb = _dist(p[THUMB_TIP], p[PINKY_MCP]) - _dist(p[THUMB_IP], p[PINKY_MCP])
    margins = [thumb / palm]
    for pip, tip in FINGER_JOINTS:
        margins.append((_dist(p[tip], p[WRIST]) - _dist(p[pip], p[WRIST])) / palm)
    return margins


def fingers_up(landmarks: Sequence[Sequence[float]], handedness: Optional[str] = None) -> List[bool]:
    """[thumb, index, middle, ring, pinky] up. `handedness` does not change the result:
    the rules are distance based and hold for both hands and mirrored images.

    Raises ValueError for malformed or degenerate landmarks.
    """
    return [m > 0.0 for m in extension_margins(landmarks)]


def _clear(margins: Sequence[float]) -> List[Optional[bool]]:
    """True (clearly up), False (clearly down) or None (unclear) per finger."""
    states: List[Optional[bool]] = []
    for index, margin in enumerate(margins):
        limit = THUMB_CLEAR_MARGIN if index == 0 else FINGER_CLEAR_MARGIN
        states.append(True if margin >= limit else False if margin <= -limit else None)
    return states


def thumb_points_up(points: np.ndarray, max_tilt_deg: float = THUMB_UP_MAX_TILT_DEG) -> bool:
    direction = points[THUMB_TIP, :2] - points[THUMB_MCP, :2]
    length = float(np.linalg.norm(direction))
    if length < MIN_PALM_SIZE:
        return False
    # Up the image is -y.
    return -direction[1] / length >= math.cos(math.radians(max_tilt_deg))


def is_ok_sign(points: np.ndarray, states: Sequence[Optional[bool]]) -> bool:
    touching = _dist(points[THUMB_TIP], points[INDEX_TIP]) < OK_TOUCH_FRACTION * palm_size(points)
    # Middle, ring and pinky up tell an OK from a pinch or a fist whose thumb rests on
    # the curled index.
    return touching and all(state is True for state in states[2:])


# Clear finger states [thumb, index, middle, ring, pinky] -> gesture.
_BY_FINGERS = {
    (False, True, True, False, False): "v_sign",
    (True, False, False, False, False): "thumbs_up",
    (True, True, True, True, True): "open_palm",
    (False, False, False, False, False): "fist",
    (False, True, False, False, False): "pointing",
}


def classify(landmarks: Sequence[Sequence[float]], handedness: Optional[str] = None) -> Tuple[str, float]:
    """(gesture, rule confidence); ("none", 0.0) when no rule matches clearly.

    `handedness` is accepted for symmetry with the detector's output; the rules do
    not need it (see the module docstring).
    """
    try:
        points = as_points(landmarks)
        margins = extension_margins(points)
    except ValueError:
        return NONE, 0.0
    states = _clear(margins)
    if is_ok_sign(points, states):
        return "ok_sign", RULE_CONFIDENCE["ok_sign"]
    if any(state is None for state in states):
        return NONE, 0.0
    gesture = _BY_FINGERS.get(tuple(bool(s) for s in states), NONE)
    if gesture == "thumbs_up" and not thumb_points_up(points):
        gesture = NONE
    return gesture, RULE_CONFIDENCE.get(gesture, 0.0)


def meets_gesture_confidence(confidence: float, min_gesture_confidence: float) -> bool:
    """moments.md: a gesture counts when its confidence is at least the minimum.

    The one threshold rule shared by the extractor (`gesture_detected`) and fusion
    (gesture candidates)."""
    return confidence >= min_gesture_confidence


def score_gesture(
    landmarks: Sequence[Sequence[float]],
    hand_confidence: float,
    min_gesture_confidence: float,
    handedness: Optional[str] = None,
) -> GestureResult:
    """Classify and weigh by the hand detection confidence (moments.md)."""
    gesture, rule_confidence = classify(landmarks, handedness)
    confidence = rule_confidence * float(hand_confidence)
    detected = gesture != NONE and meets_gesture_confidence(confidence, min_gesture_confidence)
    return GestureResult(gesture, rule_confidence, confidence, detected)
