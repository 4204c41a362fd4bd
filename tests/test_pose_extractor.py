"""Pose extractor: BlazePose (the model shipped with mediapipe) on packaged images,
the COCO mapping, the hand-raised rule and failure handling."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, List, Tuple

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from facemoment.core.config import ConfigError, ExtractConfig
from facemoment.core.types import Frame
from tests.conftest import BrokenGraph, astronaut_bgr
from operators.extraction.pose import (
    BLAZEPOSE_FOR_COCO,
    COCO,
    COCO_NAMES,
    PoseExtractor,
    coco_keypoints,
    hand_raised,
    person_confidence,
)

# The astronaut's face (normalized x, y, w, h in the 512x512 image), measured with
# MediaPipe face detection: (0.339, 0.132, 0.203, 0.203).
FACE_BOX = (0.339, 0.132, 0.203, 0.203)
# The cameraman's head in skimage's camera image, read off the image.
CAMERAMAN_HEAD = (0.33, 0.13, 0.20, 0.27)


def frame_of(image: object, frame_id: int = 3) -> Frame:
    # Bad images on purpose in some tests, hence no type check on `image`.
    t_ns = 5_000_000_000 + frame_id
    return Frame(stream_id="cam1", frame_id=frame_id, t_src_ns=t_ns, image=image)  # type: ignore


def keypoint(obs: Any, name: str) -> Tuple[float, float, float]:
    return obs.poses[0].keypoints[COCO[name]]


def inside(point: Tuple[float, float, float], box: Tuple[float, float, float, float]) -> bool:
    x, y, w, h = box
    return x <= point[0] <= x + w and y <= point[1] <= y + h


@pytest.fixture(scope="module")
def extractor() -> Any:
    ex = PoseExtractor(ExtractConfig())
    yield ex
    ex.close()


@pytest.fixture(scope="module")
def astronaut(extractor: PoseExtractor) -> Any:
    return extractor.extract(frame_of(astronaut_bgr()))


# ------------------------------------------------------------ real model, real images


def test_astronaut_is_one_person_with_coco_keypoints(astronaut: Any) -> None:
    assert astronaut.error is None
    assert (astronaut.source, astronaut.stream_id, astronaut.frame_id, astronaut.t_ns) == (
        "pose",
        "cam1",
        3,
        5_000_000_003,
    )
    assert len(astronaut.poses) == 1
    person = astronaut.poses[0]
    assert person.person_id == 0
    assert len(person.keypoints) == 17 and all(len(k) == 3 for k in person.keypoints)
    assert all(0.0 <= c <= 1.0 for _, _, c in person.keypoints)
    assert person.confidence == pytest.approx(np.mean([c for _, _, c in person.keypoints]))
    assert astronaut.signals["pose_count"] == 1.0
    assert astronaut.processing_ms > 0.0


def test_astronaut_head_lies_in_the_face(astronaut: Any) -> None:
    for name in ("nose", "left_eye", "right_eye"):
        point = keypoint(astronaut, name)
        assert inside(point, FACE_BOX), (name, point)
        assert point[2] >= 0.9, (name, point)
    # Eyes above the nose; the person's left eye on the image's right.
    nose, left_eye, right_eye = (keypoint(astronaut, n) for n in ("nose", "left_eye", "right_eye"))
    assert left_eye[1] < nose[1] and right_eye[1] < nose[1]
    assert right_eye[0] < nose[0] < left_eye[0]


def test_astronaut_shoulders_lie_below_and_beside_the_face(astronaut: Any) -> None:
    x, y, w, h = FACE_BOX
    left, right = keypoint(astronaut, "left_shoulder"), keypoint(astronaut, "right_shoulder")
    assert left[2] >= 0.9 and right[2] >= 0.9
    assert left[1] > y + h and right[1] > y + h
    # Facing the camera: the person's left shoulder is on the image's right.
    assert left[0] > x + w and right[0] < x


def test_astronaut_arms_are_not_raised(astronaut: Any) -> None:
    assert astronaut.poses[0].hand_raised is False
    assert astronaut.signals["hand_raised"] == 0.0


def test_left_and_right_follow_the_body_not_the_image(extractor: PoseExtractor, astronaut: Any) -> None:
    """A mirrored photo of someone facing the camera still shows someone facing the
    camera: the left shoulder stays on the image's right, at the mirrored position of
    the original right shoulder."""
    obs = extractor.extract(frame_of(np.ascontiguousarray(astronaut_bgr()[:, ::-1])))
    for side, other in (("left", "right"), ("right", "left")):
        for part in ("shoulder", "eye", "ear"):
            mirrored = keypoint(obs, f"{side}_{part}")
            original = keypoint(astronaut, f"{other}_{part}")
            assert mirrored[0] == pytest.approx(1.0 - original[0], abs=0.04), (side, part)
            assert mirrored[1] == pytest.approx(original[1], abs=0.04), (side, part)
    assert keypoint(obs, "right_shoulder")[0] < keypoint(obs, "nose")[0] < keypoint(obs, "left_shoulder")[0]


def letterbox(image: np.ndarray, size: Tuple[int, int] = (640, 480)) -> np.ndarray:
    """`image` (square) scaled to the frame height and centred between black bars."""
    width, height = size
    out = np.zeros((height, width) + image.shape[2:], np.uint8)
    left = (width - height) // 2
    scaled = cv2.resize(image, (height, height)).reshape((height, height) + image.shape[2:])
    out[:, left : left + height] = scaled
    return out


@pytest.mark.parametrize("channels", ["bgr", "grey", "grey-1ch"])
def test_640x480_frames_in_colour_and_grey(extractor: PoseExtractor, channels: str) -> None:
    image = astronaut_bgr()
    if channels != "bgr":
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if channels == "grey-1ch":
            image = image[:, :, None]
    obs = extractor.extract(frame_of(letterbox(image)))
    assert obs.error is None and len(obs.poses) == 1
    x, y, w, h = FACE_BOX
    face_in_frame = ((80 + x * 480) / 640, y, w * 480 / 640, h)
    nose = keypoint(obs, "nose")
    assert inside(nose, face_in_frame) and nose[2] >= 0.9


def test_a_second_person_side_on_in_grey(extractor: PoseExtractor) -> None:
    """The cameraman, side-on and leaning toward his camera (image right), in grey."""
    obs = extractor.extract(frame_of(skdata.camera()))
    assert obs.error is None and len(obs.poses) == 1
    nose, shoulder = keypoint(obs, "nose"), keypoint(obs, "right_shoulder")
    assert inside(nose, CAMERAMAN_HEAD) and nose[2] >= 0.9
    assert shoulder[2] >= 0.9 and shoulder[0] < nose[0] - 0.1


def test_no_person_no_pose_and_no_memory_of_earlier_frames(extractor: PoseExtractor, astronaut: Any) -> None:
    """Static-image mode: a frame without a person right after one with a person
    reports nobody, and the person comes back identical afterwards."""
    coffee = extractor.extract(frame_of(cv2.cvtColor(skdata.coffee(), cv2.COLOR_RGB2BGR)))
    assert coffee.error is None
    assert coffee.poses == []
    assert coffee.signals == {"pose_count": 0.0, "hand_raised": 0.0}
    again = extractor.extract(frame_of(astronaut_bgr()))
    assert again.poses[0].keypoints == astronaut.poses[0].keypoints


def test_close_then_extract_rebuilds_the_graph() -> None:
    ex = PoseExtractor(ExtractConfig())
    ex.close()  # closing an unused extractor is harmless
    first = ex.extract(frame_of(astronaut_bgr()))
    ex.close()
    second = ex.extract(frame_of(astronaut_bgr()))
    ex.close()
    assert first.error is None and second.error is None
    assert first.poses[0].keypoints == second.poses[0].keypoints


# ------------------------------------------------------------ configuration and failures


@pytest.mark.parametrize("model_complexity", [0, 2])
def test_refuses_pose_models_that_would_be_downloaded(model_complexity: int) -> None:
    with pytest.raises(ConfigError, match="model_complexity"):
        PoseExtractor(ExtractConfig(), model_complexity=model_complexity)


def test_refuses_a_detection_confidence_outside_0_1() -> None:
    with pytest.raises(ConfigError, match="min_detection_confidence"):
        PoseExtractor(ExtractConfig(min_detection_confidence=1.5))


@pytest.mark.parametrize(
    "image",
    [
        None,
        [[1, 2], [3, 4]],
        np.zeros((48, 64), np.int32),
        np.zeros((48, 64, 2), np.uint8),
        np.zeros((48, 0), np.uint8),
    ],
    ids=["none", "list", "int32", "two-channels", "empty"],
)
def test_bad_input_gives_an_error_observation(extractor: PoseExtractor, image: object) -> None:
    obs = extractor.extract(frame_of(image))
    assert obs.source == "pose" and obs.stream_id == "cam1" and obs.frame_id == 3
    assert obs.error and obs.poses == []


def test_frame_without_fields_gives_an_error_observation(extractor: PoseExtractor) -> None:
    obs = extractor.extract(SimpleNamespace())  # type: ignore[arg-type]
    assert obs.error and obs.source == "pose"


def test_failing_graph_gives_an_error_observation() -> None:
    ex = PoseExtractor(ExtractConfig())
    ex._graph = BrokenGraph("pose graph exploded")
    obs = ex.extract(frame_of(astronaut_bgr()))
    assert obs.error is not None and "pose graph exploded" in obs.error


# ------------------------------------------------------------ mapping and rules


def _landmarks(count: int = 33) -> List[SimpleNamespace]:
    # Each landmark encodes its own index so the mapping can be read back.
    return [SimpleNamespace(x=i / 100.0, y=i / 50.0, visibility=i / 33.0) for i in range(count)]


def test_coco_mapping_takes_the_blazepose_landmark_of_each_name() -> None:
    keypoints = coco_keypoints(_landmarks())
    expected = {
        "nose": 0, "left_eye": 2, "right_eye": 5, "left_ear": 7, "right_ear": 8,
        "left_shoulder": 11, "right_shoulder": 12, "left_elbow": 13, "right_elbow": 14,
        "left_wrist": 15, "right_wrist": 16, "left_hip": 23, "right_hip": 24,
        "left_knee": 25, "right_knee": 26, "left_ankle": 27, "right_ankle": 28,
    }  # fmt: skip
    assert list(COCO_NAMES) == list(expected)  # COCO order
    for name, blazepose in expected.items():
        assert keypoints[COCO[name]] == pytest.approx((blazepose / 100.0, blazepose / 50.0, blazepose / 33.0))
    assert len(BLAZEPOSE_FOR_COCO) == 17


def test_coco_mapping_refuses_short_landmark_lists() -> None:
    with pytest.raises(ValueError, match="33"):
        coco_keypoints(_landmarks(25))


def _arms(
    left_wrist: Tuple[float, float, float],
    right_wrist: Tuple[float, float, float],
    shoulders_y: float = 0.5,
    shoulder_conf: float = 0.9,
) -> List[Tuple[float, float, float]]:
    kps = [(0.5, 0.5, 0.9)] * 17
    kps[COCO["left_shoulder"]] = (0.6, shoulders_y, shoulder_conf)
    kps[COCO["right_shoulder"]] = (0.4, shoulders_y, shoulder_conf)
    kps[COCO["left_wrist"]] = left_wrist
    kps[COCO["right_wrist"]] = right_wrist
    return kps


@pytest.mark.parametrize(
    "kps, raised",
    [
        (_arms((0.7, 0.3, 0.9), (0.3, 0.8, 0.9)), True),  # left wrist up
        (_arms((0.7, 0.8, 0.9), (0.3, 0.2, 0.6)), True),  # right wrist up
        (_arms((0.7, 0.8, 0.9), (0.3, 0.8, 0.9)), False),  # both down
        (_arms((0.7, 0.5, 0.9), (0.3, 0.5, 0.9)), False),  # level with the shoulders is not above
        (_arms((0.7, 0.3, 0.49), (0.3, 0.8, 0.9)), False),  # wrist up but unsure
        (_arms((0.7, 0.3, 0.5), (0.3, 0.8, 0.9)), True),  # exactly at the confidence limit
        (_arms((0.7, 0.3, 0.9), (0.3, 0.3, 0.9), shoulder_conf=0.3), False),  # shoulders unsure
    ],
    ids=["left", "right", "down", "level", "unsure-wrist", "limit", "unsure-shoulder"],
)
def test_hand_raised_rule(kps: List[Tuple[float, float, float]], raised: bool) -> None:
    assert hand_raised(kps) is raised


def test_hand_raised_compares_each_wrist_with_its_own_shoulder() -> None:
    kps = _arms((0.7, 0.45, 0.9), (0.3, 0.8, 0.9))
    kps[COCO["left_shoulder"]] = (0.6, 0.4, 0.9)  # left shoulder higher than the left wrist
    kps[COCO["right_shoulder"]] = (0.4, 0.5, 0.9)  # right shoulder lower than the left wrist
    assert hand_raised(kps) is False


def test_person_confidence_is_the_mean_keypoint_confidence() -> None:
    kps = [(0.0, 0.0, c) for c in np.linspace(0.0, 1.0, 17)]
    assert person_confidence(kps) == pytest.approx(0.5)
    assert person_confidence([]) == 0.0
