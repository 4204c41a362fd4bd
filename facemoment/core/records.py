"""Typed trace records: one class per `record_type`, its minimum level declared once.

A record becomes one JSON object per line in trace.jsonl: `record_type` first, then
the fields in declaration order. Fields marked `optional()` are left out while None,
so records keep the shape the jq recipes in docs/observability.md read.
"""

from __future__ import annotations

import dataclasses
from enum import IntEnum
from typing import Any, ClassVar, Dict, List, Optional, Type, TypeVar, Union


class Level(IntEnum):
    OFF = 0
    MINIMAL = 1
    NORMAL = 2
    VERBOSE = 3

    @classmethod
    def parse(cls, name: Union[str, "Level"]) -> "Level":
        if isinstance(name, Level):
            return name
        try:
            return cls[str(name).upper()]
        except KeyError:
            names = ", ".join(level.name.lower() for level in cls)
            raise ValueError(f"unknown trace level {name!r}; use one of {names}") from None


LEVEL_NAMES = tuple(level.name.lower() for level in Level)

_OPTIONAL = "facemoment.optional"


def optional(default: Any = None) -> Any:
    """A field written only when it is not None."""
    return dataclasses.field(default=default, metadata={_OPTIONAL: True})


@dataclasses.dataclass
class Record:
    """Base of every trace record. Subclasses set TYPE and LEVEL and are registered."""

    TYPE: ClassVar[str] = ""
    LEVEL: ClassVar[Level] = Level.NORMAL

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"record_type": self.TYPE}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None and field.metadata.get(_OPTIONAL):
                continue
            out[field.name] = value
        return out

    def wanted_at(self, level: Level) -> bool:
        return level > Level.OFF and self.LEVEL <= level


RECORD_TYPES: Dict[str, Type[Record]] = {}

R = TypeVar("R", bound=Type[Record])


def register(cls: R) -> R:
    """Class decorator: makes `cls` known by its TYPE (the trace tools look it up)."""
    if not cls.TYPE:
        raise TypeError(f"{cls.__name__} has no TYPE")
    if cls.TYPE in RECORD_TYPES and RECORD_TYPES[cls.TYPE] is not cls:
        raise TypeError(f"record type {cls.TYPE!r} is defined twice")
    RECORD_TYPES[cls.TYPE] = cls
    return cls


def level_of(record_type: str) -> Level:
    """The minimum level of a record type; unknown types count as normal."""
    cls = RECORD_TYPES.get(record_type)
    return cls.LEVEL if cls is not None else Level.NORMAL


def as_dict(record: Union[Record, Dict[str, Any]]) -> Dict[str, Any]:
    """The JSON object of a record (plain dicts pass through)."""
    return record.to_dict() if isinstance(record, Record) else record


def wanted(record: Union[Record, Dict[str, Any]], level: Level) -> bool:
    """Whether trace.jsonl keeps `record` at `level` (a plain dict by its record_type)."""
    if isinstance(record, Record):
        return record.wanted_at(level)
    return level > Level.OFF and level_of(str(record.get("record_type", ""))) <= level


# --- extraction -------------------------------------------------------------------


@register
@dataclasses.dataclass(kw_only=True)
class Timing(Record):
    """How long one component took on one frame (`late`: a result after its deadline)."""

    TYPE: ClassVar[str] = "timing"
    LEVEL: ClassVar[Level] = Level.NORMAL

    frame_id: int
    stream: str
    component: str
    processing_ms: float
    queue_depth: Optional[int]
    threshold_ms: Optional[float]
    is_slow: bool
    late: Optional[bool] = optional()


