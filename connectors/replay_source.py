"""A Bytewax source replaying a recording (facemoment/formats/recording.py) as Frames.

Frames come out with their recorded ids and timestamps, gaps included.  Like
``VideoFileSource`` the stream splits into shares by frame id (share ``i`` of
``n`` keeps ``frame_id % n == i``); every share reads every record, checks its CRC
and decodes only its own, so all shares stop at the same damage.

The resume state is the frame id after the last record the share read; a resumed
partition seeks with the index to the first record at or after it and emits
exactly the frames of its share a fresh run would have emitted from there on.

By default frames come as fast as the dataflow takes them.  With ``realtime`` they
are paced by their recorded timestamps against a monotonic clock anchored at the
first record read (never faster than recorded); the partition tells Bytewax when
the next frame is due through ``next_awake`` instead of sleeping.

Damage never fails the dataflow and never ends the stream early: a damaged record
(cut short, an impossible header, a CRC mismatch, an id that does not follow, a
payload that does not decode) is skipped and reading goes on at the next intact
record, found by its header and CRC. Damage is counted per kind
(``malformed_message`` records, at most one per kind per second, and the
``malformed`` counts of the ``source_summary`` each share writes at its end); the
run's exit status says the input was incomplete. Every share meets the same byte
damage, so share 0 counts it; a payload that does not decode is counted by the
share that owns the frame. A file that cannot be read at all (not a recording, a
damaged file header) emits one ``source_error`` record and ends.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, List, Optional, Tuple, Union

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from facemoment.core.config import SourceConfig
from facemoment.runtime import exit_status
from facemoment.formats.recording import Record, RecordingError, RecordingReader
from connectors.shares import StreamShares, in_share, parse_share
from connectors.malformed_tally import MalformedTally
from facemoment.core.records import SourceError, SourceSummary
from facemoment.core.types import Frame, TraceRecord

log = logging.getLogger(__name__)

ReplayItem = Union[Frame, TraceRecord]
Clock = Callable[[], int]


class _Schedule:
    """When a recorded timestamp is due: anchor + (t - t_anchor), re-anchored if time goes back."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._anchor: Optional[Tuple[int, int]] = None  # (clock ns, recorded ns)

    def delay_ns(self, t_ns: int) -> int:
        now = self._clock()
        if self._anchor is None or t_ns < self._anchor[1]:
            self._anchor = (now, t_ns)
        return max(0, self._anchor[0] + (t_ns - self._anchor[1]) - now)


