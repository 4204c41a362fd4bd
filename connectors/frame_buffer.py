"""What stands between a live socket and the dataflow: a frame buffer bounded in
count and bytes, and a guard against absurd event-time leaps."""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Callable, Deque, List, Optional, Tuple

from facemoment.core.config import DROP_STRATEGIES  # one definition: the configuration
from facemoment.core.records import FrameDrop

# A jumped clock becomes the new time base after this many frames in a row agreeing
# on it, over at least this long, with no plausible frame between them: a clock that
# really stepped keeps sending, while stray frames among a live stream's never qualify.
TIME_REBASE_FRAMES = 3
TIME_REBASE_S = 1.0


class ShedFrames:
    """The frames a buffer's drop strategy shed since the last batch: one
    ``frame_drop`` record (reason ``backpressure``) for all of them."""

    def __init__(self, stream_id: str, strategy: str) -> None:
        self.stream_id = stream_id
        self.strategy = strategy
        self._ids: List[int] = []
        self._depth = 0

    def note(self, dropped: List[Any], queue_depth: int) -> None:
        if dropped:
            self._ids.extend(int(d.frame_id) for d in dropped)
            self._depth = max(self._depth, queue_depth)

    def record(self, frame_id: Optional[int]) -> Optional[FrameDrop]:
        """The record for what was shed (None: nothing), then start counting anew."""
        if not self._ids:
            return None
        record = FrameDrop(
            frame_id=frame_id,
            stream=self.stream_id,
            dropped_frame_ids=self._ids,
            dropped_count=len(self._ids),
            reason="backpressure",
            strategy=self.strategy,
            queue_depth=self._depth,
        )
        self._ids, self._depth = [], 0
        return record


class FrameBuffer:
    """Frames between the socket and the dataflow, bounded by a drop strategy.

    ``offer`` returns the frames it dropped (possibly the offered one).  A
    capacity <= 0 means unbounded in count: nothing is dropped for count
    (``keyframe_only`` still keeps only keyframes).  ``max_bytes`` bounds the pixels
    held whatever the count: the oldest frames go first.  Not thread-safe: the
    source guards it with a lock.
    """

    def __init__(
        self, capacity: int, strategy: str = "skip_oldest", keyframe_interval: int = 3, max_bytes: Optional[int] = None
    ) -> None:
        if strategy not in DROP_STRATEGIES:
            raise ValueError(f"drop strategy {strategy!r} is not one of {', '.join(DROP_STRATEGIES)}")
        if keyframe_interval < 1:
            raise ValueError(f"keyframe_interval must be at least 1, got {keyframe_interval}")
        self.capacity = capacity
        self.strategy = strategy
        self.keyframe_interval = keyframe_interval
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: Deque[Any] = deque()

    @property
    def bounded(self) -> bool:
        return self.capacity > 0

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, item: Any) -> List[Any]:
        frame_id = int(item.frame_id)
        if self.strategy == "keyframe_only" and frame_id % self.keyframe_interval != 0:
            return [item]
        size = _nbytes(item)
        if self.max_bytes is not None and size > self.max_bytes:
            return [item]  # could never fit
        dropped: List[Any] = []
        if self.bounded and len(self._items) >= self.capacity:
            if self.strategy == "skip_intermediate" and self.capacity >= 2:
                # Keep the oldest (what the consumer is due next) and the newest.
                oldest = self._items.popleft()
                dropped = list(self._items)
                self._items.clear()
                self._items.append(oldest)
            else:
                dropped = [self._items.popleft()]
        self.bytes -= sum(_nbytes(x) for x in dropped)
        while self.max_bytes is not None and self._items and self.bytes + size > self.max_bytes:
            oldest = self._items.popleft()
            self.bytes -= _nbytes(oldest)
            dropped.append(oldest)
        self.bytes += size
        self._items.append(item)
        return dropped

    def drain(self) -> List[Any]:
        items = list(self._items)
        self._items.clear()
        self.bytes = 0
        return items


def _nbytes(item: Any) -> int:
    image = getattr(item, "image", None)
    return int(getattr(image, "nbytes", 0))


class TimeJumpGuard:
    """Rejects a ``t_src_ns`` that leaps ahead of the stream's event time by more
    than ``max_jump_s`` beyond the (monotonic) time that passed since the last
    accepted one: one frame stamped near 2^64 would otherwise make every later
    frame late.  A clock that really stepped is followed: the new time base is
    accepted once :data:`TIME_REBASE_FRAMES` frames agree on it over
    :data:`TIME_REBASE_S`, with no plausible frame between them.  Backward steps
    pass (a publisher restart, or late frames the alignment handles).  Not
    thread-safe: one receive thread owns it.
    """

    def __init__(self, max_jump_s: Optional[float], clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.max_jump_ns = None if max_jump_s is None else int(max_jump_s * 1e9)
        self._clock = clock
        self._base: Optional[Tuple[int, int]] = None  # (t_src_ns, clock) of the last accepted
        # The candidate new base: (first clock, last t_src_ns, frames) since the jump.
        self._rebase: Optional[Tuple[int, int, int]] = None

    def describe(self) -> str:
        return "unbounded" if self.max_jump_ns is None else f"{self.max_jump_ns / 1e9:g} s"

    def plausible(self, t_src_ns: int) -> bool:
        if self.max_jump_ns is None:
            return True
        now = self._clock()
        base = self._base
        if base is None or t_src_ns - base[0] <= self.max_jump_ns + (now - base[1]):
            self._accept(t_src_ns, now)
            return True
        candidate = self._rebase
        if candidate is None or abs(t_src_ns - candidate[1]) > self.max_jump_ns:
            candidate = (now, t_src_ns, 0)
        self._rebase = candidate = (candidate[0], t_src_ns, candidate[2] + 1)
        if candidate[2] >= TIME_REBASE_FRAMES and now - candidate[0] >= TIME_REBASE_S * 1e9:
            self._accept(t_src_ns, now)
            return True
        return False

    def _accept(self, t_src_ns: int, now: int) -> None:
        self._base = (t_src_ns, now)
        self._rebase = None