@register
@dataclasses.dataclass(kw_only=True)
class FrameDrop(Record):
    """Frames lost: by the source (backpressure, wire gaps) or results past a deadline."""

    TYPE: ClassVar[str] = "frame_drop"
    LEVEL: ClassVar[Level] = Level.NORMAL

    frame_id: Optional[int]
    stream: str
    dropped_frame_ids: Optional[List[int]] = optional()  # wire gaps list only up to a cap
    dropped_count: Optional[int] = optional()
    dropped_range: Optional[List[int]] = optional()  # wire gaps: [first, last]
    reason: str  # backpressure | queue_full | timeout
    where: Optional[str] = optional()  # wire | while_down | obs
    publisher: Optional[str] = optional()  # where=obs: the OBS publisher that skipped frames
    strategy: Optional[str] = optional()
    extractors: Optional[List[str]] = optional()
    queue_depth: Optional[int]
    threshold_ms: Optional[float] = optional()


@register
@dataclasses.dataclass(kw_only=True)
class FrameExtract(Record):
    """What one extractor found on one frame."""

    TYPE: ClassVar[str] = "frame_extract"
    LEVEL: ClassVar[Level] = Level.NORMAL

    frame_id: int
    stream: str
    source: str
    face_count: int
    pose_count: int
    gesture_detected: bool
    signals: Dict[str, float]
    processing_ms: float
    error: Optional[str]


# --- alignment --------------------------------------------------------------------


@register
@dataclasses.dataclass(kw_only=True)
class SyncDelay(Record):
    """A frame fused without some extractors, or an observation after its window closed."""

    TYPE: ClassVar[str] = "sync_delay"
    LEVEL: ClassVar[Level] = Level.NORMAL

    frame_id: int
    stream: str
    expected_ns: Optional[int]
    actual_ns: Optional[int]
    delay_ms: Optional[float]
    waiting_for: List[str]
    late: bool


# --- fusion -----------------------------------------------------------------------


@register
@dataclasses.dataclass(kw_only=True)
class TriggerDecision(Record):
    """Fusion's decision on one frame (every frame at verbose, eventful ones at normal)."""

    TYPE: ClassVar[str] = "trigger_decision"
    LEVEL: ClassVar[Level] = Level.NORMAL

    stream: str
    frame_id: int
    t_ns: int
    gate_open: bool
    in_cooldown: bool
    candidates: List[Dict[str, Any]]
    # Frames the pending reason has won in a row, and the frames that confirm it at this
    # frame's interval; the rule itself is time: held_sec against confirm_sec.
    consecutive_count: int
    consecutive_required: int
    held_sec: float
    confirm_sec: float
    decision: str
    ewma_values: Dict[str, float]
    face_count: Optional[int]
    missing: List[str]


@register
@dataclasses.dataclass(kw_only=True)
class TriggerFire(Record):
    TYPE: ClassVar[str] = "trigger_fire"
    LEVEL: ClassVar[Level] = Level.MINIMAL

    stream: str
    frame_id: int
    t_ns: int
    event_t_ns: int
    reason: str
    score: float
    pre_sec: float
    post_sec: float
    face_count: int
    label: str


@register
@dataclasses.dataclass(kw_only=True)
class GateChange(Record):
    TYPE: ClassVar[str] = "gate_change"
    LEVEL: ClassVar[Level] = Level.NORMAL

    stream: str
    frame_id: int
    t_ns: int
    gate_open: bool
    reason: str
    duration_sec: float


@register
@dataclasses.dataclass(kw_only=True)
class GateCondition(Record):
    TYPE: ClassVar[str] = "gate_condition"
    LEVEL: ClassVar[Level] = Level.VERBOSE

    stream: str
    frame_id: int
    t_ns: int
    face_observed: bool
    conditions: Dict[str, Dict[str, Any]]
    all_pass: Optional[bool]
    gate_open: bool


@register
@dataclasses.dataclass(kw_only=True)
class OutOfOrder(Record):
    """A frame older than one fusion already took: reported and dropped."""

    TYPE: ClassVar[str] = "out_of_order"
    LEVEL: ClassVar[Level] = Level.NORMAL

    stream: str
    frame_id: int
    t_ns: int
    last_t_ns: int
    behind_ms: float


@register
@dataclasses.dataclass(kw_only=True)
class InvalidObservation(Record):
    TYPE: ClassVar[str] = "invalid_observation"
    LEVEL: ClassVar[Level] = Level.NORMAL

    stream: str
    frame_id: int
    t_ns: int
    source: str
    problems: List[str]


