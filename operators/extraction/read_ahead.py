"""The extract stage's read-ahead: frames go to the lanes the moment a source yields them.

`ReadAhead` wraps any frame source (connectors only produce frames). Its partitions
pull frames from the source's partition, submit each to the flow's orchestrator at
once, and hand a frame on once its results are in or its deadline has passed, in
the order read. So the lanes work on the next frames while the dataflow is busy
with earlier ones, and neither the read-ahead nor the `extract` step waits on a model.

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
        self._detect_width = detect_width
        self._rereads = rereads
        self._shared = shared
        self._orchestrator: Optional[Orchestrator] = orchestrator
        self._depth = max(1, depth)
        self._stop_event = stop_event
        self._name = name
        self._in_flight: Deque[Tuple[Frame, Submitted]] = deque()
        self._inner_done = False

    def _fill(self, out: List[Any]) -> None:
        if self._stop_event is not None and self._stop_event.is_set() and not self._inner_done:
            # Ctrl-C / SIGTERM: stop reading; frames already in flight still go out.
            self._inner_done = True
            log.warning("input stopped: %s ends before the end of its input", self._name)
        while len(self._in_flight) < self._depth and not self._inner_done:
            try:
                items = self._inner.next_batch()
            except StopIteration:
                self._inner_done = True
                break
            if not items:
                break  # nothing due yet (a live source, a paced replay): come back later
            for item in items:
                if isinstance(item, Frame) and self._orchestrator is not None:
                    # Scaled once here: every extractor reads the same analysis frame.
                    frame = at_detect_size(item, self._detect_width)
                    self._in_flight.append((frame, self._orchestrator.prefetch(frame)))
                else:
                    out.append(item)  # trace records are not held back

    @override
    def next_batch(self) -> List[Any]:
        out: List[Any] = []
        self._fill(out)
        while self._in_flight and self._in_flight[0][1].settled():
            out.append(self._in_flight.popleft()[0])
        if not out and self._inner_done and not self._in_flight:
            raise StopIteration
        return out

    @override
    def next_awake(self) -> Optional[datetime]:
        if not self._in_flight:
            return self._inner.next_awake()
        if self._in_flight[0][1].settled():
            return None  # ready to hand on now
        return datetime.now(timezone.utc) + POLL

    @override
    def snapshot(self) -> Any:
        if self._in_flight and self._rereads:
            return self._in_flight[0][0].frame_id
        return self._inner.snapshot()

    @override
    def close(self) -> None:
        if self._orchestrator is not None:
            for frame, _work in self._in_flight:
                self._orchestrator.discard(frame.stream_id, frame.frame_id, frame)
        self._in_flight.clear()
        try:
            self._inner.close()
        finally:
            if self._orchestrator is not None:
                self._orchestrator = None
                self._shared.release()


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
