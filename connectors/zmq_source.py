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
- ``malformed_message``: messages that are not valid frames, at most one record per
  kind per second (``messages``: how many it stands for); kinds include
  ``too_large`` (over ``max_frame_bytes``) and ``time_jump`` (see
  :class:`connectors.frame_buffer.TimeJumpGuard`);
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
from datetime import timedelta
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple, Union

import zmq
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from facemoment.core.addresses import zmq_address
from facemoment.core.records import FrameDrop, MalformedMessage, PublisherRestart, SourceSummary
from facemoment.core.types import Frame, TraceRecord
from connectors.frame_buffer import DROP_STRATEGIES, FrameBuffer, TimeJumpGuard
from connectors.receiver import ReceivedBatches, drain, sub_socket
from connectors.shares import Gap, StreamShares, frame_gap, in_share, parse_share
from facemoment.formats.wire import FRAME_TOPIC, WireError, unpack_frame, unpack_header

log = logging.getLogger(__name__)

RECEIVE_HWM = 2
RECEIVE_TIMEOUT_MS = 1000
# How long the receive thread waits on the socket before re-checking for stop.
POLL_INTERVAL_MS = 50
# How soon Bytewax should call again after an empty batch.
IDLE_WAKE = timedelta(milliseconds=5)
# Trace records waiting for the next batch; beyond this the oldest are lost (and counted).
MAX_PENDING_RECORDS = 10_000
# A gap record lists its ids only up to this many (dropped_count and dropped_range always).
MAX_LISTED_IDS = 32
# Malformed messages of one kind make at most one trace record per this interval.
MALFORMED_INTERVAL_S = 1.0
# Defaults: the largest frame message (a 4K BGR frame is 24.9 MB) and the buffer's bytes.
DEFAULT_MAX_FRAME_BYTES = 32 * 1024 * 1024
DEFAULT_BUFFER_MAX_BYTES = 256 * 1024 * 1024

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