@register
@dataclasses.dataclass(kw_only=True)
class FpsSummary(Record):
    TYPE: ClassVar[str] = "fps_summary"
    LEVEL: ClassVar[Level] = Level.MINIMAL

    stream: str
    frame_id: int
    t_ns: int
    frames_fused: int
    event_fps: Optional[float]
    triggers: int


# --- sources ----------------------------------------------------------------------


@register
@dataclasses.dataclass(kw_only=True)
class MalformedMessage(Record):
    TYPE: ClassVar[str] = "malformed_message"
    LEVEL: ClassVar[Level] = Level.MINIMAL

    kind: str
    detail: str
    count: int
    messages: Optional[int] = optional()  # since the previous record of this kind
    stream: str


@register
@dataclasses.dataclass(kw_only=True)
class ObsDrop(Record):
    """OBS input that fell behind: observations and records shed, oldest first, since the last."""

    TYPE: ClassVar[str] = "obs_drop"
    LEVEL: ClassVar[Level] = Level.MINIMAL

    stream: str
    dropped_obs: int  # observations shed from the merge's hold
    records_dropped: int  # trace records shed before they were written
    held: int  # observations held when this was written
    reason: str  # queue_full


@register
@dataclasses.dataclass(kw_only=True)
class PublisherRestart(Record):
    TYPE: ClassVar[str] = "publisher_restart"
    LEVEL: ClassVar[Level] = Level.MINIMAL

    frame_id: int
    previous_frame_id: int
    stream: str
    address: str
    # None: ids went back (a publisher restart); "id_jump": ids leapt further ahead
    # than the stream could have numbered in the time that passed.
    kind: Optional[str] = optional()


@register
@dataclasses.dataclass(kw_only=True)
class SourceSummary(Record):
    """How a live source ended, with its counts."""

    TYPE: ClassVar[str] = "source_summary"
    LEVEL: ClassVar[Level] = Level.MINIMAL

    stream: str
    address: str
    end_reason: str
    duration_s: float
    share: Optional[str] = optional()  # "0of2", ... with several shares
    frames_received: int = 0
    frames_emitted: int = 0
    dropped_backpressure: int = 0
    lost_on_wire: int = 0
    malformed: Dict[str, int] = dataclasses.field(default_factory=dict)
    publisher_restarts: int = 0
    id_jumps: Optional[int] = optional()  # ZMQ frames: ids that leapt ahead, each counted once
    records_dropped: int = 0
    reconnects: int = 0
    error: Optional[str] = optional()
    # OBS input: malformed OBS texts, observations by source, the publishers heard and ended
    malformed_obs: Optional[int] = optional()
    dropped_obs: Optional[int] = optional()  # OBS input: observations shed (obs_drop)
    obs_received: Optional[Dict[str, int]] = optional()
    publishers: Optional[List[str]] = optional()
    publishers_ended: Optional[List[str]] = optional()


@register
@dataclasses.dataclass(kw_only=True)
class SourceError(Record):
    """A recording that could not be read further: where and why."""

    TYPE: ClassVar[str] = "source_error"
    LEVEL: ClassVar[Level] = Level.MINIMAL

    stream: str
    path: str
    offset: Optional[int]
    error: str


# --- observations.jsonl -----------------------------------------------------------


@register
@dataclasses.dataclass(kw_only=True)
class ObservationRecord(Record):
    """One extractor result as observations.jsonl stores it: the OBS text and the values."""

    TYPE: ClassVar[str] = "observation"
    LEVEL: ClassVar[Level] = Level.NORMAL

    stream: str
    frame_id: int
    t_ns: int
    source: str
    obs: str
    data: Dict[str, Any]


# ------------------------------------------------------------------ readiness


@register
@dataclasses.dataclass
class ModelsReady(Record):
    """A process has every extraction model loaded and warmed; `wall_ns` is wall-clock."""

    TYPE: ClassVar[str] = "models_ready"
    LEVEL: ClassVar[Level] = Level.MINIMAL

    pid: int
    wall_ns: int
    extractors: List[str]