class _ReplayPartition(StatefulSourcePartition[ReplayItem, int]):
    def __init__(
        self,
        path: str,
        stream_id: str,
        share: Tuple[int, int],
        start_frame_id: int,
        realtime: bool,
        batch_size: int,
        clock: Clock,
    ) -> None:
        self._path = path
        self._stream_id = stream_id
        self._share = share
        self._batch_size = batch_size
        self._next_id = start_frame_id
        self._schedule = _Schedule(clock) if realtime else None
        self._clock = clock
        self._due_in_ns: Optional[int] = None
        self._pending: Optional[Record] = None
        self._finished = False
        self._error: Optional[RecordingError] = None
        self._reader: Optional[RecordingReader] = None
        self._malformed = MalformedTally(stream_id)
        self._emitted = 0
        self._started = time.monotonic()
        self._summarized = False
        try:
            self._reader = RecordingReader(path)
            self._records = self._reader.records(self._reader.offset_for(start_frame_id), self._on_damage)
        except RecordingError as exc:
            self._fail(exc)
        except OSError as exc:
            self._fail(RecordingError(path, 0, f"cannot be read: {exc.strerror or exc}"))

    # -------------------------------------------------------------- reading

    def _fail(self, exc: RecordingError) -> None:
        self._error = exc
        self._finished = True
        if self._share[0] == 0:  # every share meets the same damage; one reports it
            log.error("replay of %s ends: %s", self._stream_id, exc)
            exit_status.input_incomplete(f"recording of {self._stream_id}: {exc}")
        else:
            log.debug("replay of %s share %d ends: %s", self._stream_id, self._share[0], exc)

    def _on_damage(self, exc: RecordingError, resumes_at: Optional[int]) -> None:
        if self._share[0] == 0:  # every share reads the same bytes; one counts them
            self._count(exc, "no intact record after it" if resumes_at is None else f"reading goes on at byte offset {resumes_at}")

    def _count(self, exc: RecordingError, then: str) -> None:
        first = exc.kind not in self._malformed.counts
        self._malformed.add(exc.kind, f"{exc}; {then}")
        if first:  # one log line per kind; the trace has the counts
            log.warning("replay of %s: %s; %s (further damage of this kind is counted)", self._stream_id, exc, then)

    def _peek(self) -> Optional[Record]:
        """The next record of this share, read but not yet emitted; None at the end."""
        while self._pending is None and not self._finished:
            try:
                record = next(self._records, None)
            except OSError as exc:  # the medium failed (EIO): what was read stays emitted
                where = self._reader.tell() if self._reader is not None else 0
                self._fail(RecordingError(self._path, where, f"cannot be read further: {exc.strerror or exc}"))
                break
            if record is None:
                self._finished = True
                break
            if in_share(record.frame_id, *self._share):
                self._pending = record
            else:
                self._next_id = record.frame_id + 1
            if self._schedule is not None:
                self._schedule.delay_ns(record.t_src_ns)  # anchors on the first record read
        return self._pending

    def next_batch(self) -> List[ReplayItem]:
        if self._summarized:
            raise StopIteration
        batch: List[ReplayItem] = []
        self._due_in_ns = None
        while len(batch) < self._batch_size:
            record = self._peek()
            if record is None:
                break
            if self._schedule is not None:
                delay = self._schedule.delay_ns(record.t_src_ns)
                if delay > 0:
                    self._due_in_ns = delay
                    break
            self._pending = None
            self._next_id = record.frame_id + 1
            try:
                image = record.image()
            except RecordingError as exc:  # only the owning share decodes, so it counts
                self._count(exc, "the frame is skipped")
                continue
            batch.append(Frame(self._stream_id, record.frame_id, record.t_src_ns, image))
        self._emitted += sum(isinstance(x, Frame) for x in batch)
        batch.extend(self._malformed.due())
        if self._pending is None and self._finished:
            batch.extend(self._finish())
        return batch

    def _finish(self) -> List[ReplayItem]:
        """The last records of the share: the reading error or the damage counts and its summary."""
        self._summarized = True
        self._close_reader()
        if self._error is not None:
            return [self._error_record(self._error)] if self._share[0] == 0 else []
        damaged = self._malformed.counts
        if damaged:
            exit_status.input_incomplete(
                f"recording of {self._stream_id}: damaged records skipped ("
                + ", ".join(f"{kind} {n}" for kind, n in sorted(damaged.items()))
                + ")"
            )
        return [*self._malformed.due(force=True), self._summary()]

    def _summary(self) -> SourceSummary:
        count = self._share[1]
        return SourceSummary(
            stream=self._stream_id,
            address=self._path,
            end_reason="end_of_recording",
            duration_s=round(time.monotonic() - self._started, 3),
            share=f"{self._share[0]}of{count}" if count > 1 else None,
            frames_emitted=self._emitted,
            malformed=dict(self._malformed.counts),
        )

    def next_awake(self) -> Optional[datetime]:
        if self._due_in_ns is None:
            return None
        return datetime.now(timezone.utc) + timedelta(microseconds=self._due_in_ns / 1000)

    def _error_record(self, exc: RecordingError) -> SourceError:
        return SourceError(stream=self._stream_id, path=exc.path, offset=exc.offset, error=str(exc))

    # -------------------------------------------------------------- state

    def snapshot(self) -> int:
        return self._next_id

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def close(self) -> None:
        self._close_reader()


class ReplaySource(StreamShares, FixedPartitionedSource[ReplayItem, int]):
    """Frames of a recording (``Frame``), plus a ``source_error`` record (``dict``) if it is damaged.

    :arg path: the recording.
    :arg stream_id: the stream the frames belong to; partitions are named after it.
    :arg settings: the `source` section: `realtime` paces frames at their recorded
        speed instead of as fast as possible; None: its declared defaults.
    :arg shares: split the stream into this many partitions by frame id (one per worker).
    :arg batch_size: at most this many frames per batch.
    :arg clock: monotonic nanoseconds used for pacing (tests pass their own).
    """

    def __init__(
        self,
        path: Union[str, Path],
        stream_id: str,
        settings: Optional[SourceConfig] = None,
        *,
        shares: int = 1,
        batch_size: int = 4,
        clock: Clock = time.monotonic_ns,
    ) -> None:
        text = str(path)
        if not Path(text).exists():
            raise FileNotFoundError(f"recording {text!r} does not exist")
        if not Path(text).is_file():
            raise ValueError(f"recording {text!r} is not a file")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.path = text
        self.stream_id = stream_id
        self.realtime = (settings or SourceConfig()).realtime
        self.shares = max(1, shares)
        self.batch_size = batch_size
        self.clock = clock

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[int]) -> _ReplayPartition:
        stream_id, index, count = parse_share(for_part)
        return _ReplayPartition(
            self.path,
            stream_id,
            (index, count),
            start_frame_id=int(resume_state or 0),
            realtime=self.realtime,
            batch_size=self.batch_size,
            clock=self.clock,
        )
