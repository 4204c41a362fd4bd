"""Hands and their gestures per frame: MediaPipe Hands + the rules in gesture_rules.

The hands graph runs in static-image mode (palm detection on every frame, no
tracking), so every frame is processed on its own and any worker can take any frame.

Handedness: MediaPipe labels hands as if the image were mirrored (a selfie view).
Camera frames are not mirrored, so by default the label is swapped to name the
person's own hand; pass `mirrored_input=True` for mirrored sources.
"""

from __future__ import annotations

from typing import Any, List

import numpy as np

from facemoment.core.config import ConfigError, ExtractConfig, FusionConfig
from facemoment.core.types import Frame, Hand, Observation
from operators.extraction.common import frame_observation, run_guarded
from operators.extraction.gesture_rules import NONE, meets_gesture_confidence, score_gesture
from operators.extraction.mediapipe_graph import SingleGraphExtractor, build_graph, to_rgb

# Both the full (1) and the lite (0) hand landmark models ship in the mediapipe wheel.
SHIPPED_MODEL_COMPLEXITIES = (0, 1)
DEFAULT_MODEL_COMPLEXITY = 1
MAX_HANDS = 4
SWAPPED_HANDEDNESS = {"Left": "Right", "Right": "Left"}


class GestureExtractor(SingleGraphExtractor):
    name = "gesture"

    def __init__(
        self,
        cfg: ExtractConfig,
        fusion: FusionConfig,
        model_complexity: int = DEFAULT_MODEL_COMPLEXITY,
        max_hands: int = MAX_HANDS,
        mirrored_input: bool = False,
    ) -> None:
        if model_complexity not in SHIPPED_MODEL_COMPLEXITIES:
            raise ConfigError(
                f"hands model_complexity {model_complexity!r} is not available; "
                f"the mediapipe wheel ships {', '.join(map(str, SHIPPED_MODEL_COMPLEXITIES))}"
            )
        if max_hands < 1:
            raise ConfigError(f"max_hands must be at least 1, got {max_hands}")
        super().__init__(cfg)
        self.min_gesture_confidence = fusion.min_gesture_confidence
        self.model_complexity = model_complexity
        self.max_hands = max_hands
        self.mirrored_input = mirrored_input

    def _build_graph(self) -> Any:
        from mediapipe.python.solutions import hands as mp_hands

        return build_graph(
            mp_hands.Hands,
            self.cfg.graph_threads,
            static_image_mode=True,
            max_num_hands=self.max_hands,
            model_complexity=self.model_complexity,
            min_detection_confidence=self.cfg.min_detection_confidence,
        )

    def extract(self, frame: Frame) -> Observation:
        hands, failed, started = run_guarded(self, frame, self._hands)
        if failed is not None:
            return failed
        detected = any(
            h.gesture != NONE and meets_gesture_confidence(h.gesture_confidence, self.min_gesture_confidence)
            for h in hands
        )
        return frame_observation(
            self.name,
            frame,
            started,
            hands=hands,
            signals={"hand_count": float(len(hands)), "gesture_detected": 1.0 if detected else 0.0},
        )

    def _hands(self, image: np.ndarray) -> List[Hand]:
        h, w = image.shape[:2]
        result = self._graph.process(to_rgb(image))
        hands: List[Hand] = []
        for landmarks, handedness in zip(result.multi_hand_landmarks or [], result.multi_handedness or []):
            label = handedness.classification[0]
            side = label.label if self.mirrored_input else SWAPPED_HANDEDNESS.get(label.label, label.label)
            points = [(float(p.x), float(p.y), float(p.z)) for p in landmarks.landmark]
            # The rules compare distances, so they get one unit on every axis (pixels;
            # MediaPipe scales z like x).
            pixels = np.asarray(points, dtype=np.float64) * np.array([w, h, w])
            scored = score_gesture(pixels, float(label.score), self.min_gesture_confidence, side)
            hands.append(
                Hand(
                    hand_id=0,
                    confidence=float(label.score),
                    handedness=side,
                    landmarks=points,
                    gesture=scored.gesture,
                    gesture_confidence=scored.confidence,
                )
            )
        # Ids follow the image left to right, as face ids do.
        hands.sort(key=lambda hand: float(np.mean([p[0] for p in hand.landmarks])))
        for index, hand in enumerate(hands):
            hand.hand_id = index
        return hands
