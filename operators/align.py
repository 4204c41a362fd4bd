"""Event-time alignment of observations: the clock and the per-frame grouping.

Observations of one stream are collected by Bytewax's `collect_window` with an
`EventClock` and a `TumblingWindower`; each closed window is split back into frames
and handed to fusion in event-time order.
"""

from __future__ import annotations

import copy
import functools
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import bytewax.operators as op
from bytewax.dataflow import Stream, operator
from bytewax.operators.windowing import UTC_MAX, UTC_MIN, Clock, ClockLogic, TumblingWindower, collect_window

from facemoment.core.config import Config
from facemoment.core.config.cameras import StreamRates, stream_rates
from facemoment.core.config.rates import Rate, is_due
from facemoment.core.records import Level, SyncDelay
from facemoment.core.streams import ItemsAndRecords, split_keyed_records
from facemoment.core.types import Extracted, FrameObservations, FramePresence, Observation

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def ns_to_datetime(t_ns: int) -> datetime:
    return EPOCH + timedelta(microseconds=t_ns // 1000)


def observation_time(obs: Extracted) -> datetime:
    return ns_to_datetime(obs.t_ns)


def _system_utc() -> datetime:
    return datetime.now(tz=timezone.utc)


@dataclass
class SourceTimeClockState:
    """What a resumed clock continues from: Bytewax's `EventClock` state (the first
    two fields, so either's snapshot resumes the other) plus how far each known
    input has delivered."""

    system_time_of_max_event: datetime
    watermark_base: datetime
    progress: Dict[int, datetime] = field(default_factory=dict)


@dataclass
class _SourceTimeClockLogic(ClockLogic[Extracted, SourceTimeClockState]):
    """The watermark is the minimum over the stream's known inputs, bounded by lateness.

    A stream is fed by `inputs` shares (share `i` of `n` carries the frames with
    `frame_id % n == i`). Each share hands on a frame's observations together, the
    frame's presence with them, and its frames in order, so once every share has
    delivered an observation at or past a window's end, nothing more can come for
    that window: it closes then (as a Flink watermark is the minimum over its
    inputs), not after the allowed lateness.

    Live streams keep the allowed lateness as the bound for an input that went
    silent (a share whose frames all dropped, or one far behind): the watermark
    never lags the newest event time by more. Files and replays with known inputs
    wait for the slowest share instead (a share ends only with its file; the end of
    input closes the rest), so results do not depend on how far processes drift
    apart. With `inputs=0` (unknown, e.g. observations fed in directly) the bound
    alone sets the watermark.

    Bytewax's `EventClock` advances the watermark one-for-one with system time after
    the newest item. When extraction runs slower than real time, or hands frames on
    in bursts, that watermark outruns the frames still on their way, and whole
    frames are dropped as late. Here only when no item at all has come for `idle`
    (a paused camera; a share still catching up is not a pause) does the bound
    advance with system time, so the last windows still close. `idle=None` (files, replays) never uses system time: the end of
    input closes the last windows.

    Wake-ups are mapped to the system time at which the watermark will reach a
    close time; Bytewax's default treats the close time (event time) itself as the
    system time, which for sources stamped near the epoch means "decades overdue"
    and wakes the operator in a busy loop.
    """

    now_getter: Callable[[], datetime]
    timestamp_getter: Callable[[Extracted], datetime]
    lateness: timedelta
    idle: Optional[timedelta]
    inputs: Mapping[str, int]
    state: SourceTimeClockState
    _system_now: datetime = field(init=False)
    _count: Optional[int] = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._system_now = self.now_getter()
        if self.state.system_time_of_max_event <= UTC_MIN:
            self.state.system_time_of_max_event = self._system_now

    def before_batch(self) -> None:
        # System time never goes backwards here (NTP steps, clock changes).
        self._system_now = max(self._system_now, self.now_getter())

    def _bound(self) -> datetime:
        """Newest event time minus the allowed lateness, moved on by a pause when live."""
        state = self.state
        if self.idle is None:
            return state.watermark_base
        paused = self._system_now - state.system_time_of_max_event - self.idle
        return state.watermark_base + max(paused, timedelta(0))

    def _inputs_passed(self) -> Optional[datetime]:
        """How far every known input has delivered; None until each has delivered."""
        progress = self.state.progress
        if not self._count or len(progress) < self._count:
            return None
        return min(progress.values())

    def _watermark(self) -> datetime:
        passed = self._inputs_passed()
        if self.idle is None and self._count:
            # Files and replays: no input goes silent before its end, and shares read
            # at their own pace (two processes drift apart by seconds): waiting for
            # the slowest keeps every frame, whatever the machine's speed.
            return UTC_MIN if passed is None else passed
        bound = self._bound()
        return bound if passed is None or passed < bound else passed

    def _note_input(self, value: Any, timestamp: datetime) -> None:
        if self._count is None:
            self._count = max(0, int(self.inputs.get(getattr(value, "stream_id", None), 0)))
        if not self._count:
            return
        share = int(value.frame_id) % self._count
        progress = self.state.progress
        if share not in progress or timestamp > progress[share]:
            progress[share] = timestamp

    def on_item(self, value: Extracted) -> Tuple[datetime, datetime]:
        timestamp = self.timestamp_getter(value)
        bound = self._bound()
        try:
            base = timestamp - self.lateness
        except OverflowError:
            return timestamp, self._watermark()
        # Any item shows the stream is not paused, also an older one from a share that
        # lags behind: the pause's advance so far is kept (the bound never goes back)
        # and the idle time starts again.
        self.state.watermark_base = base if base > bound else bound
        self.state.system_time_of_max_event = self._system_now
        # Counting this item first cannot make it late: the minimum over the inputs is
        # at most its own input's newest time, which this item now is.
        self._note_input(value, timestamp)
        return timestamp, self._watermark()

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
class SourceTimeClock(Clock[Extracted, SourceTimeClockState]):
    """A clock over source timestamps: the minimum over known inputs, bounded by the
    allowed lateness, advanced by system time only after a pause.

    Built on Bytewax's public `Clock`/`ClockLogic`; its arguments follow `EventClock`.
    """

    ts_getter: Callable[[Extracted], datetime]
    wait_for_system_duration: timedelta
    now_getter: Callable[[], datetime] = _system_utc
    idle: Optional[timedelta] = None
    # Stream id -> how many shares feed it (0 or absent: unknown, lateness only).
    inputs: Mapping[str, int] = field(default_factory=dict)

    def build(self, resume_state: Optional[Any]) -> _SourceTimeClockLogic:
        if resume_state is None:
            state = SourceTimeClockState(system_time_of_max_event=UTC_MIN, watermark_base=UTC_MIN)
        else:
            # A copy: the runtime's resume state is not ours to change. Any object
            # with the first two fields resumes (also an `EventClock` snapshot).
            state = SourceTimeClockState(
                resume_state.system_time_of_max_event,
                resume_state.watermark_base,
                dict(getattr(resume_state, "progress", None) or {}),
            )
        return _SourceTimeClockLogic(
            self.now_getter, self.ts_getter, self.wait_for_system_duration, self.idle, dict(self.inputs), state
        )


def make_clock(
    allowed_lateness_ms: float,
    live: bool = True,
    idle_flush_ms: float = 1000.0,
    inputs: Optional[Mapping[str, int]] = None,
) -> SourceTimeClock:
    """The alignment clock.

    `inputs` maps each stream to the number of shares that feed it: a window closes
    once every share has delivered past its end. Observations up to
    `allowed_lateness_ms` of event time behind the newest are still placed in their
    window: that bound closes windows an input no longer feeds. Live streams: after
    `idle_flush_ms` without a newer observation the watermark advances with system
    time, so the windows of a paused camera close. Files and replays are read as
    fast as extraction goes, slower or faster than real time: only event time moves
    them, so results do not depend on machine speed.
    """
    return SourceTimeClock(
        ts_getter=observation_time,
        wait_for_system_duration=timedelta(milliseconds=allowed_lateness_ms),
        idle=timedelta(milliseconds=idle_flush_ms) if live else None,
        inputs=dict(inputs or {}),
    )


def make_windower(window_ms: float) -> TumblingWindower:
    return TumblingWindower(length=timedelta(milliseconds=window_ms), align_to=EPOCH)


class FrameGrouper:
    """Splits a closed window's observations into frames, in event-time order.

    An extractor with a declared rate (`rates`, name -> Rate, or a `StreamRates` with
    each camera's own) is expected only on the frames it is due on; on the others it
    is not missing but `not_due`.
    """

    def __init__(
        self,
        expected: Sequence[str],
        window_ms: float,
        trace_level: str = "normal",
        rates: Optional[Union[Mapping[str, Rate], StreamRates]] = None,
    ):
        self.expected = tuple(expected)
        self.rates = rates if isinstance(rates, StreamRates) else StreamRates(dict(rates or {}))
        self.window_ns = int(window_ms * 1e6)
        self.trace = Level.parse(trace_level) >= SyncDelay.LEVEL

    def __call__(
        self, window: Tuple[int, List[Extracted]]
    ) -> Iterable[Union[FrameObservations, SyncDelay]]:
        _window_id, items = window
        by_frame: Dict[int, List[Extracted]] = {}
        for obs in items:
            by_frame.setdefault(obs.frame_id, []).append(obs)
        now_ns = time.time_ns()
        frames = sorted(by_frame.values(), key=lambda group: (group[0].t_ns, group[0].frame_id))
        for group in frames:
            first = group[0]
            observations = {obs.source: obs for obs in group}
            presence = observations.get(FramePresence.source)
            if isinstance(presence, FramePresence) and presence.scheduled is not None:
                due = [name for name in self.expected if name in presence.scheduled]  # the budget's choice
            else:
                due = [name for name in self.expected if is_due(first.frame_id, self.rates.get(first.stream_id, name))]
            missing = tuple(name for name in due if name not in observations)
            not_due = tuple(name for name in self.expected if name not in due and name not in observations)
            extract_wall_ns = max((obs.extract_wall_ns for obs in group), default=0)
            if self.trace and missing:
                # Never arrived: no actual time.
                yield sync_delay(first, extract_wall_ns, self.window_ns, now_ns, list(missing), late=False)
            yield FrameObservations(
                stream_id=first.stream_id,
                frame_id=first.frame_id,
                t_ns=first.t_ns,
                observations={k: v for k, v in observations.items() if isinstance(v, Observation)},
                missing=missing,
                extract_wall_ns=extract_wall_ns,
                not_due=not_due,
            )


def late_record(late: Tuple[int, Extracted], window_ms: float = 100.0) -> SyncDelay:
    """An observation that arrived after its window had closed.

    `expected_ns` and `actual_ns` are wall-clock: due one window after its frame
    entered the dataflow, and when it actually reached alignment.
    """
    _window_id, obs = late
    return sync_delay(obs, obs.extract_wall_ns, int(window_ms * 1e6), time.time_ns(), [obs.source], late=True)


def sync_delay(
    obs: Extracted, extract_wall_ns: int, window_ns: int, now_ns: int, waiting_for: List[str], late: bool
) -> SyncDelay:
    """The `sync_delay` record of `obs`'s frame, waiting for `waiting_for` at `now_ns`.

    Wall-clock times: an observation is due one window after its frame entered the
    dataflow (`extract_wall_ns`, 0 when unknown); a late one arrived at `now_ns`.
    """
    expected_ns = extract_wall_ns + window_ns if extract_wall_ns else None
    return SyncDelay(
        frame_id=obs.frame_id,
        stream=obs.stream_id,
        expected_ns=expected_ns,
        actual_ns=now_ns if late else None,
        delay_ms=round((now_ns - expected_ns) / 1e6, 3) if expected_ns else None,
        waiting_for=waiting_for,
        late=late,
    )


def _stream_of(obs: Extracted) -> str:
    return obs.stream_id


@operator
def align(
    step_id: str,
    observations: Stream[Extracted],
    cfg: Config,
    live: bool = True,
    inputs: Optional[Dict[str, int]] = None,
) -> ItemsAndRecords[Tuple[str, FrameObservations]]:
    """Event-time alignment per stream: each frame's observations together (a frame's
    presence makes it a frame even when every extractor missed it), keyed by stream
    and in event-time order; `sync_delay` records for missing and late ones."""
    by_stream = op.key_on("key_stream", observations, _stream_of)
    windows = collect_window(
        "window",
        by_stream,
        make_clock(cfg.align.allowed_lateness_ms, live, cfg.align.idle_flush_ms, inputs),
        make_windower(cfg.align.window_ms),
    )
    grouper = FrameGrouper(cfg.extract.extractors, cfg.align.window_ms, cfg.output.trace, stream_rates(cfg))
    grouped = split_keyed_records("split", op.flat_map_value("group_frames", windows.down, grouper))
    late = op.map("late", windows.late, functools.partial(_late_value, cfg.align.window_ms))
    return ItemsAndRecords(grouped.items, op.merge("records", grouped.records, late))


def _late_value(window_ms: float, kv: Tuple[str, Tuple[int, Observation]]) -> SyncDelay:
    return late_record(kv[1], window_ms)
