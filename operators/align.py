"""Event-time alignment of observations: the clock and the per-frame grouping.

Observations of one stream are collected by Bytewax's `collect_window` with an
`EventClock` and a `TumblingWindower`; each closed window is split back into frames
and handed to fusion in event-time order.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from bytewax.operators.windowing import UTC_MAX, UTC_MIN, Clock, ClockLogic, TumblingWindower

from facemoment.core.types import FrameObservations, Observation, TraceRecord

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# Source name of the marker each ingested frame contributes, so a frame every
# extractor missed still reaches fusion (as a frame with all extractors missing).
FRAME_MARKER = "frame"


def ns_to_datetime(t_ns: int) -> datetime:
    return EPOCH + timedelta(microseconds=t_ns // 1000)


def observation_time(obs: Observation) -> datetime:
    return ns_to_datetime(obs.t_ns)


def _system_utc() -> datetime:
    return datetime.now(tz=timezone.utc)


@dataclass
class SourceTimeClockState:
    """What a resumed clock continues from (the same two fields as Bytewax's
    `EventClock` state, so snapshots taken by either resume the other)."""

    system_time_of_max_event: datetime
    watermark_base: datetime


@dataclass
class _SourceTimeClockLogic(ClockLogic[Observation, SourceTimeClockState]):
    """The watermark follows event time; system time moves it only after a pause.

    Bytewax's `EventClock` advances the watermark one-for-one with system time after
    the newest item. When extraction runs slower than real time, or hands frames on
    in bursts, that watermark outruns the frames still on their way, and whole
    frames are dropped as late. Here the watermark is the newest event time minus
    the allowed lateness, and only when no newer item has come for `idle` (a paused
    camera) does it advance with system time, so the last windows still close.
    `idle=None` (files, replays) never uses system time: the end of input closes
    the last windows.

    Wake-ups are mapped to the system time at which the watermark will reach a
    close time; Bytewax's default treats the close time (event time) itself as the
    system time, which for sources stamped near the epoch means "decades overdue"
    and wakes the operator in a busy loop.
    """

    now_getter: Callable[[], datetime]
    timestamp_getter: Callable[[Observation], datetime]
    lateness: timedelta
    idle: Optional[timedelta]
    state: SourceTimeClockState
    _system_now: datetime = field(init=False)

    def __post_init__(self) -> None:
        self._system_now = self.now_getter()
        if self.state.system_time_of_max_event <= UTC_MIN:
            self.state.system_time_of_max_event = self._system_now

    def before_batch(self) -> None:
        # System time never goes backwards here (NTP steps, clock changes).
        self._system_now = max(self._system_now, self.now_getter())

    def _watermark(self) -> datetime:
        state = self.state
        if self.idle is None:
            return state.watermark_base
        paused = self._system_now - state.system_time_of_max_event - self.idle
        return state.watermark_base + max(paused, timedelta(0))

    def on_item(self, value: Observation) -> Tuple[datetime, datetime]:
        timestamp = self.timestamp_getter(value)
        watermark = self._watermark()
        try:
            base = timestamp - self.lateness
        except OverflowError:
            return timestamp, watermark
        if base > watermark:
            self.state.watermark_base = base
            self.state.system_time_of_max_event = self._system_now
            return timestamp, base
        return timestamp, watermark

    def on_notify(self) -> datetime:
        self.before_batch()
        return self._watermark()

    def on_eof(self) -> datetime:
        return UTC_MAX  # close every window at the end of input

    def to_system_utc(self, timestamp: datetime) -> Optional[datetime]:
        state = self.state
        if state.watermark_base <= UTC_MIN or self.idle is None:
            return None  # nothing to wait for in system time: new items or EOF wake us
        try:
            return state.system_time_of_max_event + self.idle + max(timestamp - state.watermark_base, timedelta(0))
        except OverflowError:
            return None

    def snapshot(self) -> SourceTimeClockState:
        return copy.deepcopy(self.state)


@dataclass
class SourceTimeClock(Clock[Observation, SourceTimeClockState]):
    """A clock over source timestamps, advanced by system time only after a pause.

    Built on Bytewax's public `Clock`/`ClockLogic`; its arguments follow `EventClock`.
    """

    ts_getter: Callable[[Observation], datetime]
    wait_for_system_duration: timedelta
    now_getter: Callable[[], datetime] = _system_utc
    idle: Optional[timedelta] = None

    def build(self, resume_state: Optional[SourceTimeClockState]) -> _SourceTimeClockLogic:
        if resume_state is None:
            state = SourceTimeClockState(system_time_of_max_event=UTC_MIN, watermark_base=UTC_MIN)
        else:
            # A copy: the runtime's resume state is not ours to change. Any object
            # with the two fields resumes (also an `EventClock` snapshot).
            state = SourceTimeClockState(resume_state.system_time_of_max_event, resume_state.watermark_base)
        return _SourceTimeClockLogic(self.now_getter, self.ts_getter, self.wait_for_system_duration, self.idle, state)


def make_clock(allowed_lateness_ms: float, live: bool = True, idle_flush_ms: float = 1000.0) -> SourceTimeClock:
    """The alignment clock.

    Observations up to `allowed_lateness_ms` of event time behind the newest are
    still placed in their window. Live streams: after `idle_flush_ms` without a
    newer observation the watermark advances with system time, so the windows of a
    paused camera close. Files and replays are read as fast as extraction goes,
    slower or faster than real time: only event time moves them, so results do not
    depend on machine speed.
    """
    return SourceTimeClock(
        ts_getter=observation_time,
        wait_for_system_duration=timedelta(milliseconds=allowed_lateness_ms),
        idle=timedelta(milliseconds=idle_flush_ms) if live else None,
    )


def make_windower(window_ms: float) -> TumblingWindower:
    return TumblingWindower(length=timedelta(milliseconds=window_ms), align_to=EPOCH)


class FrameGrouper:
    """Splits a closed window's observations into frames, in event-time order."""

    def __init__(self, expected: Sequence[str], window_ms: float, trace_level: str = "normal"):
        self.expected = tuple(expected)
        self.window_ns = int(window_ms * 1e6)
        self.trace = trace_level in ("normal", "verbose")

    def __call__(
        self, window: Tuple[int, List[Observation]]
    ) -> Iterable[Union[FrameObservations, TraceRecord]]:
        _window_id, items = window
        by_frame: Dict[int, List[Observation]] = {}
        for obs in items:
            by_frame.setdefault(obs.frame_id, []).append(obs)
        now_ns = time.time_ns()
        frames = sorted(by_frame.values(), key=lambda group: (group[0].t_ns, group[0].frame_id))
        for group in frames:
            first = group[0]
            observations = {obs.source: obs for obs in group}
            missing = tuple(name for name in self.expected if name not in observations)
            ingest_ns = max((obs.ingest_ns for obs in group), default=0)
            if self.trace and missing:
                # Wall-clock times: due one window after the frame entered, never arrived.
                expected_ns = ingest_ns + self.window_ns if ingest_ns else None
                yield {
                    "record_type": "sync_delay",
                    "frame_id": first.frame_id,
                    "stream": first.stream_id,
                    "expected_ns": expected_ns,
                    "actual_ns": None,
                    "delay_ms": round((now_ns - expected_ns) / 1e6, 3) if expected_ns else None,
                    "waiting_for": list(missing),
                    "late": False,
                }
            yield FrameObservations(
                stream_id=first.stream_id,
                frame_id=first.frame_id,
                t_ns=first.t_ns,
                observations={k: v for k, v in observations.items() if k != FRAME_MARKER},
                missing=missing,
                ingest_ns=ingest_ns,
            )


def late_record(late: Tuple[int, Observation], window_ms: float = 100.0) -> TraceRecord:
    """An observation that arrived after its window had closed.

    `expected_ns` and `actual_ns` are wall-clock: due one window after its frame
    entered the dataflow, and when it actually reached alignment.
    """
    _window_id, obs = late
    now_ns = time.time_ns()
    expected_ns = obs.ingest_ns + int(window_ms * 1e6) if obs.ingest_ns else None
    return {
        "record_type": "sync_delay",
        "frame_id": obs.frame_id,
        "stream": obs.stream_id,
        "expected_ns": expected_ns,
        "actual_ns": now_ns,
        "delay_ms": round((now_ns - expected_ns) / 1e6, 3) if expected_ns else None,
        "waiting_for": [obs.source],
        "late": True,
    }
