"""What a live frame source counts and reports, apart from any socket.

:class:`FrameAccounting` is told what the receiver saw (a valid header, a frame taken
or shed by the buffer, a malformed message, a connection refused for size) and turns
it into counters, the resume state and trace records:

- ``frame_drop`` reason ``queue_full``: a gap in ``frame_id`` (``where`` ``wire``, or
  ``while_down`` for the first gap after a resume); reason ``backpressure``: frames
  the buffer shed since the previous batch, in one record;
- ``publisher_restart``: ids went back (visualbase numbers from 0 on every run), or,
  with ``kind: id_jump``, ids leapt further ahead than the stream could have sent in
  the time that passed (see :meth:`FrameAccounting.seen`);
- ``malformed_message``: at most one record per kind per :data:`MALFORMED_INTERVAL_S`;
- ``source_summary``: the counters, once, at the end.

Not thread-safe: the receiver's lock guards it, as it guards the frame buffer.
"""

from __future__ import annotations

import copy
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from connectors.frame_buffer import ShedFrames
from connectors.malformed_tally import MALFORMED_INTERVAL_S, MalformedTally
from connectors.shares import Gap, frame_gap
from facemoment.core.records import FrameDrop, PublisherRestart, SourceSummary
from facemoment.core.types import Frame, TraceRecord

# Trace records waiting for the next batch; beyond this the oldest are lost (and counted).
MAX_PENDING_RECORDS = 10_000
# A gap record lists its ids only up to this many (dropped_count and dropped_range always).
MAX_LISTED_IDS = 32

# An id jump: a gap over JUMP_SLACK_IDS + JUMP_MARGIN * rate * seconds passed, where
# rate is the stream's ids per second of event time, never taken below JUMP_MIN_RATE
# (what a camera may send), and assumed JUMP_MIN_RATE until RATE_SPAN_S of event time
# has been seen. A publisher cannot lose more ids than it numbered meanwhile.
JUMP_SLACK_IDS = 100
JUMP_MARGIN = 4.0
JUMP_MIN_RATE = 120.0
RATE_SPAN_S = 1.0
ID_JUMP = "id_jump"


@dataclass
class SourceStats:
    frames_received: int = 0
    frames_emitted: int = 0
    dropped_backpressure: int = 0
    lost_on_wire: int = 0
    malformed: Dict[str, int] = field(default_factory=dict)
    publisher_restarts: int = 0
    # Ids that leapt ahead implausibly far: each counted once, not as lost frames.
    id_jumps: int = 0
    records_dropped: int = 0
    # Connections dropped (an oversized message, a publisher gone) and made again.
    reconnects: int = 0

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "SourceStats":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        stats = cls(**known)
        stats.malformed = dict(stats.malformed)
        return stats


@dataclass
class _Run:
    """The current run of ids: where it started and the last one seen, with event times."""

    first_id: int
    first_t_ns: int
    last_t_ns: int
    last_clock: float

    def rate(self, last_id: int) -> float:
        span_s = (self.last_t_ns - self.first_t_ns) / 1e9
        if span_s < RATE_SPAN_S:
            return JUMP_MIN_RATE
        return max(JUMP_MIN_RATE, (last_id - self.first_id) / span_s)


