"""When a TRIG goes out: at the decision, or once the stream has reached the clip's end.

visualbase's live ingest cuts a clip from its ring buffer when the TRIG arrives.
Sent at the decision, a TRIG asking for [event - pre, event + post] reaches it
``post`` seconds before the end of the span exists there, and the clip comes out
short. With timing ``end`` a TRIG is held until a frame with ``t_src_ns >= t_end_ns``
plus ``output.trig_margin_ms`` has been seen on its stream (the frame presences of the
extracted stream), or the stream ended, or no newer frame came for ``idle_s``. The
margin is for a receiver that needs its stream a little past the clip's end before
it can cut it (visualbase's ring buffer holds encoded segments, complete only after
their last frame). Timing ``event`` lets every
TRIG go at once. Either way one ``trig_release`` record tells the decision and
release times.

Keyed by stream: triggers and frame timestamps of one stream meet in one state.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Iterable, List, Optional, Tuple, Union

import bytewax.operators as op
from bytewax.dataflow import Stream, operator
from bytewax.operators import StatefulBatchLogic

from facemoment.core.config import Config
from facemoment.core.records import TrigRelease
from facemoment.core.streams import ItemsAndRecords, split_keyed_records
from facemoment.core.types import Extracted, FramePresence, Trigger

END, EVENT = "end", "event"

# An item of the keyed input: a trigger, or the source timestamp of a frame that arrived.
TimingItem = Union[Trigger, int]
TimingOut = Union[Trigger, TrigRelease]


@dataclass
class TimingState:
    newest_t_ns: Optional[int] = None
    # (trigger, decided wall ns), in decision order.
    pending: List[Tuple[Trigger, int]] = field(default_factory=list)


def resolve_timing(setting: str, live: bool) -> str:
    """``auto`` means end for live sources, event for files and replays."""
    if setting == "auto":
        return END if live else EVENT
    return setting


class TrigTimer(StatefulBatchLogic[TimingItem, TimingOut, TimingState]):
    """Bytewax stateful logic for one stream (``op.stateful``)."""

    def __init__(
        self, timing: str, idle_s: Optional[float], state: Optional[TimingState] = None, margin_ns: int = 0
    ) -> None:
        if timing not in (END, EVENT):
            raise ValueError(f"TRIG timing {timing!r} is not one of {END}, {EVENT}")
        if margin_ns < 0:
            raise ValueError(f"TRIG margin must not be negative, got {margin_ns} ns")
        self.timing = timing
        self.idle_s = idle_s
        self.margin_ns = int(margin_ns)
        self.state = state or TimingState()
        self._last_item = time.monotonic()

    def _release(self, trigger: Trigger, decided_ns: int, cause: str) -> List[TimingOut]:
        now = time.time_ns()
        record = TrigRelease(
            stream=trigger.stream_id,
            key=trigger.key,
            timing=self.timing,
            cause=cause,
            t_end_ns=int(trigger.t_end_ns),
            decided_ns=decided_ns,
            released_ns=now,
            held_ms=round((now - decided_ns) / 1e6, 3),
            newest_t_ns=self.state.newest_t_ns,
        )
        return [trigger, record]

    def _due_ns(self, trigger: Trigger) -> int:
        """The stream time at which ``trigger`` may go: its end plus the margin."""
        return int(trigger.t_end_ns) + self.margin_ns

    def _release_all(self, cause: str, reached: Optional[int] = None) -> List[TimingOut]:
        out: List[TimingOut] = []
        keep: List[Tuple[Trigger, int]] = []
        for trigger, decided in self.state.pending:
            if reached is None or self._due_ns(trigger) <= reached:
                out += self._release(trigger, decided, cause)
            else:
                keep.append((trigger, decided))
        self.state.pending = keep
        return out

    # -- Bytewax StatefulBatchLogic

    def on_batch(self, values: List[TimingItem]) -> Tuple[Iterable[TimingOut], bool]:
        out: List[TimingOut] = []
        self._last_item = time.monotonic()
        for value in values:
            if isinstance(value, Trigger):
                decided = time.time_ns()
                newest = self.state.newest_t_ns
                if self.timing == EVENT:
                    out += self._release(value, decided, EVENT)
                elif newest is not None and newest >= self._due_ns(value):
                    out += self._release(value, decided, "end_reached")
                else:
                    self.state.pending.append((value, decided))
            else:
                t_ns = int(value)
                if self.state.newest_t_ns is None or t_ns > self.state.newest_t_ns:
                    self.state.newest_t_ns = t_ns
                    if self.state.pending:
                        out += self._release_all("end_reached", t_ns)
        return out, self.RETAIN

    def on_notify(self) -> Tuple[Iterable[TimingOut], bool]:
        if self.state.pending and self.idle_s is not None and time.monotonic() - self._last_item >= self.idle_s:
            return self._release_all("idle"), self.RETAIN
        return [], self.RETAIN

    def on_eof(self) -> Tuple[Iterable[TimingOut], bool]:
        return self._release_all("end_of_stream"), self.RETAIN

    def notify_at(self) -> Optional[datetime]:
        if not self.state.pending or self.idle_s is None:
            return None
        due = self._last_item + self.idle_s - time.monotonic()
        return datetime.now(timezone.utc) + timedelta(seconds=max(0.0, due))

    def snapshot(self) -> TimingState:
        return TimingState(self.state.newest_t_ns, list(self.state.pending))


__all__ = ["TrigTimer", "TimingState", "resolve_timing", "END", "EVENT"]


def _is_presence(item: Extracted) -> bool:
    return isinstance(item, FramePresence)


def _stream_time(presence: FramePresence) -> Tuple[str, int]:
    return (presence.stream_id, presence.t_ns)


@operator
def time_triggers(
    step_id: str,
    triggers: Stream[Tuple[str, Trigger]],
    extracted: Stream[Extracted],
    cfg: Config,
    live: bool,
) -> ItemsAndRecords[Tuple[str, Trigger]]:
    """Triggers let go for TRIG by `output.trig_timing`, and their `trig_release` records."""
    timing = resolve_timing(cfg.output.trig_timing, live)
    margin_ns = int(cfg.output.trig_margin_ms * 1_000_000)
    # With no newer frame, a held TRIG goes after the idle time (which covers the margin).
    idle_s = cfg.source.idle_timeout_s or cfg.fusion.post_sec + (cfg.align.idle_flush_ms + cfg.output.trig_margin_ms) / 1000.0
    times = op.map("frame_times", op.filter("presences", extracted, _is_presence), _stream_time)
    timed = op.stateful_batch(
        "timer", op.merge("timer_in", triggers, times), functools.partial(_timer, timing, idle_s, margin_ns)
    )
    return split_keyed_records("split", timed)


def _timer(timing: str, idle_s: Optional[float], margin_ns: int, state: Optional[TimingState]) -> TrigTimer:
    return TrigTimer(timing, idle_s, state, margin_ns)
