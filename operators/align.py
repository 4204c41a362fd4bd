"""Event-time alignment of observations: the clock and the per-frame grouping.

Observations of one stream are collected by Bytewax's `collect_window` with an
`EventClock` and a `TumblingWindower`; each closed window is split back into frames
and handed to fusion in event-time order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from bytewax.operators.windowing import (
    UTC_MIN,
    EventClock,
    TumblingWindower,
    _EventClockLogic,
    _EventClockState,
)

from facemoment.types import FrameObservations, Observation, TraceRecord

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# Source name of the marker each ingested frame contributes, so a frame every
# extractor missed still reaches fusion (as a frame with all extractors missing).
FRAME_MARKER = "frame"


def ns_to_datetime(t_ns: int) -> datetime:
    return EPOCH + timedelta(microseconds=t_ns // 1000)


def observation_time(obs: Observation) -> datetime:
    return ns_to_datetime(obs.t_ns)


@dataclass
class _SourceTimeClockLogic(_EventClockLogic):
    """Wakes the window operator when the watermark really reaches a close time.

    Bytewax's default treats a window's close time (event time) as the system time
    to wake at. Sources stamped near the epoch (files, replays) then look decades
    overdue: the operator is woken immediately, finds nothing to close, and is
    woken again — a busy loop that pins a core while waiting for frames. The
    watermark advances one-for-one with system time after the newest item, so the
    wake-up for event time T is `system_time_of_max_event + (T - watermark_base)`.
    """

    def to_system_utc(self, timestamp: datetime) -> Optional[datetime]:
        state = self.state
        if state.watermark_base <= UTC_MIN or self.now_getter is _frozen_now:
            return None  # nothing to wait for in system time: new items or EOF wake us
        try:
            return state.system_time_of_max_event + (timestamp - state.watermark_base)
        except OverflowError:
            return None


@dataclass
class SourceTimeClock(EventClock):
    """`EventClock` over source timestamps with wake-ups mapped to system time."""

    def build(self, resume_state: Optional[_EventClockState]) -> _SourceTimeClockLogic:
        if resume_state is None:
            return _SourceTimeClockLogic(
                self.now_getter, self.ts_getter, self.to_system_utc, self.wait_for_system_duration
            )
        return _SourceTimeClockLogic(
            self.now_getter,
            self.ts_getter,
            self.to_system_utc,
            self.wait_for_system_duration,
            resume_state,
        )


def _frozen_now() -> datetime:
    return EPOCH


def make_clock(allowed_lateness_ms: float, live: bool = True) -> SourceTimeClock:
    """The alignment clock.

    Live streams: the watermark also advances with system time, so windows close
    when frames stop arriving. Files and replays: only event time moves it (system
    time stands still), because they are read as fast as extraction goes — slower
    or faster than real time — and the end of the input closes the last windows.
    The lateness is then event time, so results do not depend on machine speed.
    """
    if live:
        return SourceTimeClock(
            ts_getter=observation_time,
            wait_for_system_duration=timedelta(milliseconds=allowed_lateness_ms),
        )
    return SourceTimeClock(
        ts_getter=observation_time,
        wait_for_system_duration=timedelta(milliseconds=allowed_lateness_ms),
        now_getter=_frozen_now,
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