# --- declared extractor rates ---------------------------------------------------
@register
@dataclasses.dataclass
class FrameCarry(Record):
    """An extractor that does not run on this frame (its declared rate): fusion used
    its result from `from_frame_id`, or nothing when none was within the rate.
    `missed`: it was scheduled on this frame, but its result missed the deadline."""

    TYPE: ClassVar[str] = "frame_carry"
    LEVEL: ClassVar[Level] = Level.NORMAL

    stream: str
    frame_id: int
    source: str
    from_frame_id: Optional[int]
    every: int
    missed: bool = False


@register
@dataclasses.dataclass
class FrameSkip(Record):
    """An extractor the cascade did not run on this frame (`extract.cascade`): face
    found nobody, so the frame carries an empty result for it."""

    TYPE: ClassVar[str] = "frame_skip"
    LEVEL: ClassVar[Level] = Level.NORMAL

    stream: str
    frame_id: int
    source: str
    reason: str  # no_face


@register
@dataclasses.dataclass
class CameraRates(Record):
    """A camera's schedule changed (or 5 s passed): whether someone is there, its
    level (the process's load level, or higher by the camera's allowance), each
    extractor's effective rate, and cumulative counts of
    frames, occupied frames, extractor runs and deferred runs
    (operators/extraction/budget.py)."""

    TYPE: ClassVar[str] = "camera_rates"
    LEVEL: ClassVar[Level] = Level.MINIMAL

    stream: str
    frame_id: int
    t_ns: int
    occupied: bool
    motion: bool
    level: int
    reason: str  # occupied | load | allowance | motion | empty
    rates_fps: Dict[str, float]
    frames: int
    occupied_frames: int
    runs: Dict[str, int]
    # Due runs left off a frame because the extractor's lane was behind (its result carried).
    deferred: Dict[str, int] = dataclasses.field(default_factory=dict)
    # What the schedule costs: cores of extraction by the lanes' recent costs per run
    # (None before any has run); an allowance (`budget.camera_cores`) holds it down.
    cores: Optional[float] = None


# --- start-up and resilience records -----------------------------------------------


@register
@dataclasses.dataclass
class TraceDegraded(Record):
    """Trace records lost to a failed write (a full disk); the run went on without them."""

    TYPE: ClassVar[str] = "trace_degraded"
    LEVEL: ClassVar[Level] = Level.MINIMAL

    lost_records: int  # since the previous write that succeeded
    lost_total: int  # in the whole run so far
    error: str
    path: str


# --- TRIG timing: when a TRIG was decided and when it was handed to its sink ---


@register
@dataclasses.dataclass
class TrigRelease(Record):
    """One TRIG let go to the TRIG sink. `decided_ns`/`released_ns` are wall-clock ns;
    `cause` is event (sent at once), end_reached (a frame at or past t_end_ns
    arrived), end_of_stream or idle (no newer frame for the idle time)."""

    TYPE: ClassVar[str] = "trig_release"
    LEVEL: ClassVar[Level] = Level.MINIMAL

    stream: str
    key: str
    timing: str
    cause: str
    t_end_ns: int
    decided_ns: int
    released_ns: int
    held_ms: float
    newest_t_ns: Any = optional()


# --- gate_tally: why frames did not fire --------------------------------------
@register
@dataclasses.dataclass
class GateTallyRecord(Record):
    """Cumulative per-stream counts of the gate and the decisions (the latest one is the total).

    `conditions` maps a failing condition (`yaw`, `face_count`, `quality.brightness`,
    ...) to `{failed, op, threshold, typical}`: the frames it failed on, how it
    compares to the threshold, and the mean of its failing values.
    """

    TYPE: ClassVar[str] = "gate_tally"
    LEVEL: ClassVar[Level] = Level.MINIMAL

    stream: str
    frame_id: int
    t_ns: int
    frames: int
    face_observed: int
    gate_open_frames: int
    passed_while_closed: int
    decisions: Dict[str, int]
    blocked_candidates: Dict[str, int]
    conditions: Dict[str, Dict[str, Any]]
