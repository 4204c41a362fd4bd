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
    its result from `from_frame_id`, or nothing when none was within the rate."""

    TYPE: ClassVar[str] = "frame_carry"
    LEVEL: ClassVar[Level] = Level.NORMAL

    stream: str
    frame_id: int
    source: str
    from_frame_id: Optional[int]
    every: int


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
