"""A Bytewax source subscribing to a visualbase frame publisher over ZeroMQ.

The partition's background thread owns a SUB socket (receive high-water mark 2,
subscribed to ``frame``, as visualbase subscribers are) and drains it into a
:class:`FrameBuffer`.  ``next_batch`` hands Bytewax whatever is buffered without
blocking.  The stream carries ``Frame`` items and trace records (dicts whose first
key is ``record_type``) for the dataflow to route to its trace:

- ``frame_drop`` with reason ``backpressure``: frames the buffer's drop strategy
  discarded (all ids dropped since the previous batch, in one record);
- ``frame_drop`` with reason ``queue_full``: gaps in ``frame_id`` seen on the wire,
  i.e. frames lost at the publisher's high-water mark (``where`` says ``wire``, or
  ``while_down`` for frames missed between a snapshot and a resume);
- ``malformed_message``: a message that is not a valid frame, by kind, with the
  running count for that kind;
- ``publisher_restart``: a ``frame_id`` that does not increase.  visualbase numbers
  frames from 0 on every run, so a publisher that went away and came back shows up
  as ids going back; ZeroMQ reconnects by itself, this only keeps the restart from
  being read as a gap;
- ``source_summary``: the partition's counters, once, when the stream ends.

The stream ends (so downstream windows flush) when ``stop_event`` is set, when
``idle_timeout_s`` passes without a frame after frames have started, or when
``connect_timeout_s`` passes before the first frame.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple, Union

import zmq
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from facemoment.core.config import DROP_STRATEGIES
from facemoment.core.types import Frame, TraceRecord
from connectors.shares import in_share, parse_share, share_parts
from facemoment.formats.wire import FRAME_TOPIC, HEADER, WireError, unpack_frame

log = logging.getLogger(__name__)

RECEIVE_HWM = 2
RECEIVE_TIMEOUT_MS = 1000
# How long the receive thread waits on the socket before re-checking for stop.
POLL_INTERVAL_MS = 50
# How soon Bytewax should call again after an empty batch.
IDLE_WAKE = timedelta(milliseconds=5)
# Trace records waiting for the next batch; beyond this the oldest are lost (and counted).
MAX_PENDING_RECORDS = 10_000
# A gap record lists at most this many ids (dropped_count always has the total).
MAX_LISTED_IDS = 10_000

SourceItem = Union[Frame, TraceRecord]


@dataclass
class SourceStats:
    frames_received: int = 0
    frames_emitted: int = 0
    dropped_backpressure: int = 0
    lost_on_wire: int = 0
    malformed: Dict[str, int] = field(default_factory=dict)
    publisher_restarts: int = 0
    records_dropped: int = 0

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "SourceStats":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        stats = cls(**known)
        stats.malformed = dict(stats.malformed)
        return stats


class FrameBuffer:
    """Frames between the socket and the dataflow, bounded by a drop strategy.

    ``offer`` returns the frame ids it dropped (possibly the offered one).  A
    capacity <= 0 means unbounded: nothing is dropped for space (``keyframe_only``
    still keeps only keyframes).  Not thread-safe: the source guards it with a lock.
    """

    def __init__(self, capacity: int, strategy: str = "skip_oldest", keyframe_interval: int = 3) -> None:
        if strategy not in DROP_STRATEGIES:
            raise ValueError(f"drop strategy {strategy!r} is not one of {', '.join(DROP_STRATEGIES)}")
        if keyframe_interval < 1:
            raise ValueError(f"keyframe_interval must be at least 1, got {keyframe_interval}")
        self.capacity = capacity
        self.strategy = strategy
        self.keyframe_interval = keyframe_interval
        self._items: Deque[Any] = deque()

    @property
    def bounded(self) -> bool:
        return self.capacity > 0

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, item: Any) -> List[int]:
        frame_id = int(item.frame_id)
        if self.strategy == "keyframe_only" and frame_id % self.keyframe_interval != 0:
            return [frame_id]
        dropped: List[int] = []
        if self.bounded and len(self._items) >= self.capacity:
            if self.strategy == "skip_intermediate" and self.capacity >= 2:
                # Keep the oldest (what the consumer is due next) and the newest.
                oldest = self._items.popleft()
                dropped = [int(x.frame_id) for x in self._items]
                self._items.clear()
                self._items.append(oldest)
            else:
                dropped = [int(self._items.popleft().frame_id)]
        self._items.append(item)
        return dropped

    def drain(self) -> List[Any]:
        items = list(self._items)
        self._items.clear()
        return items


def _other_share_id(parts: List[Any], index: int, count: int) -> Optional[int]:
    """The frame id of a well-formed message for another share, else None."""
    if len(parts) != 3:
        return None
    header = parts[1].bytes if hasattr(parts[1], "bytes") else parts[1]
    if len(header) != HEADER.size:
        return None
    frame_id = HEADER.unpack(header)[0]
    return None if in_share(frame_id, index, count) else frame_id


class _ZmqFramePartition(StatefulSourcePartition[SourceItem, Dict[str, Any]]):
    def __init__(
        self,
        source: "ZmqFrameSource",
        stream_id: str,
        resume_state: Optional[Dict[str, Any]],
        share: Tuple[int, int] = (0, 1),
    ) -> None:
        self._address = source.address
        self._stream_id = stream_id
        # Every share sees every message; it keeps its own frame ids and reports
        # lost ids of its own share. Share 0 alone reports stream-wide events.
        self._share_index, self._share_count = share
        self._prefetcher = source.prefetcher() if source.prefetcher is not None else None
        self._idle_timeout_s = source.idle_timeout_s
        self._connect_timeout_s = source.connect_timeout_s
        self._stop_event = source.stop_event
        self._strategy = source.drop_strategy
        self._lock = threading.Lock()
        self._buffer = FrameBuffer(source.buffer_frames, source.drop_strategy, source.keyframe_interval)
        self._records: Deque[TraceRecord] = deque()
        self._pending_drops: List[int] = []
        self._drop_depth = 0
        state = resume_state or {}
        self._stats = SourceStats.from_dict(state.get("counts") or {})
        last = state.get("last_frame_id")
        self._last_seen_id: Optional[int] = None if last is None else int(last)
        self._accounted_id = self._last_seen_id
        self._resumed = last is not None
        self._got_frame = False
        self._started = time.monotonic()
        self._last_receive = self._started
        self._ended = False
        self._last_batch_empty = False
        self._receiver_error: Optional[str] = None

        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.SUB)
        self._socket.setsockopt(zmq.RCVHWM, RECEIVE_HWM)
        self._socket.setsockopt(zmq.RCVTIMEO, RECEIVE_TIMEOUT_MS)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.SUBSCRIBE, FRAME_TOPIC)
        try:
            self._socket.connect(self._address)
        except zmq.ZMQError as exc:
            self._socket.close(linger=0)
            self._context.term()
            raise ValueError(f"cannot connect to frame publisher {self._address!r}: {exc}") from exc
        self._stop = threading.Event()
        # The socket moves to the receive thread here; only that thread touches it from now on.
        self._thread = threading.Thread(target=self._receive_loop, name=f"zmq-frames-{stream_id}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ receive thread

    def _receive_loop(self) -> None:
        sock = self._socket
        try:
            while not self._stop.is_set():
                if not sock.poll(POLL_INTERVAL_MS):
                    continue
                while not self._stop.is_set():
                    try:
                        parts = sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self._handle(parts)
        except Exception as exc:  # keep the dataflow alive; next_batch ends the stream with the reason
            log.exception("frame receiver for %s failed", self._stream_id)
            self._receiver_error = f"{type(exc).__name__}: {exc}"
        finally:
            sock.close(linger=0)

    def _handle(self, parts: List[Any]) -> None:
        if self._share_count > 1:
            other = _other_share_id(parts, self._share_index, self._share_count)
            if other is not None:
                with self._lock:
                    self._got_frame = True
                    self._last_receive = time.monotonic()
                    self._check_sequence(other)
                    self._last_seen_id = other
                return
        try:
            frame_id, t_src_ns, image = unpack_frame(parts, copy=True)  # owned: zmq buffers get reused
        except WireError as exc:
            if self._share_index != 0:
                return
            with self._lock:
                count = self._stats.malformed.get(exc.kind, 0) + 1
                self._stats.malformed[exc.kind] = count
                self._record(
                    {
                        "record_type": "malformed_message",
                        "kind": exc.kind,
                        "detail": exc.message,
                        "count": count,
                        "stream": self._stream_id,
                    }
                )
            return
        frame = Frame(self._stream_id, frame_id, t_src_ns, image)
        with self._lock:
            self._stats.frames_received += 1
            self._got_frame = True
            self._last_receive = time.monotonic()
            self._check_sequence(frame_id)
            self._last_seen_id = frame_id
            dropped = self._buffer.offer(frame)
            if dropped:
                self._pending_drops.extend(dropped)
                self._stats.dropped_backpressure += len(dropped)
                self._drop_depth = max(self._drop_depth, len(self._buffer))
        if self._prefetcher is not None:
            for lost in dropped:
                if lost != frame_id:
                    self._prefetcher.discard(self._stream_id, lost)
            if frame_id not in dropped:
                self._prefetcher.prefetch(frame)

    def _check_sequence(self, frame_id: int) -> None:
        last = self._last_seen_id
        resumed, self._resumed = self._resumed, False
        if last is None:
            return
        if frame_id <= last:
            self._stats.publisher_restarts += 1
            if self._share_index != 0:
                return
            self._record(
                {
                    "record_type": "publisher_restart",
                    "frame_id": frame_id,
                    "previous_frame_id": last,
                    "stream": self._stream_id,
                    "address": self._address,
                }
            )
        elif frame_id > last + 1:
            lost = [i for i in range(last + 1, frame_id) if in_share(i, self._share_index, self._share_count)]
            if not lost:
                return
            missing = len(lost)
            self._stats.lost_on_wire += missing
            self._record(
                {
                    "record_type": "frame_drop",
                    "frame_id": frame_id,
                    "dropped_frame_ids": lost[:MAX_LISTED_IDS],
                    "dropped_count": missing,
                    "reason": "queue_full",
                    "where": "while_down" if resumed else "wire",
                    "queue_depth": len(self._buffer),
                    "stream": self._stream_id,
                }
            )

    def _record(self, record: TraceRecord) -> None:
        """Queue a trace record; the caller holds the lock."""
        if len(self._records) >= MAX_PENDING_RECORDS:
            self._records.popleft()
            self._stats.records_dropped += 1
        self._records.append(record)

    # ------------------------------------------------------------ worker thread

    def _take(self) -> List[SourceItem]:
        """Everything received so far: records first, then a drop record, then frames."""
        with self._lock:
            out: List[SourceItem] = list(self._records)
            self._records.clear()
            frames = self._buffer.drain()
            if self._pending_drops:
                out.append(
                    {
                        "record_type": "frame_drop",
                        "frame_id": self._last_seen_id,
                        "dropped_frame_ids": self._pending_drops,
                        "dropped_count": len(self._pending_drops),
                        "reason": "backpressure",
                        "strategy": self._strategy,
                        "queue_depth": self._drop_depth,
                        "stream": self._stream_id,
                    }
                )
                self._pending_drops = []
                self._drop_depth = 0
            out.extend(frames)
            self._stats.frames_emitted += len(frames)
            # Every id up to here is now emitted or reported.
            self._accounted_id = self._last_seen_id
        return out

    def _end_reason(self) -> Optional[str]:
        now = time.monotonic()
        if self._stop_event is not None and self._stop_event.is_set():
            return "stop_event"
        if self._receiver_error is not None:
            return "receiver_error"
        with self._lock:
            got_frame, last_receive = self._got_frame, self._last_receive
        if got_frame and self._idle_timeout_s is not None and now - last_receive >= self._idle_timeout_s:
            return "idle_timeout"
        if not got_frame and self._connect_timeout_s is not None and now - self._started >= self._connect_timeout_s:
            log.error("no frames from %s within %.1f s", self._address, self._connect_timeout_s)
            return "connect_timeout"
        return None

    def next_batch(self) -> List[SourceItem]:
        if self._ended:
            raise StopIteration
        out = self._take()
        reason = self._end_reason()
        if reason is not None:
            self._stop_receiver()
            out.extend(self._take())  # whatever arrived while stopping
            out.append(self._summary(reason))
            self._ended = True
        self._last_batch_empty = not out
        return out

    def next_awake(self) -> Optional[datetime]:
        if self._last_batch_empty:
            return datetime.now(timezone.utc) + IDLE_WAKE
        return None

    def _summary(self, reason: str) -> TraceRecord:
        record: TraceRecord = {
            "record_type": "source_summary",
            "stream": self._stream_id,
            "address": self._address,
            "end_reason": reason,
            "duration_s": round(time.monotonic() - self._started, 3),
        }
        record.update(self.stats.as_dict())
        if self._receiver_error is not None:
            record["error"] = self._receiver_error
        return record

    @property
    def stats(self) -> SourceStats:
        with self._lock:
            return copy.deepcopy(self._stats)

    def snapshot(self) -> Dict[str, Any]:
        with self._lock:
            return {"last_frame_id": self._accounted_id, "counts": self._stats.as_dict()}

    def _stop_receiver(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5.0)

    def close(self) -> None:
        self._stop_receiver()
        if self._thread.is_alive():
            log.warning("frame receiver for %s did not stop; leaving its socket to the process exit", self._stream_id)
            return
        if not self._context.closed:
            self._context.term()


class ZmqFrameSource(FixedPartitionedSource[SourceItem, Dict[str, Any]]):
    """Frames from a visualbase publisher (``Frame``) plus trace records (``dict``).

    :arg address: the publisher's address, e.g. ``tcp://127.0.0.1:5555``.
    :arg stream_id: stream of the frames; also the partition key.
    :arg idle_timeout_s: after frames have started, end after this long without one.
    :arg buffer_frames: frames held between the socket and the dataflow; <= 0 is unbounded.
    :arg drop_strategy: skip_oldest | skip_intermediate | keyframe_only.
    :arg keyframe_interval: keyframe_only keeps frame ids divisible by this.
    :arg stop_event: set it to end the stream gracefully.
    :arg connect_timeout_s: end if no frame arrives within this long of starting.

    ``partitions`` maps stream id to the built partition, whose ``stats`` are the
    receive counters (useful after ``run_main``).
    """

    def __init__(
        self,
        address: str = "tcp://127.0.0.1:5555",
        stream_id: str = "cam0",
        *,
        idle_timeout_s: Optional[float] = None,
        buffer_frames: int = 8,
        drop_strategy: str = "skip_oldest",
        keyframe_interval: int = 3,
        stop_event: Optional[threading.Event] = None,
        connect_timeout_s: Optional[float] = None,
        before_connect: Optional[Callable[[], None]] = None,
        shares: int = 1,
        prefetcher: Optional[Callable[[], Any]] = None,
    ) -> None:
        if "://" not in address:
            raise ValueError(f"frame publisher address {address!r} must look like tcp://host:port")
        if drop_strategy not in DROP_STRATEGIES:
            raise ValueError(f"drop strategy {drop_strategy!r} is not one of {', '.join(DROP_STRATEGIES)}")
        if keyframe_interval < 1:
            raise ValueError(f"keyframe_interval must be at least 1, got {keyframe_interval}")
        for name, value in (("idle_timeout_s", idle_timeout_s), ("connect_timeout_s", connect_timeout_s)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        self.address = address
        self.stream_id = stream_id
        self.idle_timeout_s = idle_timeout_s
        self.buffer_frames = buffer_frames
        self.drop_strategy = drop_strategy
        self.keyframe_interval = keyframe_interval
        self.stop_event = stop_event
        self.connect_timeout_s = connect_timeout_s
        # Runs on the partition's worker before subscribing, e.g. to load models so
        # the first frames are not lost while they load.
        self.before_connect = before_connect
        self.shares = max(1, shares)
        # Returns an object with prefetch(frame) and discard(stream_id, frame_id):
        # extraction starts as soon as a frame is accepted, not when it is emitted.
        self.prefetcher = prefetcher
        self.partitions: Dict[str, _ZmqFramePartition] = {}

    def list_parts(self) -> List[str]:
        return share_parts(self.stream_id, self.shares)

    def build_part(
        self, step_id: str, for_part: str, resume_state: Optional[Dict[str, Any]]
    ) -> _ZmqFramePartition:
        if self.before_connect is not None:
            self.before_connect()
        stream_id, index, count = parse_share(for_part)
        part = _ZmqFramePartition(self, stream_id, resume_state, (index, count))
        self.partitions[for_part] = part
        return part
