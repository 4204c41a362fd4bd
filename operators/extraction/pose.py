"""Body pose per frame: MediaPipe BlazePose mapped to the 17 COCO keypoints.

The legacy BlazePose solution finds one person per image. It runs in static-image
mode, so every frame is processed on its own and any worker can take any frame.

Keypoints are (x, y, confidence) normalized to the frame; parts beyond the frame's
edge (legs below a head-and-shoulders shot) keep their position outside 0-1 and get
a low confidence. Left/right are the person's own sides, as in COCO: for a person
facing the camera the left shoulder appears on the image's right.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from facemoment.core.config import ConfigError, ExtractConfig
from facemoment.core.types import Frame, Observation, Pose
from operators.extraction.common import hand_raised, pose_observation, run_guarded  # also quietens the native logs before MediaPipe loads
from operators.extraction.mediapipe_graph import SingleGraphExtractor, build_graph, to_rgb

Keypoint = Tuple[float, float, float]

# Only the full (complexity 1) landmark model ships in the mediapipe wheel; lite (0)
# and heavy (2) would be downloaded on first use, which this deployment cannot do.
SHIPPED_MODEL_COMPLEXITY = 1

# COCO keypoint order -> BlazePose landmark index.
COCO_NAMES = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
BLAZEPOSE_FOR_COCO = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
BLAZEPOSE_LANDMARKS = 33

COCO = {name: index for index, name in enumerate(COCO_NAMES)}


def coco_keypoints(landmarks: Sequence[Any]) -> List[Keypoint]:
    """17 COCO (x, y, visibility) from 33 BlazePose landmarks (objects with x, y, visibility)."""
    if len(landmarks) < BLAZEPOSE_LANDMARKS:
        raise ValueError(f"expected {BLAZEPOSE_LANDMARKS} pose landmarks, got {len(landmarks)}")
    picked = [landmarks[i] for i in BLAZEPOSE_FOR_COCO]
    return [(float(p.x), float(p.y), float(p.visibility)) for p in picked]


def person_confidence(keypoints: Sequence[Keypoint]) -> float:
    return float(np.mean([c for _, _, c in keypoints])) if keypoints else 0.0


class PoseExtractor(SingleGraphExtractor):
    name = "pose"

    def __init__(self, cfg: ExtractConfig, model_complexity: int = SHIPPED_MODEL_COMPLEXITY) -> None:
        if model_complexity != SHIPPED_MODEL_COMPLEXITY:
            raise ConfigError(
                f"pose model_complexity {model_complexity!r} is not available offline: only "
                f"{SHIPPED_MODEL_COMPLEXITY} (the full BlazePose model) ships with mediapipe; "
                "the others would be downloaded at run time"
            )
        super().__init__(cfg)
        self.model_complexity = model_complexity

    def _build_graph(self) -> Any:
        from mediapipe.python.solutions import pose as mp_pose

        # Static-image mode: a fresh detection on every call, no tracking or
        # smoothing across frames.
        return build_graph(
            mp_pose.Pose,
            self.cfg.graph_threads,
            static_image_mode=True,
            model_complexity=self.model_complexity,
            enable_segmentation=False,
            min_detection_confidence=self.cfg.min_detection_confidence,
        )

    def extract(self, frame: Frame) -> Observation:
        poses, failed, started = run_guarded(self, frame, lambda image: self._poses(to_rgb(image)))
        if failed is not None:
            return failed
        return pose_observation(self.name, frame, started, poses)

    def _poses(self, rgb: np.ndarray) -> List[Pose]:
        result = self._graph.process(rgb)
        landmarks: Optional[Any] = result.pose_landmarks
        if landmarks is None:
            return []
        keypoints = coco_keypoints(landmarks.landmark)
        return [
            Pose(
                person_id=0,
                confidence=person_confidence(keypoints),
                keypoints=keypoints,
                hand_raised=hand_raised(keypoints),
            )
        ]