class _ZmqFramePartition(ReceivedBatches, StatefulSourcePartition[SourceItem, Dict[str, Any]]):
    IDLE_WAKE = IDLE_WAKE

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
        self._idle_timeout_s = source.idle_timeout_s
        self._connect_timeout_s = source.connect_timeout_s
        self._stop_event = source.stop_event
        self._strategy = source.drop_strategy
        self._lock = threading.Lock()
        self._buffer = FrameBuffer(
            source.buffer_frames, source.drop_strategy, source.keyframe_interval, source.buffer_max_bytes
        )
        self._max_frame_bytes = source.max_frame_bytes
        self._time_guard = TimeJumpGuard(source.max_time_jump_s)
        self._malformed_pending: Dict[str, List[Any]] = {}
        self._malformed_flushed = 0.0
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
        self._receiver_error: Optional[str] = None

        self._context = zmq.Context()
        # ZeroMQ refuses a message over MAXMSGSIZE before allocating it and drops that
        # connection; the receive thread connects again (the frames lost meanwhile
        # show up as a gap).
        try:
            self._socket = self._connected_socket()
        except zmq.ZMQError as exc:
            self._context.term()
            raise ValueError(f"cannot connect to frame publisher {self._address!r}: {exc}") from exc
        self._stop = threading.Event()
        # The socket moves to the receive thread here; only that thread touches it from now on.
        self._thread = threading.Thread(target=self._receive_loop, name=f"zmq-frames-{stream_id}", daemon=True)
        self._thread.start()

    def _connected_socket(self) -> zmq.Socket:
        limit = {} if self._max_frame_bytes is None else {"MAXMSGSIZE": self._max_frame_bytes}
        sock = sub_socket(self._context, FRAME_TOPIC, RECEIVE_HWM, RCVTIMEO=RECEIVE_TIMEOUT_MS, **limit)
        try:
            sock.connect(self._address)
        except zmq.ZMQError:
            sock.close(linger=0)
            raise
        return sock

    # ------------------------------------------------------------ receive thread

    def _receive_loop(self) -> None:
        sock = self._socket
        # A message over MAXMSGSIZE makes ZeroMQ drop the connection for good: the
        # monitor sees that and the source connects again.
        monitor = self._monitor(sock)
        try:
            while not self._stop.is_set():
                poller = zmq.Poller()
                poller.register(sock, zmq.POLLIN)
                if monitor is not None:
                    poller.register(monitor, zmq.POLLIN)
                while not self._stop.is_set():
                    ready = dict(poller.poll(POLL_INTERVAL_MS))
                    if sock in ready:
                        drain(sock, self._stop, self._handle, copy=False)
                    if monitor is not None and monitor in ready:
                        break
                else:
                    break
                # Take every whole message still queued, then replace the socket. Not
                # disconnect(): libzmq aborts when a pipe is torn down under a message
                # half read, and a fresh socket has no such pipe.
                drain(sock, self._stop, self._handle, copy=False)
                self._close(sock, monitor)
                sock, monitor = None, None
                sock = self._socket = self._connected_socket()
                monitor = self._monitor(sock)
                with self._lock:
                    self._stats.reconnects += 1
        except Exception as exc:  # keep the dataflow alive; next_batch ends the stream with the reason
            log.exception("frame receiver for %s failed", self._stream_id)
            self._receiver_error = f"{type(exc).__name__}: {exc}"
        finally:
            if sock is not None:
                self._close(sock, monitor)

    def _monitor(self, sock: zmq.Socket) -> Optional[zmq.Socket]:
        return sock.get_monitor_socket(zmq.EVENT_DISCONNECTED) if self._max_frame_bytes is not None else None

    @staticmethod
    def _close(sock: zmq.Socket, monitor: Optional[zmq.Socket]) -> None:
        if monitor is not None:
            sock.disable_monitor()
            monitor.close(linger=0)
        sock.close(linger=0)

    def _handle(self, parts: List[Any]) -> None:
        # Every share validates the whole header of every message it reads: a
        # malformed header must not cost the other shares what it costs share 0.
        try:
            frame_id, t_src_ns, _w, _h, _c = unpack_header(parts, self._max_frame_bytes)
        except WireError as exc:
            with self._lock:
                self._note_malformed(exc)
            return
        if not self._time_guard.plausible(t_src_ns):
            exc = WireError("time_jump", f"t_src_ns {t_src_ns} is more than {self._time_guard.describe()} past the stream's time")
            with self._lock:
                self._note_malformed(exc)
                if self._last_seen_id is not None and frame_id == self._last_seen_id + 1:
                    self._last_seen_id = frame_id  # the next id, accounted for: not a gap
            return
        if not in_share(frame_id, self._share_index, self._share_count):
            with self._lock:
                self._got_frame = True
                self._last_receive = time.monotonic()
                self._check_sequence(frame_id)
                self._last_seen_id = frame_id
            return
        _, _, image = unpack_frame(parts, copy=True)  # owned: zmq buffers get reused
        frame = Frame(self._stream_id, frame_id, t_src_ns, image)
        with self._lock:
            self._stats.frames_received += 1
            self._got_frame = True
            self._last_receive = time.monotonic()
            self._check_sequence(frame_id)
            self._last_seen_id = frame_id
            dropped = self._buffer.offer(frame)
            if dropped:
                self._pending_drops.extend(int(d.frame_id) for d in dropped)
                self._stats.dropped_backpressure += len(dropped)
                self._drop_depth = max(self._drop_depth, len(self._buffer))

    def _note_malformed(self, exc: WireError) -> None:
        """Count a malformed message; the caller holds the lock. Share 0 alone reports."""
        if self._share_index != 0:
            return
        self._stats.malformed[exc.kind] = self._stats.malformed.get(exc.kind, 0) + 1
        pending = self._malformed_pending.setdefault(exc.kind, [0, ""])
        pending[0] += 1
        pending[1] = exc.message

    def _flush_malformed(self, force: bool = False) -> None:
        """One record per kind for the messages counted since the last; the caller holds the lock."""
        now = time.monotonic()
        if not self._malformed_pending or (not force and now - self._malformed_flushed < MALFORMED_INTERVAL_S):
            return
        for kind, (messages, detail) in self._malformed_pending.items():
            self._record(
                MalformedMessage(
                    kind=kind, detail=detail, count=self._stats.malformed[kind], messages=messages, stream=self._stream_id
                )
            )
        self._malformed_pending = {}
        self._malformed_flushed = now

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
                PublisherRestart(frame_id=frame_id, previous_frame_id=last, stream=self._stream_id, address=self._address)
            )
            return
        gap = frame_gap(last, frame_id, self._share_index, self._share_count)
        if gap is not None:
            self._stats.lost_on_wire += gap.count
            self._record(self._gap_record(frame_id, gap, "while_down" if resumed else "wire"))

    def _gap_record(self, frame_id: int, gap: Gap, where: str) -> FrameDrop:
        return FrameDrop(
            frame_id=frame_id,
            stream=self._stream_id,
            dropped_frame_ids=gap.listed(self._share_index, self._share_count, MAX_LISTED_IDS),
            dropped_count=gap.count,
            dropped_range=[gap.first, gap.last],
            reason="queue_full",
            where=where,
            queue_depth=len(self._buffer),
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
            self._flush_malformed()
            out: List[SourceItem] = list(self._records)
            self._records.clear()
            frames = self._buffer.drain()
            if self._pending_drops:
                out.append(
                    FrameDrop(
                        frame_id=self._last_seen_id,
                        stream=self._stream_id,
                        dropped_frame_ids=self._pending_drops,
                        dropped_count=len(self._pending_drops),
                        reason="backpressure",
                        strategy=self._strategy,
                        queue_depth=self._drop_depth,
                    )
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

    def _take_rest(self) -> List[SourceItem]:
        with self._lock:
            self._flush_malformed(force=True)
        return self._take()  # whatever arrived while stopping

    def _summary(self, reason: str) -> SourceSummary:
        return SourceSummary(
            stream=self._stream_id,
            address=self._address,
            end_reason=reason,
            duration_s=round(time.monotonic() - self._started, 3),
            # share 0 counts malformed messages
            share=f"{self._share_index}of{self._share_count}" if self._share_count > 1 else None,
            error=self._receiver_error,
            **self.stats.as_dict(),
        )

    @property
    def stats(self) -> SourceStats:
        with self._lock:
            return copy.deepcopy(self._stats)

    def snapshot(self) -> Dict[str, Any]:
        with self._lock:
            return {"last_frame_id": self._accounted_id, "counts": self._stats.as_dict()}

    def close(self) -> None:
        self._stop_receiver()
        if self._thread.is_alive():
            log.warning("frame receiver for %s did not stop; leaving its socket to the process exit", self._stream_id)
            return
        if not self._context.closed:
            self._context.term()


class ZmqFrameSource(StreamShares, FixedPartitionedSource[SourceItem, Dict[str, Any]]):
    """Frames from a visualbase publisher (``Frame``) plus trace records (``dict``).

    :arg address: the publisher's address, e.g. ``tcp://127.0.0.1:5555``.
    :arg stream_id: stream of the frames; also the partition key.
    :arg idle_timeout_s: after frames have started, end after this long without one.
    :arg buffer_frames: frames held between the socket and the dataflow; <= 0 is unbounded.
    :arg drop_strategy: skip_oldest | skip_intermediate | keyframe_only.
    :arg keyframe_interval: keyframe_only keeps frame ids divisible by this.
    :arg stop_event: set it to end the stream gracefully.
    :arg connect_timeout_s: end if no frame arrives within this long of starting.
    :arg max_frame_bytes: the largest frame payload taken (None: no limit).
    :arg buffer_max_bytes: pixels held between the socket and the dataflow (None: no limit).
    :arg max_time_jump_s: event time may leap ahead this much beyond the time that
        passed (None: no check); see ``time_jump`` above.

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
        shares: int = 1,
        max_frame_bytes: Optional[int] = DEFAULT_MAX_FRAME_BYTES,
        buffer_max_bytes: Optional[int] = DEFAULT_BUFFER_MAX_BYTES,
        max_time_jump_s: Optional[float] = 60.0,
    ) -> None:
        zmq_address(address, "frame publisher")
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
        self.shares = max(1, shares)
        self.max_frame_bytes = max_frame_bytes
        self.buffer_max_bytes = buffer_max_bytes
        self.max_time_jump_s = max_time_jump_s
        self.partitions: Dict[str, _ZmqFramePartition] = {}

    def build_part(
        self, step_id: str, for_part: str, resume_state: Optional[Dict[str, Any]]
    ) -> _ZmqFramePartition:
        stream_id, index, count = parse_share(for_part)
        part = _ZmqFramePartition(self, stream_id, resume_state, (index, count))
        self.partitions[for_part] = part
        return part
