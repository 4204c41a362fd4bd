"""Read-ahead for finite sources: extraction of the next frames starts while the
dataflow still works on the current ones.

Wraps a file or recording source whose resume state is "the id of the next frame to
emit". Frames read ahead are handed to the orchestrator at once; the snapshot still
names the first frame not yet emitted, so a resume re-reads the ones read ahead.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from datetime import datetime
from typing import Any, Callable, Deque, List, Optional

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from facemoment.core.types import Frame

log = logging.getLogger(__name__)


class _PrefetchingPartition(StatefulSourcePartition[Any, int]):
    def __init__(
        self,
        inner: StatefulSourcePartition,
        prefetcher: Any,
        depth: int,
        emit: int,
        stop_event: Optional[threading.Event] = None,
        name: str = "",
    ):
        self._inner = inner
        self._name = name
        self._stop_event = stop_event
        self._prefetcher = prefetcher
        self._depth = depth
        self._emit = emit
        self._ahead: Deque[Any] = deque()
        self._frames_ahead = 0
        self._inner_done = False

    def _fill(self) -> None:
        if self._stop_event is not None and self._stop_event.is_set() and not self._inner_done:
            # Ctrl-C / SIGTERM: stop reading; frames already read ahead still go out.
            self._inner_done = True
            log.warning("input stopped: %s ends before the end of its file", self._name)
        while self._frames_ahead < self._depth and not self._inner_done:
            try:
                items = self._inner.next_batch()
            except StopIteration:
                self._inner_done = True
                break
            if not items:
                break  # nothing due yet (a paced replay): come back later
            for item in items:
                if isinstance(item, Frame):
                    self._prefetcher.prefetch(item)
                    self._frames_ahead += 1
                self._ahead.append(item)

    def next_batch(self) -> List[Any]:
        self._fill()
        if self._inner_done and not self._ahead:
            raise StopIteration
        out: List[Any] = []
        frames = 0
        while self._ahead and frames < self._emit:
            item = self._ahead.popleft()
            if isinstance(item, Frame):
                frames += 1
                self._frames_ahead -= 1
            out.append(item)
        return out

    def next_awake(self) -> Optional[datetime]:
        return None if self._ahead else self._inner.next_awake()

    def snapshot(self) -> int:
        for item in self._ahead:
            if isinstance(item, Frame):
                return item.frame_id
        return self._inner.snapshot()

    def close(self) -> None:
        for item in self._ahead:
            if isinstance(item, Frame):
                self._prefetcher.discard(item.stream_id, item.frame_id, item)
        self._ahead.clear()
        self._inner.close()


class PrefetchingSource(FixedPartitionedSource[Any, int]):
    """`inner` with `depth` frames per partition read ahead into `prefetcher()`."""

    def __init__(
        self,
        inner: FixedPartitionedSource,
        prefetcher: Callable[[], Any],
        depth: int = 8,
        emit: int = 4,
        stop_event: Optional[threading.Event] = None,
    ):
        self.inner = inner
        # Set it to end the input early (the rest of the file is not read).
        self.stop_event = stop_event
        self.prefetcher = prefetcher
        self.depth = depth
        self.emit = emit

    def list_parts(self) -> List[str]:
        return self.inner.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[int]) -> _PrefetchingPartition:
        part = self.inner.build_part(step_id, for_part, resume_state)
        return _PrefetchingPartition(part, self.prefetcher(), self.depth, self.emit, self.stop_event, for_part)
