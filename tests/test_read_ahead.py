"""The extract stage's read-ahead waits on a source's arrival signal instead of polling it."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Deque, List, Optional

import numpy as np
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from facemoment.core.config import load_config
from facemoment.core.types import Frame, Observation
from operators.extraction.orchestrator import SharedOrchestrator
from operators.extraction.read_ahead import ReadAhead
from tests.conftest import wait_until


class _Signalled(StatefulSourcePartition[Any, None]):
    """A live partition with an arrival signal, as the ZeroMQ frame source has.

    `next_awake` is None (ask again at once): a reader that polled would call
    `next_batch` over and over while nothing arrives."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: Deque[Frame] = deque()
        self._arrived = threading.Event()
        self.waiting = threading.Event()
        self.batches = 0
        self.waits = 0

    def next_batch(self) -> List[Any]:
        with self._lock:
            self.batches += 1
            out = list(self._queue)
            self._queue.clear()
            return out

    def next_awake(self) -> None:
        return None

    def wait_for_items(self, timeout_s: float) -> None:
        with self._lock:
            self.waits += 1
        self.waiting.set()
        if self._arrived.wait(timeout_s):
            self._arrived.clear()

    def snapshot(self) -> None:
        return None

    def push(self, frame: Frame) -> None:
        with self._lock:
            self._queue.append(frame)
        self._arrived.set()


class _Source(FixedPartitionedSource[Any, None]):
    def __init__(self, part: _Signalled) -> None:
        self.part = part

    def list_parts(self) -> List[str]:
        return ["cam0"]

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[None]) -> _Signalled:
        return self.part


class _Nothing:
    def __init__(self, name: str) -> None:
        self.name = name

    def extract(self, frame: Frame) -> Observation:
        return Observation(self.name, frame.stream_id, frame.frame_id, frame.t_src_ns)


def test_the_feeder_waits_on_the_sources_arrival_signal_and_hands_on_what_arrives() -> None:
    cfg = load_config(env={}, presets=["batch"])
    lanes = SharedOrchestrator(cfg, lambda name, _c: _Nothing(name))
    inner = _Signalled()
    part = ReadAhead(_Source(inner), lanes).build_part("in", "cam0", None)
    try:
        assert inner.waiting.wait(10)
        # Quiet: every empty batch is followed by one wait on the signal, none by a poll.
        assert wait_until(lambda: inner.waits >= 2)
        assert inner.batches <= inner.waits + 1
        frame = Frame("cam0", 0, 0, np.zeros((48, 64, 3), np.uint8))
        inner.push(frame)
        got: List[Any] = []
        assert wait_until(lambda: bool(got.extend(part.next_batch()) or got))
        assert [f.frame_id for f in got] == [0]
    finally:
        part.close()
