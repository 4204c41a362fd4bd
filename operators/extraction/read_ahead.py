"""The extract stage's read-ahead: frames go to the lanes the moment a source yields them.

`ReadAhead` wraps any frame source (connectors only produce frames). Each partition
has a feeder thread that takes frames from the source's partition as soon as it has
them, submits each to the flow's orchestrator at once, and keeps it in flight; the
worker hands a frame on once its results are in or its deadline has passed, in the
order read. So the lanes work on a live stream's frames as they arrive, whatever the
worker is busy with, and neither the read-ahead nor the `extract` step waits on a
model.

At most `depth` frames are in flight per partition: a live source's own buffer
(and its drop strategy) takes the surplus when extraction cannot keep up, and a
file is read only as far ahead as that. Trace records from the source pass
straight through. The snapshot names the first frame not yet handed on, so a
resume re-reads the frames that were in flight.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from datetime import datetime, timedelta, timezone
from typing import Any, Deque, List, Optional, Tuple

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from typing_extensions import override

from facemoment.core.types import Frame
from facemoment.formats.scaling import at_detect_size
from operators.extraction.orchestrator import Orchestrator, SharedOrchestrator, Submitted

log = logging.getLogger(__name__)

# While the oldest frame in flight is still being extracted, Bytewax looks again this
# soon; the worker never blocks on a model (other partitions and steps run meanwhile).
POLL = timedelta(milliseconds=2)
# With nothing in flight, this often (frames arriving meanwhile are already submitted).
IDLE = timedelta(milliseconds=5)
# The feeder looks at the stop flag at least this often while its source has nothing.
FEEDER_WAIT_S = 0.05
# How long closing waits for a feeder inside its source's next_batch.
FEEDER_JOIN_S = 10.0


class _ReadAheadPartition(StatefulSourcePartition[Any, Any]):
    def __init__(
        self,
        inner: StatefulSourcePartition,
        shared: SharedOrchestrator,
        orchestrator: Orchestrator,
        depth: int,
        stop_event: Optional[threading.Event],
        name: str,
        rereads: bool,
        detect_width: int,
    ):
        self._inner = inner
        # A source with an arrival signal is waited on; others are asked again when they say.
        self._wait_for_items = getattr(inner, "wait_for_items", None)
        self._detect_width = detect_width
        self._rereads = rereads
        self._shared = shared
        self._orchestrator: Optional[Orchestrator] = orchestrator
        self._depth = max(1, depth)
        self._stop_event = stop_event
        self._name = name
        # The feeder holds `_inner_lock` while it calls the source and while it moves
        # what it read in flight, so a snapshot never falls between the two.
        self._inner_lock = threading.Lock()
        self._state = threading.Condition()  # guards everything below
        self._in_flight: Deque[Tuple[Frame, Submitted]] = deque()
        self._records: Deque[Any] = deque()
        self._inner_done = False
        self._error: Optional[BaseException] = None
        # Asked again at once after a batch that handed something on, and before the
        # first: Bytewax can leave a partition alone far longer than a future wake-up
        # time it was given asks (over a second at start-up), so one is given only
        # while waiting is all there is to do.
        self._busy = True
        self._closing = threading.Event()
        self._feeder = threading.Thread(target=self._feed, name=f"read-ahead-{name}", daemon=True)
        self._feeder.start()

    # ------------------------------------------------------------ feeder thread

    def _feed(self) -> None:
        try:
            while self._wait_for_room():
                if self._stop_event is not None and self._stop_event.is_set():
                    # Ctrl-C / SIGTERM: stop reading; frames already in flight still go out.
                    log.warning("input stopped: %s ends before the end of its input", self._name)
                    break
                with self._inner_lock:
                    try:
                        items = self._inner.next_batch()
                    except StopIteration:
                        break
                    self._take_in(items)
                    awake = None if items else self._inner.next_awake()
                if not items:
                    self._wait_for_source(awake)
        except BaseException as exc:  # handed to the worker, which fails the dataflow with it
            log.exception("reading %s failed", self._name)
            with self._state:
                self._error = exc
        with self._state:
            self._inner_done = True

    def _wait_for_source(self, awake: Optional[datetime]) -> None:
        """Wait for a source that had nothing: on its arrival signal when it has one
        (`wait_for_items`, e.g. a ZeroMQ receiver), else until the time it named."""
        if self._wait_for_items is None:
            self._closing.wait(_seconds_until(awake))
        elif not self._closing.is_set():
            # Bounded, so a stop or the source's own end (idle timeout) is seen soon.
            self._wait_for_items(FEEDER_WAIT_S)

    def _wait_for_room(self) -> bool:
        """Block while `depth` frames are in flight; False once the partition closes."""
        with self._state:
            while len(self._in_flight) >= self._depth and not self._closing.is_set():
                self._state.wait(FEEDER_WAIT_S)
        return not self._closing.is_set()

    def _take_in(self, items: List[Any]) -> None:
        frames: List[Tuple[Frame, Submitted]] = []
        records: List[Any] = []
        orchestrator = self._orchestrator
        for item in items:
            if isinstance(item, Frame) and orchestrator is not None:
                # Scaled once here: every extractor reads the same analysis frame.
                frame = at_detect_size(item, self._detect_width)
                frames.append((frame, orchestrator.prefetch(frame)))
            else:
                records.append(item)  # trace records are not held back
        with self._state:
            self._in_flight.extend(frames)
            self._records.extend(records)

    # ------------------------------------------------------------ worker side

    @override
    def next_batch(self) -> List[Any]:
        with self._state:
            if self._error is not None:
                raise RuntimeError(f"reading {self._name} failed: {self._error}") from self._error
            out: List[Any] = list(self._records)
            self._records.clear()
            handed = 0
            while self._in_flight and self._in_flight[0][1].settled():
                out.append(self._in_flight.popleft()[0])
                handed += 1
            if handed:
                self._state.notify_all()  # room for the feeder
            if not out and self._inner_done and not self._in_flight:
                raise StopIteration
            self._busy = bool(out)
        return out

    @override
    def next_awake(self) -> Optional[datetime]:
        with self._state:
            if self._busy or self._records or self._error is not None or (self._inner_done and not self._in_flight):
                return None
            if not self._in_flight:
                return datetime.now(timezone.utc) + IDLE
            if self._in_flight[0][1].settled():
                return None  # ready to hand on now
        return datetime.now(timezone.utc) + POLL

    @override
    def snapshot(self) -> Any:
        with self._inner_lock:
            with self._state:
                if self._in_flight and self._rereads:
                    return self._in_flight[0][0].frame_id
            return self._inner.snapshot()

    @override
    def close(self) -> None:
        self._closing.set()
        with self._state:
            self._state.notify_all()
        self._feeder.join(FEEDER_JOIN_S)
        with self._state:
            in_flight = list(self._in_flight)
            self._in_flight.clear()
        if self._orchestrator is not None:
            for frame, _work in in_flight:
                self._orchestrator.discard(frame.stream_id, frame.frame_id, frame)
        try:
            with self._inner_lock:
                self._inner.close()
        finally:
            if self._orchestrator is not None:
                self._orchestrator = None
                self._shared.release()


def _seconds_until(awake: Optional[datetime]) -> float:
    """How long the feeder waits for a source that had nothing: until the time it named,
    at most FEEDER_WAIT_S; a little when it named none."""
    if awake is None:
        return POLL.total_seconds()
    return min(FEEDER_WAIT_S, max(0.0, (awake - datetime.now(timezone.utc)).total_seconds()))


class ReadAhead(FixedPartitionedSource[Any, Any]):
    """`inner`'s frames, submitted to `orchestrator` as they are read, `depth` in flight.

    `rereads`: the inner source's resume state is the id of the next frame to
    emit (files, recordings), so a resume re-reads the frames in flight. Otherwise
    (live sources) the inner state is kept as it is: frames in flight at a crash
    are gone, as a live stream's frames are while the process is down.
    """

    def __init__(
        self,
        inner: FixedPartitionedSource,
        orchestrator: SharedOrchestrator,
        depth: int = 8,
        stop_event: Optional[threading.Event] = None,
        rereads: bool = False,
        detect_width: int = 0,
    ):
        self.inner = inner
        self.rereads = rereads
        # Frames wider than this are analysed scaled down to it (0: as they come).
        self.detect_width = detect_width
        self.orchestrator = orchestrator
        self.depth = depth
        # Set it to end the input early (the rest of the input is not read).
        self.stop_event = stop_event

    @override
    def list_parts(self) -> List[str]:
        return self.inner.list_parts()

    @override
    def build_part(self, step_id: str, for_part: str, resume_state: Optional[Any]) -> _ReadAheadPartition:
        # Models load before the source opens its input: a live stream's first frames
        # (and a proxy pipe's writer, which starts once its reader opens) do not wait on them.
        orchestrator = self.orchestrator.acquire()
        try:
            part = self.inner.build_part(step_id, for_part, resume_state)
        except BaseException:
            self.orchestrator.release()
            raise
        return _ReadAheadPartition(
            part, self.orchestrator, orchestrator, self.depth, self.stop_event, for_part, self.rereads, self.detect_width
        )