class FrameAccounting:
    """Counters, resume state and trace records of one share of one live stream.

    ``share`` is (index, count): every share sees every header and keeps its own
    ids; it reports lost ids of its own share, and share 0 alone reports
    stream-wide events (malformed messages, restarts, id jumps).
    ``resume_state`` is a :meth:`snapshot` of an earlier run.
    """

    def __init__(
        self,
        stream_id: str,
        address: str,
        share: Tuple[int, int] = (0, 1),
        resume_state: Optional[Dict[str, Any]] = None,
        strategy: str = "skip_oldest",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream_id = stream_id
        self.address = address
        self.share_index, self.share_count = share
        self._clock = clock
        state = resume_state or {}
        self.stats = SourceStats.from_dict(state.get("counts") or {})
        last = state.get("last_frame_id")
        self.last_seen_id: Optional[int] = None if last is None else int(last)
        self._accounted_id = self.last_seen_id
        self._resumed = last is not None
        self._run: Optional[_Run] = None
        # The last id before a jump: a stray jumped id is followed by the old run again.
        self._before_jump: Optional[Tuple[int, _Run]] = None
        self._records: Deque[TraceRecord] = deque()
        self._shed = ShedFrames(stream_id, strategy)
        self._malformed = MalformedTally(stream_id, self.stats.malformed, clock)
        self.started = self._clock()
        self.got_frame = False
        self.last_receive = self.started

    # ------------------------------------------------------------ what the receiver saw

    def seen(self, frame_id: int, t_src_ns: int, queue_depth: int = 0) -> None:
        """A valid header, of this share's frame or another's: check the sequence.

        Ids that go back are a publisher restart. Ids that go forward by more than
        the stream could have numbered in the time that passed (the larger of the
        event time and the receive clock since the previous frame) are an id jump,
        counted once; if the next id continues the run before the jump, the jumped
        one was a stray and that run goes on. The first gap after a resume is always
        ``while_down``: how long the source was down is not known.
        """
        now = self._clock()
        self.got_frame = True
        self.last_receive = now
        last = self.last_seen_id
        resumed, self._resumed = self._resumed, False
        self.last_seen_id = frame_id
        run = self._run
        if last is None or (run is None and not resumed):
            self._start_run(frame_id, t_src_ns, now)
            return
        if run is not None and self._before_jump is not None:
            before, old_run = self._before_jump
            self._before_jump = None
            if before < frame_id <= before + 1 + self._allowance(old_run, before, t_src_ns, now):
                last, run = before, old_run  # the jumped id was a stray: back on the old run
                self._run = run
        if frame_id <= last:
            self.stats.publisher_restarts += 1
            self._start_run(frame_id, t_src_ns, now)
            if self.share_index == 0:
                self._record(
                    PublisherRestart(frame_id=frame_id, previous_frame_id=last, stream=self.stream_id, address=self.address)
                )
            return
        if run is not None and frame_id - last - 1 > self._allowance(run, last, t_src_ns, now):
            self.stats.id_jumps += 1
            self._before_jump = (last, run)
            self._start_run(frame_id, t_src_ns, now)
            if self.share_index == 0:
                self._record(
                    PublisherRestart(
                        frame_id=frame_id, previous_frame_id=last, stream=self.stream_id, address=self.address, kind=ID_JUMP
                    )
                )
            return
        if run is None:
            self._start_run(frame_id, t_src_ns, now)
        else:
            run.last_t_ns, run.last_clock = max(run.last_t_ns, t_src_ns), now
        gap = frame_gap(last, frame_id, self.share_index, self.share_count)
        if gap is not None:
            self.stats.lost_on_wire += gap.count
            self._record(self._gap_record(frame_id, gap, "while_down" if resumed else "wire", queue_depth))

    def passed_over(self, frame_id: int) -> None:
        """A frame refused after its header was read (its event time): accounted for, not lost."""
        if self.last_seen_id is not None and frame_id == self.last_seen_id + 1:
            self.last_seen_id = frame_id

    def received(self, dropped: List[Frame], queue_depth: int) -> None:
        """This share's frame was offered to the buffer, which shed ``dropped``."""
        self.stats.frames_received += 1
        self._shed.note(dropped, queue_depth)
        self.stats.dropped_backpressure += len(dropped)

    def malformed(self, kind: str, detail: str) -> None:
        """A message that is not a valid frame. Share 0 alone counts and reports."""
        if self.share_index != 0:
            return
        self._malformed.add(kind, detail)

    def reconnected(self) -> None:
        self.stats.reconnects += 1

    # ------------------------------------------------------------ what goes out

    def batch(self, frames: List[Frame], force_malformed: bool = False) -> List[Any]:
        """One batch: the records so far, the backpressure record, then ``frames``.

        Every id seen up to here is then emitted or reported, which :meth:`snapshot`
        relies on: call it under the same lock as the buffer's drain.
        """
        for record in self._malformed.due(force_malformed):
            self._record(record)
        out: List[Any] = list(self._records)
        self._records.clear()
        shed = self._shed.record(self.last_seen_id)
        if shed is not None:
            out.append(shed)
        out.extend(frames)
        self.stats.frames_emitted += len(frames)
        self._accounted_id = self.last_seen_id
        return out

    def snapshot(self) -> Dict[str, Any]:
        return {"last_frame_id": self._accounted_id, "counts": self.stats.as_dict()}

    def counts(self) -> SourceStats:
        return copy.deepcopy(self.stats)

    def summary(self, reason: str, error: Optional[str] = None) -> SourceSummary:
        return SourceSummary(
            stream=self.stream_id,
            address=self.address,
            end_reason=reason,
            duration_s=round(self._clock() - self.started, 3),
            # share 0 counts malformed messages
            share=f"{self.share_index}of{self.share_count}" if self.share_count > 1 else None,
            error=error,
            **self.stats.as_dict(),
        )

    # ------------------------------------------------------------ inside

    def _start_run(self, frame_id: int, t_src_ns: int, now: float) -> None:
        self._run = _Run(frame_id, t_src_ns, t_src_ns, now)

    @staticmethod
    def _allowance(run: _Run, last_id: int, t_src_ns: int, now: float) -> float:
        """How many ids the stream may have lost since ``run``'s last frame."""
        passed_s = max((t_src_ns - run.last_t_ns) / 1e9, now - run.last_clock, 0.0)
        return JUMP_SLACK_IDS + JUMP_MARGIN * run.rate(last_id) * passed_s

    def _gap_record(self, frame_id: int, gap: Gap, where: str, queue_depth: int) -> FrameDrop:
        return FrameDrop(
            frame_id=frame_id,
            stream=self.stream_id,
            dropped_frame_ids=gap.listed(self.share_index, self.share_count, MAX_LISTED_IDS),
            dropped_count=gap.count,
            dropped_range=[gap.first, gap.last],
            reason="queue_full",
            where=where,
            queue_depth=queue_depth,
        )

    def _record(self, record: TraceRecord) -> None:
        if len(self._records) >= MAX_PENDING_RECORDS:
            self._records.popleft()
            self.stats.records_dropped += 1
        self._records.append(record)
