"""Gesture rules on synthetic hands; the gesture extractor on the real hands model
(drawn hands, hand-free photographs, bad input) and on a stub graph (its plumbing).

The synthetic hand is a small kinematic model: a palm (wrist and four knuckles), four
three-segment fingers that flex toward the camera by a curl fraction (0 straight,
1 curled into a fist), and a three-segment thumb that folds across the palm. The
hand is built as a right hand with the palm toward the camera, then turned, mirrored
(left hands and mirrored images), scaled and placed in pixel-like units with y down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Tuple

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from facemoment.core.config import ConfigError, ExtractConfig, FusionConfig
from facemoment.core.types import Frame
from tests.conftest import BrokenGraph, astronaut_bgr
from operators.extraction.gesture import GestureExtractor
from operators.extraction.gesture_rules import (
    FINGER_CLEAR_MARGIN,
    OK_TOUCH_FRACTION,
    RULE_CONFIDENCE,
    classify,
    extension_margins,
    fingers_up,
    score_gesture,
)

# ------------------------------------------------------------ synthetic hand

# Hand-local units: palm size (wrist to middle knuckle) ~1, x toward the pinky, y
# toward the fingers, z away from the camera.
KNUCKLES = {"index": (-0.30, 0.95), "middle": (-0.05, 1.0), "ring": (0.17, 0.95), "pinky": (0.37, 0.85)}
SEGMENTS = {
    "index": (0.45, 0.27, 0.22),
    "middle": (0.50, 0.30, 0.24),
    "ring": (0.46, 0.28, 0.23),
    "pinky": (0.36, 0.21, 0.20),
}
SPLAY_DEG = {"index": -8.0, "middle": 0.0, "ring": 7.0, "pinky": 15.0}
# Joint flexion (MCP, PIP, DIP) of a finger curled into a fist.
FIST_FLEX_DEG = (85.0, 100.0, 60.0)
FINGERS = ("index", "middle", "ring", "pinky")

THUMB_CMC = (-0.20, 0.20)
THUMB_SEGMENTS = (0.35, 0.30, 0.25)
# Segment directions (degrees from the finger direction, - toward the thumb side) of
# a thumb folded across the palm.
THUMB_FOLDED_DEG = (-30.0, 30.0, 90.0)


@dataclass
class HandPose:
    curls: Dict[str, float] = field(default_factory=lambda: {f: 0.0 for f in FINGERS})
    thumb_fold: float = 0.0  # 0 out-stretched, 1 folded across the palm
    thumb_spread_deg: float = -40.0  # direction of the out-stretched thumb
    pinch_gap: Optional[float] = None  # put the thumb tip this far (palm sizes) from the index tip


def pose(
    up: str = "",
    thumb: bool = False,
    half: str = "",
    thumb_spread_deg: float = -40.0,
    pinch_gap: Optional[float] = None,
) -> HandPose:
    """Fingers named in `up` straight, in `half` half curled, the rest curled."""
    curls = {f: 0.0 if f in up else 0.5 if f in half else 1.0 for f in FINGERS}
    return HandPose(curls, 0.0 if thumb else 1.0, thumb_spread_deg, pinch_gap)


def _chain(start: np.ndarray, directions: List[np.ndarray], lengths: Tuple[float, ...]) -> List[np.ndarray]:
    points, current = [], start
    for direction, length in zip(directions, lengths):
        current = current + length * direction / np.linalg.norm(direction)
        points.append(current)
    return points


def _finger(name: str, curl: float) -> List[np.ndarray]:
    theta = math.radians(SPLAY_DEG[name])
    along = np.array([math.sin(theta), math.cos(theta), 0.0])
    toward_camera = np.array([0.0, 0.0, -1.0])
    directions, flex = [], 0.0
    for joint in FIST_FLEX_DEG:
        flex += math.radians(joint * curl)
        directions.append(math.cos(flex) * along + math.sin(flex) * toward_camera)
    knuckle = np.array([*KNUCKLES[name], 0.0])
    return [knuckle] + _chain(knuckle, directions, SEGMENTS[name])


def _thumb(hand: HandPose) -> List[np.ndarray]:
    directions = []
    for folded in THUMB_FOLDED_DEG:
        phi = math.radians(hand.thumb_spread_deg + hand.thumb_fold * (folded - hand.thumb_spread_deg))
        directions.append(np.array([math.sin(phi), math.cos(phi), -0.3 * hand.thumb_fold]))
    cmc = np.array([*THUMB_CMC, 0.0])
    return [cmc] + _chain(cmc, directions, THUMB_SEGMENTS)


def hand_landmarks(
    hand: HandPose,
    handedness: str = "Right",
    mirrored: bool = False,
    roll_deg: float = 0.0,
    yaw_deg: float = 0.0,
    scale: float = 100.0,
    origin: Tuple[float, float] = (320.0, 300.0),
    noise: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """21 landmarks (x, y, z) in image units, y down.

    In this order: roll_deg turns the right hand clockwise on screen; a left hand, or
    a mirrored image, flips x (both together cancel out); yaw_deg turns the hand about
    the image's vertical axis. None of them changes which way is up.
    """
    fingers = {name: _finger(name, hand.curls[name]) for name in FINGERS}
    thumb = _thumb(hand)
    if hand.pinch_gap is not None:
        tip = fingers["index"][3]
        base = thumb[1]
        away = (base - tip) / np.linalg.norm(base - tip)
        thumb[3] = tip + hand.pinch_gap * away
        thumb[2] = base + 0.55 * (thumb[3] - base) + np.array([-0.08, 0.0, 0.0])
    local = [np.zeros(3)] + thumb
    for name in FINGERS:
        local += fingers[name]
    pts = np.array(local)
    pts[:, 1] *= -1.0  # y down
    roll = math.radians(roll_deg)
    c, s = math.cos(roll), math.sin(roll)
    pts = np.column_stack([pts[:, :2] @ np.array([[c, s], [-s, c]]), pts[:, 2]])
    if (handedness == "Left") != mirrored:
        pts[:, 0] *= -1.0
    yaw = math.radians(yaw_deg)
    cy, sy = math.cos(yaw), math.sin(yaw)
    pts = pts @ np.array([[cy, 0.0, -sy], [0.0, 1.0, 0.0], [sy, 0.0, cy]])
    if noise:
        pts = pts + np.random.default_rng(seed).normal(0.0, noise, pts.shape)
    return pts * scale + np.array([origin[0], origin[1], 0.0])


# Every hand and image variant a rule must hold for.
VARIANTS = [
    {"handedness": "Right"},
    {"handedness": "Left"},
    {"handedness": "Right", "mirrored": True},
    {"handedness": "Left", "mirrored": True},
    {"handedness": "Right", "roll_deg": 25.0},
    {"handedness": "Left", "roll_deg": -25.0, "yaw_deg": 40.0},
    {"handedness": "Right", "yaw_deg": 180.0},  # back of the hand toward the camera
]
VARIANT_IDS = ["right", "left", "right-mirrored", "left-mirrored", "rolled", "left-rolled-turned", "back"]

THUMBS_UP = pose(thumb=True, thumb_spread_deg=-85.0)
# The out-stretched thumb (spread -85 degrees) points up after this clockwise turn.
THUMBS_UP_ROLL = 85.0

GESTURES = {
    "v_sign": pose("index middle"),
    "open_palm": pose("index middle ring pinky", thumb=True),
    "fist": pose(),
    "pointing": pose("index"),
    "ok_sign": pose("middle ring pinky", half="index", thumb=True, pinch_gap=0.12),
}


def test_synthetic_hand_matches_the_model_it_claims() -> None:
    """The generator itself: straight fingers are long, curled ones end in the palm."""
    pts = hand_landmarks(pose("index"), scale=1.0, origin=(0.0, 0.0))
    assert pts.shape == (21, 3)
    assert np.linalg.norm(pts[9] - pts[0]) == pytest.approx(1.0, abs=0.01)  # palm size
    assert pts[8, 1] < pts[6, 1] < pts[5, 1] < 0.0  # straight index: tip highest (y down)
    assert np.linalg.norm(pts[12] - pts[0]) < np.linalg.norm(pts[9] - pts[0])  # curled middle tip in the palm
    left = hand_landmarks(pose("index"), handedness="Left", scale=1.0, origin=(0.0, 0.0))
    assert np.allclose(left[:, 0], -pts[:, 0]) and np.allclose(left[:, 1:], pts[:, 1:])


# ------------------------------------------------------------ fingers_up


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize(
    "hand, expected",
    [
        (pose("index middle"), [False, True, True, False, False]),
        (pose("index middle ring pinky", thumb=True), [True] * 5),
        (pose(), [False] * 5),
        (pose("pinky", thumb=True), [True, False, False, False, True]),
        (pose("ring"), [False, False, False, True, False]),
    ],
    ids=["v", "all", "none", "thumb-pinky", "ring"],
)
def test_fingers_up_for_every_hand_and_view(hand: HandPose, expected: List[bool], variant: dict) -> None:
    landmarks = hand_landmarks(hand, **variant)
    assert fingers_up(landmarks, variant["handedness"]) == expected


def test_fingers_up_ignores_the_handedness_label() -> None:
    landmarks = hand_landmarks(pose("index", thumb=True))
    expected = [True, True, False, False, False]
    assert fingers_up(landmarks, "Left") == fingers_up(landmarks, "Right") == expected


def test_fingers_up_works_on_xy_only_and_on_normalized_units() -> None:
    landmarks = hand_landmarks(pose("index middle"), scale=0.1, origin=(0.5, 0.5))
    assert fingers_up(landmarks[:, :2]) == [False, True, True, False, False]
    assert fingers_up(landmarks) == [False, True, True, False, False]


@pytest.mark.parametrize(
    "bad",
    [np.zeros((20, 3)), np.zeros((21, 4)), np.full((21, 3), np.nan), np.zeros((21, 3))],
    ids=["20-points", "4-coords", "nan", "degenerate"],
)
def test_fingers_up_refuses_malformed_landmarks(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        fingers_up(bad)
    assert classify(bad) == ("none", 0.0)


# ------------------------------------------------------------ classify


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("gesture", sorted(GESTURES))
def test_every_gesture_in_every_view(gesture: str, variant: dict) -> None:
    landmarks = hand_landmarks(GESTURES[gesture], **variant)
    assert classify(landmarks, variant["handedness"]) == (gesture, RULE_CONFIDENCE[gesture])


@pytest.mark.parametrize("handedness", ["Right", "Left"])
@pytest.mark.parametrize("mirrored", [False, True])
@pytest.mark.parametrize("yaw_deg", [0.0, 60.0, 180.0])
def test_thumbs_up(handedness: str, mirrored: bool, yaw_deg: float) -> None:
    landmarks = hand_landmarks(THUMBS_UP, handedness, mirrored, roll_deg=THUMBS_UP_ROLL, yaw_deg=yaw_deg)
    assert landmarks[4, 1] < landmarks[2, 1], "generator: the thumb tip must be above its knuckle"
    assert classify(landmarks, handedness) == ("thumbs_up", RULE_CONFIDENCE["thumbs_up"])


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_gestures_survive_landmark_noise(variant: dict) -> None:
    """Jitter of 3% of the palm size per coordinate (3 px on a 100 px palm) may cost a
    gesture now and then ("none"), but never turns it into another gesture."""
    for gesture, hand in GESTURES.items():
        found = [classify(hand_landmarks(hand, noise=0.03, seed=seed, **variant))[0] for seed in range(100)]
        assert set(found) <= {gesture, "none"}, (gesture, set(found))
        assert found.count(gesture) >= 90, (gesture, found.count(gesture))


NEAR_MISSES = {
    "v-ring-half-raised": (pose("index middle", half="ring"), "v_sign"),
    "v-thumb-out": (pose("index middle", thumb=True), "v_sign"),
    "v-middle-half": (pose("index", half="middle"), "v_sign"),
    "pointing-middle-half": (pose("index", half="middle"), "pointing"),
    "fist-index-half": (pose(half="index"), "fist"),
    "open-palm-ring-half": (pose("index middle pinky", half="ring", thumb=True), "open_palm"),
    "open-palm-thumb-folded": (pose("index middle ring pinky"), "open_palm"),
    "ok-gap": (pose("middle ring pinky", half="index", thumb=True, pinch_gap=0.45), "ok_sign"),
    "ok-just-apart": (
        pose("middle ring pinky", half="index", thumb=True, pinch_gap=OK_TOUCH_FRACTION + 0.05),
        "ok_sign",
    ),
    "pinch-middle-curled": (pose("ring pinky", half="index", thumb=True, pinch_gap=0.12), "ok_sign"),
}


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("case", sorted(NEAR_MISSES))
def test_near_misses_are_not_the_gesture(case: str, variant: dict) -> None:
    hand, not_expected = NEAR_MISSES[case]
    gesture, confidence = classify(hand_landmarks(hand, **variant))
    assert gesture != not_expected
    assert confidence == RULE_CONFIDENCE.get(gesture, 0.0)


def test_half_raised_finger_is_unclear_not_down() -> None:
    margins = extension_margins(hand_landmarks(pose("index middle", half="ring")))
    assert abs(margins[3]) < FINGER_CLEAR_MARGIN
    assert margins[1] > FINGER_CLEAR_MARGIN and margins[4] < -FINGER_CLEAR_MARGIN


@pytest.mark.parametrize("handedness", ["Right", "Left"])
def test_thumbs_up_needs_the_thumb_alone_and_pointing_up(handedness: str) -> None:
    roll = THUMBS_UP_ROLL
    with_index = replace(THUMBS_UP, curls={**THUMBS_UP.curls, "index": 0.0})
    assert classify(hand_landmarks(with_index, handedness, roll_deg=roll))[0] != "thumbs_up"
    # Thumb pointing down, and sideways: the thumb alone is up, yet not a thumbs up.
    down = hand_landmarks(THUMBS_UP, handedness, roll_deg=roll + 180.0)
    sideways = hand_landmarks(THUMBS_UP, handedness, roll_deg=roll + 90.0)
    for landmarks in (down, sideways):
        assert fingers_up(landmarks) == [True, False, False, False, False]
        assert classify(landmarks) == ("none", 0.0)


# ------------------------------------------------------------ confidence


def test_confidence_is_rule_times_hand_confidence_and_thresholded() -> None:
    landmarks = hand_landmarks(GESTURES["v_sign"])
    strong = score_gesture(landmarks, hand_confidence=0.95, min_gesture_confidence=0.5)
    assert strong.gesture == "v_sign"
    assert strong.rule_confidence == 0.9
    assert strong.confidence == pytest.approx(0.9 * 0.95)
    assert strong.detected
    weak = score_gesture(landmarks, hand_confidence=0.5, min_gesture_confidence=0.5)
    assert weak.confidence == pytest.approx(0.45) and not weak.detected
    # Exactly at the threshold counts as detected.
    edge = score_gesture(landmarks, hand_confidence=0.5 / 0.9, min_gesture_confidence=0.5)
    assert edge.confidence == pytest.approx(0.5) and edge.detected
    raised = score_gesture(landmarks, hand_confidence=0.95, min_gesture_confidence=0.9)
    assert not raised.detected


def test_no_gesture_is_never_detected() -> None:
    result = score_gesture(hand_landmarks(pose("index middle", half="ring")), 1.0, 0.0)
    assert (result.gesture, result.confidence, result.detected) == ("none", 0.0, False)


# ------------------------------------------------------------ extractor, real hands model

SKIN_BGR = (110, 150, 210)
BACKGROUND = 150


def render_hand(landmarks: np.ndarray, scale: float, seed: int = 0) -> np.ndarray:
    """A flat-shaded drawing of a hand and forearm (640x480 BGR) over grey.

    Enough of a hand for the palm detector when the fingers are spread; curled
    fingers drawn flat over the palm do not read as a fist to the landmark model.
    """
    img = np.full((480, 640, 3), BACKGROUND, np.uint8)
    p = landmarks[:, :2]
    up = (p[9] - p[0]) / np.linalg.norm(p[9] - p[0])
    side = np.array([-up[1], up[0]])
    wrist_a, wrist_b = p[0] + 0.38 * scale * side, p[0] - 0.38 * scale * side
    pinky_edge, index_edge = p[17] + 0.1 * scale * side, p[5] - 0.1 * scale * side
    palm = np.array([wrist_a, pinky_edge, p[13], p[9], p[5], index_edge, p[2], p[1], wrist_b])
    cv2.fillPoly(img, [cv2.convexHull(palm.astype(np.int32))], SKIN_BGR)
    forearm = np.array([wrist_a, wrist_b, wrist_b - 2 * scale * up, wrist_a - 2 * scale * up])
    cv2.fillPoly(img, [forearm.astype(np.int32)], SKIN_BGR)
    chains = ([1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16], [17, 18, 19, 20])
    for chain, width in zip(chains, (0.26, 0.2, 0.21, 0.19, 0.17)):
        thickness = int(width * scale)
        for a, b in zip(chain, chain[1:]):
            cv2.line(img, tuple(p[a].astype(int)), tuple(p[b].astype(int)), SKIN_BGR, thickness, cv2.LINE_AA)
            cv2.circle(img, tuple(p[b].astype(int)), thickness // 2, SKIN_BGR, -1, cv2.LINE_AA)
        for joint in chain[1:-1]:  # knuckle creases
            cv2.circle(img, tuple(p[joint].astype(int)), 2, (80, 110, 170), -1)
    img = cv2.GaussianBlur(img, (7, 7), 0)
    grain = np.random.default_rng(seed).normal(0.0, 4.0, img.shape)
    return np.clip(img + grain, 0, 255).astype(np.uint8)


def frame_of(image: object, frame_id: int = 7) -> Frame:
    # Bad images on purpose in some tests, hence no type check on `image`.
    t_ns = 123_000_000 + frame_id
    return Frame(stream_id="cam0", frame_id=frame_id, t_src_ns=t_ns, image=image)  # type: ignore


@pytest.fixture(scope="module")
def extractor() -> Any:
    ex = GestureExtractor(ExtractConfig(), FusionConfig())
    yield ex
    ex.close()


def test_drawn_open_palms_are_found_and_read_as_open_palm(extractor: GestureExtractor) -> None:
    found = 0
    renders = [(scale, roll) for scale in (70, 80, 90, 100, 110) for roll in (-20.0, 0.0, 20.0)]
    for seed, (scale, roll) in enumerate(renders):
        drawn = hand_landmarks(GESTURES["open_palm"], scale=scale, origin=(320.0, 300.0), roll_deg=roll)
        obs = extractor.extract(frame_of(render_hand(drawn, scale, seed)))
        assert obs.error is None
        assert obs.signals["hand_count"] == len(obs.hands) <= 1
        if not obs.hands:
            continue
        found += 1
        hand = obs.hands[0]
        assert hand.hand_id == 0 and hand.handedness in ("Left", "Right")
        assert len(hand.landmarks) == 21 and all(len(p) == 3 for p in hand.landmarks)
        located = np.array(hand.landmarks)[:, :2] * np.array([640.0, 480.0])
        mean_error = float(np.linalg.norm(located - drawn[:, :2], axis=1).mean())
        assert mean_error < 0.25 * scale, f"landmarks {mean_error:.1f} px from the drawing"
        assert hand.gesture == "open_palm"
        assert hand.gesture_confidence == pytest.approx(0.85 * hand.confidence)
        assert obs.signals["gesture_detected"] == (1.0 if hand.gesture_confidence >= 0.5 else 0.0)
    # A drawing is not a photograph: the palm detector misses the odd one (1 of 15 here).
    assert found >= 10, f"the hands model found only {found} of {len(renders)} drawn hands"


@pytest.mark.parametrize("model_complexity", [0, 1])
@pytest.mark.parametrize("image_name", ["astronaut", "astronaut-640x480", "astronaut-grey", "coffee", "cat"])
def test_no_hand_on_hand_free_images(image_name: str, model_complexity: int) -> None:
    images = {
        "astronaut": astronaut_bgr,
        "astronaut-640x480": lambda: cv2.resize(astronaut_bgr(), (640, 480)),
        "astronaut-grey": lambda: cv2.cvtColor(astronaut_bgr(), cv2.COLOR_BGR2GRAY),
        "coffee": lambda: cv2.cvtColor(skdata.coffee(), cv2.COLOR_RGB2BGR),
        "cat": lambda: cv2.cvtColor(skdata.chelsea(), cv2.COLOR_RGB2BGR),
    }
    ex = GestureExtractor(ExtractConfig(), FusionConfig(), model_complexity=model_complexity)
    try:
        obs = ex.extract(frame_of(images[image_name]()))
    finally:
        ex.close()
    assert obs.error is None
    assert (obs.source, obs.stream_id, obs.frame_id, obs.t_ns) == ("gesture", "cam0", 7, 123_000_007)
    assert obs.hands == []
    assert obs.signals == {"hand_count": 0.0, "gesture_detected": 0.0}
    assert obs.processing_ms > 0.0


@pytest.mark.parametrize(
    "image",
    [
        None,
        "not an image",
        np.zeros((48, 64, 3), np.float32),
        np.zeros((48, 64, 4), np.uint8),
        np.zeros((0, 64, 3), np.uint8),
    ],
    ids=["none", "string", "float", "four-channels", "empty"],
)
def test_bad_input_gives_an_error_observation(extractor: GestureExtractor, image: object) -> None:
    obs = extractor.extract(frame_of(image))
    assert obs.source == "gesture" and obs.frame_id == 7
    assert obs.error and obs.hands == []


def test_frame_without_fields_gives_an_error_observation(extractor: GestureExtractor) -> None:
    obs = extractor.extract(object())  # type: ignore[arg-type]
    assert obs.error and obs.source == "gesture"


def test_failing_graph_gives_an_error_observation() -> None:
    ex = GestureExtractor(ExtractConfig(), FusionConfig())
    ex._graph = BrokenGraph("graph exploded")
    obs = ex.extract(frame_of(astronaut_bgr()))
    assert obs.error is not None and "graph exploded" in obs.error


@pytest.mark.parametrize("model_complexity", [-1, 2])
def test_refuses_models_that_do_not_ship(model_complexity: int) -> None:
    with pytest.raises(ConfigError, match="model_complexity"):
        GestureExtractor(ExtractConfig(), FusionConfig(), model_complexity=model_complexity)


# ------------------------------------------------------------ extractor plumbing (stub graph)


def _stub_result(hands: List[Tuple[np.ndarray, str, float]]) -> Any:
    """A MediaPipe-like result for normalized landmarks with their handedness label and score."""
    NS = SimpleNamespace
    landmarks = [NS(landmark=[NS(x=x, y=y, z=z) for x, y, z in lm]) for lm, _, _ in hands]
    handedness = [NS(classification=[NS(label=label, score=score)]) for _, label, score in hands]
    return NS(multi_hand_landmarks=landmarks or None, multi_handedness=handedness or None)


class StubGraph:
    def __init__(self, result: Any) -> None:
        self.result = result
        self.seen: List[np.ndarray] = []

    def process(self, image: np.ndarray) -> Any:
        self.seen.append(image)
        return self.result

    def close(self) -> None:
        pass


def _normalized(landmarks: np.ndarray, width: int = 640, height: int = 480) -> np.ndarray:
    return landmarks / np.array([width, height, width])


def test_extractor_turns_model_output_into_hands() -> None:
    """Ids left to right, handedness named for the person (MediaPipe assumes a mirrored
    view), gesture confidence = rule x hand confidence, threshold from FusionConfig."""
    v_sign = _normalized(hand_landmarks(GESTURES["v_sign"], scale=60, origin=(480, 300)))
    fist = _normalized(hand_landmarks(GESTURES["fist"], "Left", scale=60, origin=(160, 300)))
    graph = StubGraph(_stub_result([(v_sign, "Left", 0.9), (fist, "Right", 0.55)]))
    ex = GestureExtractor(ExtractConfig(), FusionConfig(min_gesture_confidence=0.6))
    ex._graph = graph
    image = np.zeros((480, 640, 3), np.uint8)
    image[..., 0] = 255  # blue in BGR
    obs = ex.extract(frame_of(image))
    assert obs.error is None
    assert graph.seen[0][0, 0].tolist() == [0, 0, 255], "the model must get RGB"
    first, second = obs.hands
    assert (first.hand_id, first.handedness, first.gesture) == (0, "Left", "fist")
    assert first.confidence == pytest.approx(0.55)
    assert first.gesture_confidence == pytest.approx(0.85 * 0.55)
    assert (second.hand_id, second.handedness, second.gesture) == (1, "Right", "v_sign")
    assert second.gesture_confidence == pytest.approx(0.9 * 0.9)
    assert np.allclose(second.landmarks, v_sign)
    assert obs.signals == {"hand_count": 2.0, "gesture_detected": 1.0}


def test_gesture_detected_needs_the_threshold() -> None:
    v_sign = _normalized(hand_landmarks(GESTURES["v_sign"], scale=60, origin=(320, 300)))
    ex = GestureExtractor(ExtractConfig(), FusionConfig(min_gesture_confidence=0.5))
    ex._graph = StubGraph(_stub_result([(v_sign, "Right", 0.5)]))
    obs = ex.extract(frame_of(np.zeros((480, 640, 3), np.uint8)))
    assert obs.hands[0].gesture == "v_sign" and obs.hands[0].gesture_confidence == pytest.approx(0.45)
    assert obs.signals["gesture_detected"] == 0.0
    ex.min_gesture_confidence = 0.4
    assert ex.extract(frame_of(np.zeros((480, 640, 3), np.uint8))).signals["gesture_detected"] == 1.0


def test_mirrored_input_keeps_mediapipe_handedness() -> None:
    v_sign = _normalized(hand_landmarks(GESTURES["v_sign"], scale=60, origin=(320, 300)))
    ex = GestureExtractor(ExtractConfig(), FusionConfig(), mirrored_input=True)
    ex._graph = StubGraph(_stub_result([(v_sign, "Left", 0.9)]))
    assert ex.extract(frame_of(np.zeros((480, 640, 3), np.uint8))).hands[0].handedness == "Left"


def test_rules_see_pixels_not_stretched_normalized_units() -> None:
    """A hand drawn in pixels of a wide frame keeps its gesture once normalized: the
    extractor must undo the different x and y scales before applying the rules."""
    wide = (1280, 360)
    drawn = hand_landmarks(GESTURES["v_sign"], scale=60, origin=(640, 200))
    normalized = _normalized(drawn, *wide)
    assert classify(normalized)[0] != "v_sign", "test premise: the stretched hand reads differently"
    ex = GestureExtractor(ExtractConfig(), FusionConfig())
    ex._graph = StubGraph(_stub_result([(normalized, "Right", 0.9)]))
    obs = ex.extract(frame_of(np.zeros((wide[1], wide[0], 3), np.uint8)))
    assert obs.hands[0].gesture == "v_sign"
