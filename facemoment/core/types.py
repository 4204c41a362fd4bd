"""Values that flow between the dataflow's steps.

Everything here is a plain dataclass so it pickles cheaply when Bytewax moves it
between workers. Only `Frame` carries pixels; everything after extraction is small.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from facemoment.core.records import Record


@dataclass(frozen=True)
class Frame:
    """One decoded video frame of one stream, stamped in the source's time base."""

    stream_id: str
    frame_id: int
    t_src_ns: int
    image: np.ndarray  # uint8, (h, w, 3) BGR or (h, w) grey; what the extractors analyse
    # The frame at its recorded resolution when `image` is a scaled copy for analysis
    # (clips and best stills are cut from it); None when they are the same.
    full: Optional[np.ndarray] = None

    @property
    def record_image(self) -> np.ndarray:
        return self.image if self.full is None else self.full

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def channels(self) -> int:
        return 1 if self.image.ndim == 2 else int(self.image.shape[2])


@dataclass
class Face:
    """One face in one frame. Geometry is normalized to the frame (0-1)."""

    face_id: int
    confidence: float
    bbox: Tuple[float, float, float, float]  # x, y, w, h
    yaw: float = 0.0  # degrees, + = face turned to the image's right
    pitch: float = 0.0  # degrees, + = looking up
    roll: float = 0.0  # degrees
    expression: float = 0.0  # intensity 0-1
    inside_frame: bool = True
    area_ratio: float = 0.0
    center_distance: float = 0.0

    @property
    def center(self) -> Tuple[float, float]:
        x, y, w, h = self.bbox
        return (x + w / 2.0, y + h / 2.0)


@dataclass
class Pose:
    """One person: 17 COCO keypoints as (x, y, confidence), normalized."""

    person_id: int
    confidence: float
    keypoints: List[Tuple[float, float, float]]
    hand_raised: bool = False


@dataclass
class Hand:
    """One hand: 21 landmarks (x, y, z), handedness and the classified gesture."""

    hand_id: int
    confidence: float
    handedness: str  # "Left" | "Right"
    landmarks: List[Tuple[float, float, float]]
    gesture: str = "none"
    gesture_confidence: float = 0.0


@dataclass
class Observation:
    """One extractor's result for one frame (visualbase's OBS).

    `source` is the extractor name (face, pose, gesture, quality).
    """

    source: str
    stream_id: str
    frame_id: int
    t_ns: int
    faces: List[Face] = field(default_factory=list)
    poses: List[Pose] = field(default_factory=list)
    hands: List[Hand] = field(default_factory=list)
    signals: Dict[str, float] = field(default_factory=dict)
    processing_ms: float = 0.0
    error: Optional[str] = None
    # Wall clock (time.time_ns) when the extraction step took this frame's results up;
    # alignment measures sync delays from it. 0 when not stamped (observations fed in).
    extract_wall_ns: int = 0


@dataclass
class FramePresence:
    """A frame entered extraction: alignment then knows the frame exists even when
    every extractor missed it, and TRIG timing knows how far the stream has come.

    On the OBS wire it is the bare `OBS src=frame ...` header.
    """

    stream_id: str
    frame_id: int
    t_ns: int
    extract_wall_ns: int = 0
    # The extractors the extract stage ran on the frame, when a budget chose them
    # (None: every extractor due by its declared rate).
    scheduled: Optional[Tuple[str, ...]] = None

    # Its name where observations are named by source (the OBS wire, alignment).
    source = "frame"


# What extraction hands to alignment.
Extracted = Union[Observation, FramePresence]


@dataclass
class FrameObservations:
    """All observations of one frame after alignment, handed to fusion."""

    stream_id: str
    frame_id: int
    t_ns: int
    observations: Dict[str, Observation]
    missing: Tuple[str, ...] = ()
    extract_wall_ns: int = 0  # the latest extract_wall_ns of the frame's observations
    # Extractors with a declared rate that do not run on this frame: fusion carries
    # their last result over (operators/fusion_step.py).
    not_due: Tuple[str, ...] = ()

    def get(self, source: str) -> Optional[Observation]:
        return self.observations.get(source)

    @property
    def faces(self) -> List[Face]:
        obs = self.observations.get("face")
        return obs.faces if obs is not None else []


@dataclass
class Trigger:
    """A highlight decided by fusion: a point trigger with its clip span."""

    stream_id: str
    frame_id: int  # frame on which the trigger fired
    t_ns: int  # event time of that frame
    event_t_ns: int  # event start found by look-back
    reason: str
    score: float
    pre_sec: float
    post_sec: float
    face_count: int
    label: str = "highlight"

    @property
    def t_start_ns(self) -> int:
        return max(0, self.event_t_ns - int(round(self.pre_sec * 1e9)))

    @property
    def t_end_ns(self) -> int:
        return self.event_t_ns + int(round(self.post_sec * 1e9))

    @property
    def key(self) -> str:
        """Identity of a trigger: stable across re-runs and resumes."""
        return f"{self.stream_id}:{self.event_t_ns}:{self.reason}"


# A trace record: a typed, registered dataclass (facemoment.core.records).
TraceRecord = Record
