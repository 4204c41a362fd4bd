"""A Bytewax source subscribing to a visualbase frame publisher over ZeroMQ.

Each partition is a thin layer over two parts that know nothing of Bytewax: a
:class:`FrameReceiver` (socket, thread, reconnects, the frame buffer) and a
:class:`FrameAccounting` (gaps, restarts, id jumps, malformed messages, counters,
resume state). ``next_batch`` hands Bytewax whatever is buffered without blocking.
The stream carries ``Frame`` items and trace records for the dataflow to route to
its trace:

- ``frame_drop`` with reason ``backpressure``: frames the buffer's drop strategy
  discarded (all ids dropped since the previous batch, in one record);
- ``frame_drop`` with reason ``queue_full``: gaps in ``frame_id`` seen on the wire,
  i.e. frames lost at the publisher's high-water mark (``where`` says ``wire``, or
  ``while_down`` for frames missed between a snapshot and a resume);
- ``malformed_message``: messages that are not valid frames, at most one record per
  kind per second (``messages``: how many it stands for); kinds include
  ``too_large`` (over ``max_frame_bytes``, read from the header or refused by
  ZeroMQ) and ``time_jump`` (see :class:`connectors.frame_buffer.TimeJumpGuard`);
- ``publisher_restart``: a ``frame_id`` that does not increase.  visualbase numbers
  frames from 0 on every run, so a publisher that went away and came back shows up
  as ids going back; ZeroMQ reconnects by itself, this only keeps the restart from
  being read as a gap. With ``kind: id_jump``: an id further ahead than the stream
  could have numbered meanwhile, counted once rather than as lost frames;
- ``source_summary``: the partition's counters, once, when the stream ends.

The stream ends (so downstream windows flush) when ``stop_event`` is set, when
``idle_timeout_s`` passes without a frame after frames have started, or when
``connect_timeout_s`` passes before the first frame.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional, Tuple, Union

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from typing_extensions import override

from connectors.frame_accounting import MALFORMED_INTERVAL_S, FrameAccounting, SourceStats
from connectors.frame_buffer import FrameBuffer
from connectors.frame_receiver import FrameReceiver
from connectors.shares import StreamShares, parse_share
from facemoment.core.addresses import zmq_address
from facemoment.core.config import SourceConfig
from facemoment.core.types import Frame, TraceRecord

log = logging.getLogger(__name__)

# How soon Bytewax should call again after an empty batch.
IDLE_WAKE = timedelta(milliseconds=5)

SourceItem = Union[Frame, TraceRecord]

__all__ = ["ZmqFrameSource", "SourceItem", "SourceStats", "FrameBuffer", "MALFORMED_INTERVAL_S"]


class _ZmqFramePartition(StatefulSourcePartition[SourceItem, Dict[str, Any]]):
    def __init__(
        self,
        source: "ZmqFrameSource",
        stream_id: str,
        resume_state: Optional[Dict[str, Any]],
        share: Tuple[int, int] = (0, 1),
    ) -> None:
        self._source = source
        self._accounting = FrameAccounting(stream_id, source.address, share, resume_state, source.drop_strategy)
        buffer = FrameBuffer(source.buffer_frames, source.drop_strategy, source.keyframe_interval, source.buffer_max_bytes)
        self._receiver = FrameReceiver(
            source.address,
            stream_id,
            buffer,
            self._accounting,
            share=share,
            max_frame_bytes=source.max_frame_bytes,
            max_time_jump_s=source.max_time_jump_s,
        )
        self._ended = False
        self._empty = False

    @override
    def next_batch(self) -> List[SourceItem]:
        if self._ended:
            raise StopIteration
        out = self._receiver.take()
        reason = self._end_reason()
        if reason is not None:
            self._receiver.stop()
            out.extend(self._receiver.take(force_malformed=True))  # whatever arrived while stopping
            with self._receiver.lock:
                out.append(self._accounting.summary(reason, self._receiver.error))
            self._ended = True
        self._empty = not out
        return out

    @override
    def next_awake(self) -> Optional[datetime]:
        return datetime.now(timezone.utc) + IDLE_WAKE if self._empty else None

    def wait_for_items(self, timeout_s: float) -> bool:
        """Block until the receive thread handled a message, at most `timeout_s`;
        whether it did. A reader on its own thread (the extract stage's read-ahead)
        waits here rather than polling."""
        return self._receiver.wait(timeout_s)

    @override
    def snapshot(self) -> Dict[str, Any]:
        with self._receiver.lock:
            return self._accounting.snapshot()

    @override
    def close(self) -> None:
        self._receiver.close()

    @property
    def stats(self) -> SourceStats:
        with self._receiver.lock:
            return self._accounting.counts()

    @property
    def receiving(self) -> bool:
        """Whether the receive thread still runs."""
        return self._receiver.alive

    def _end_reason(self) -> Optional[str]:
        source = self._source
        if source.stop_event is not None and source.stop_event.is_set():
            return "stop_event"
        if self._receiver.error is not None:
            return "receiver_error"
        with self._receiver.lock:
            got_frame, last_receive, started = (
                self._accounting.got_frame,
                self._accounting.last_receive,
                self._accounting.started,
            )
        now = time.monotonic()
        if got_frame and source.idle_timeout_s is not None and now - last_receive >= source.idle_timeout_s:
            return "idle_timeout"
        if not got_frame and source.connect_timeout_s is not None and now - started >= source.connect_timeout_s:
            log.error("no frames from %s within %.1f s", source.address, source.connect_timeout_s)
            return "connect_timeout"
        return None


class ZmqFrameSource(StreamShares, FixedPartitionedSource[SourceItem, Dict[str, Any]]):
    """Frames from a visualbase publisher (``Frame``) plus trace records.

    :arg address: the publisher's address, e.g. ``tcp://127.0.0.1:5555``.
    :arg stream_id: stream of the frames; also the partition key.
    :arg settings: the `source` section (facemoment/core/config): idle timeout,
        buffer and drop strategy, frame and buffer size limits, the time-jump check
        (0: none). Checked there; the defaults are its defaults.
    :arg stop_event: set it to end the stream gracefully.
    :arg connect_timeout_s: end if no frame arrives within this long of starting.
    :arg shares: partitions splitting the stream by frame id (connectors/shares.py).

    ``partitions`` maps stream id to the built partition, whose ``stats`` are the
    receive counters (useful after ``run_main``).
    """

    def __init__(
        self,
        address: str,
        stream_id: str,
        settings: Optional[SourceConfig] = None,
        *,
        stop_event: Optional[threading.Event] = None,
        connect_timeout_s: Optional[float] = None,
        shares: int = 1,
    ) -> None:
        zmq_address(address, "frame publisher")
        src = settings or SourceConfig()
        self.address = address
        self.stream_id = stream_id
        self.idle_timeout_s = src.idle_timeout_s
        self.buffer_frames = src.buffer_frames
        self.drop_strategy = src.drop_strategy
        self.keyframe_interval = src.keyframe_interval
        self.max_frame_bytes = int(src.max_frame_mb * 1024 * 1024)
        self.buffer_max_bytes = int(src.buffer_max_mb * 1024 * 1024)
        self.max_time_jump_s = src.max_time_jump_s or None
        self.stop_event = stop_event
        self.connect_timeout_s = connect_timeout_s
        self.shares = max(1, shares)
        self.partitions: Dict[str, _ZmqFramePartition] = {}

    @override
    def build_part(
        self, step_id: str, for_part: str, resume_state: Optional[Dict[str, Any]]
    ) -> _ZmqFramePartition:
        stream_id, index, count = parse_share(for_part)
        part = _ZmqFramePartition(self, stream_id, resume_state, (index, count))
        self.partitions[for_part] = part
        return part
