"""A Bytewax source reading one of visualbase ingest's proxy streams from its FIFO.

visualbase's ``ingest --proxy NAME:PATH:W:H:FPS`` creates a FIFO at PATH, waits in
``open()`` for a reader, then writes each frame as a 20-byte header and a JPEG
(facemoment.formats.proxy_pipe). A reader that closes the FIFO breaks that writer
for good, so this source opens the FIFO only in its partition, to read it, and keeps
it open until the stream ends. The partition's background thread:

- waits (looking at the path, never opening it) until a FIFO exists there, opens it
  without blocking (which lets the writer's ``open()`` return) and reads whatever
  comes, reassembling frames from the byte stream and decoding their JPEGs;
- when the writer goes away (end of file on the pipe) or the FIFO at the path is
  replaced (a new ingest removes the old one and creates its own), opens the path
  again and joins the new writer (counted in ``reconnects``).

Proxy streams are sampled down: a 10 fps proxy of a 30 fps camera has ids that
advance by about 3. The usual advance (the most common of the recent ones) is the
stream's step, so only advances of two steps or more are gaps; a gap counts the
proxy frames missing, not the camera's ids.

Trace records, as the ZeroMQ frame source writes them:

- ``frame_drop`` reason ``backpressure``: frames the buffer's drop strategy discarded;
- ``frame_drop`` reason ``queue_full`` (``where`` ``pipe``, or ``while_down`` after a
  resume): proxy frames missing between two that arrived;
- ``malformed_message``: kinds ``too_large``, ``bad_header``, ``jpeg`` (see
  proxy_pipe), ``truncated`` (a writer that went away mid-frame), ``time_jump``;
  at most one record per kind per second;
- ``publisher_restart``: ids that go back (a new writer numbering from 0);
- ``source_summary`` once at the end.

The stream ends when ``stop_event`` is set, ``idle_timeout_s`` after the last frame
(once frames have started) or ``connect_timeout_s`` without any frame.
"""

from __future__ import annotations

import copy
import errno
import logging
import os
import select
import threading
import time
from collections import deque
from datetime import timedelta
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple, Union

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from connectors.frame_accounting import SourceStats  # the counters every frame source reports
from connectors.frame_buffer import FrameBuffer, ShedFrames, TimeJumpGuard
from connectors.receiver import ArrivalSignal, ReceivedBatches, stop_receiver
from connectors.id_steps import IdStep
from connectors.malformed_tally import MalformedTally
from facemoment.core.config import SourceConfig
from facemoment.core.records import FrameDrop, PublisherRestart, SourceSummary
from facemoment.core.types import Frame, TraceRecord
from facemoment.formats.proxy_pipe import (
    FIFO_SCHEME,
    ProxyFrameParser,
    decode_proxy_jpeg,
    fifo_path,
    is_fifo,
)
from facemoment.formats.wire import WireError

log = logging.getLogger(__name__)

POLL_MS = 50  # how often the reader looks at the stop flag and at the path
READ_BYTES = 1 << 20
IDLE_WAKE = timedelta(milliseconds=5)
MAX_PENDING_RECORDS = 10_000

SourceItem = Union[Frame, TraceRecord]


class _FifoPartition(ReceivedBatches, StatefulSourcePartition[SourceItem, Dict[str, Any]]):
    IDLE_WAKE = IDLE_WAKE

    def __init__(self, source: "FifoFrameSource", resume_state: Optional[Dict[str, Any]]) -> None:
        self._path = source.path
        self._address = f"{FIFO_SCHEME}{source.path}"
        self._stream_id = source.stream_id
        self._idle_timeout_s = source.idle_timeout_s
        self._connect_timeout_s = source.connect_timeout_s
        self._stop_event = source.stop_event
        self._lock = threading.Lock()
        self._buffer = FrameBuffer(source.buffer_frames, source.drop_strategy, source.keyframe_interval, source.buffer_max_bytes)
        self._parser = ProxyFrameParser(source.max_frame_bytes)
        self._time_guard = TimeJumpGuard(source.max_time_jump_s)
        self._records: Deque[TraceRecord] = deque()
        self._shed = ShedFrames(self._stream_id, source.drop_strategy)
        state = resume_state or {}
        self._stats = SourceStats.from_dict(state.get("counts") or {})
        self._malformed = MalformedTally(self._stream_id, self._stats.malformed)
        self._step = IdStep(state.get("steps"))
        last = state.get("last_frame_id")
        self._last_seen_id: Optional[int] = None if last is None else int(last)
        self._accounted_id = self._last_seen_id
        self._resumed = last is not None
        self._got_frame = False
        self._started = time.monotonic()
        self._last_receive = self._started
        self._receiver_error: Optional[str] = None
        self._stop = threading.Event()
        self._arrived = ArrivalSignal()  # set whenever a read brought frames or records
        self._thread = threading.Thread(target=self._receive_loop, name=f"fifo-frames-{self._stream_id}", daemon=True)
        self._thread.start()

    def wait_for_items(self, timeout_s: float) -> bool:
        """Block until a read brought frames or records, at most `timeout_s`; whether one
        did. A reader on its own thread (the extract stage's read-ahead) waits here."""
        return self._arrived.wait(timeout_s)

    # ------------------------------------------------------------ receive thread

    def _receive_loop(self) -> None:
        writers = 0
        try:
            while not self._stop.is_set():
                fd = self._open_when_present()
                if fd is None:
                    break
                try:
                    wrote = self._read_until_writer_gone(fd)
                finally:
                    os.close(fd)
                if wrote:
                    writers += 1
                    if writers > 1:
                        with self._lock:
                            self._stats.reconnects += 1
        except Exception as exc:  # keep the dataflow alive; next_batch ends the stream with the reason
            log.exception("proxy pipe reader for %s failed", self._stream_id)
            self._receiver_error = f"{type(exc).__name__}: {exc}"

    def _open_when_present(self) -> Optional[int]:
        """Open the FIFO once one is at the path (None if stopped first). Never blocks:
        a non-blocking open of a FIFO's read end succeeds with or without a writer."""
        warned = False
        while not self._stop.is_set():
            if is_fifo(self._path):
                try:
                    return os.open(self._path, os.O_RDONLY | os.O_NONBLOCK)
                except FileNotFoundError:
                    pass  # removed between the look and the open: look again
            elif os.path.exists(self._path) and not warned:
                warned = True
                log.error("%s is not a FIFO; waiting for a proxy writer to create one", self._path)
            self._stop.wait(POLL_MS / 1000.0)
        return None

    def _replaced(self, fd: int) -> bool:
        """Whether the path no longer names the FIFO open on ``fd``."""
        try:
            at_path = os.stat(self._path)
        except OSError:
            return True
        mine = os.fstat(fd)
        return (at_path.st_ino, at_path.st_dev) != (mine.st_ino, mine.st_dev)

    def _read_until_writer_gone(self, fd: int) -> bool:
        """Read frames until the writer closes or the FIFO is replaced; True if any byte came."""
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP)
        got_bytes = False
        while not self._stop.is_set():
            if not poller.poll(POLL_MS):
                if self._replaced(fd):
                    break
                continue
            try:
                data = os.read(fd, READ_BYTES)
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise
            if not data:
                break  # the writer closed its end
            got_bytes = True
            items = self._parser.feed(data)
            for item in items:
                if isinstance(item, WireError):
                    with self._lock:
                        self._note_malformed(item)
                else:
                    self._handle(*item)
            if items:
                self._arrived.set()
        if self._parser.pending_bytes:
            with self._lock:
                self._note_malformed(WireError("truncated", f"the writer went away {self._parser.pending_bytes} bytes into a frame"))
        self._parser.reset()
        return got_bytes

    def _handle(self, frame_id: int, t_src_ns: int, jpeg: bytes) -> None:
        if not self._time_guard.plausible(t_src_ns):
            exc = WireError("time_jump", f"t_src_ns {t_src_ns} is more than {self._time_guard.describe()} past the stream's time")
            with self._lock:
                self._note_malformed(exc)
            return
        try:
            image = decode_proxy_jpeg(jpeg)
        except WireError as exc:
            with self._lock:
                self._note_malformed(exc)
            return
        frame = Frame(self._stream_id, frame_id, t_src_ns, image)
        with self._lock:
            self._stats.frames_received += 1
            self._got_frame = True
            self._last_receive = time.monotonic()
            self._check_sequence(frame_id)
            self._last_seen_id = frame_id
            dropped = self._buffer.offer(frame)
            self._shed.note(dropped, len(self._buffer))
            self._stats.dropped_backpressure += len(dropped)

    def _note_malformed(self, exc: WireError) -> None:
        """Count a malformed frame; the caller holds the lock."""
        self._malformed.add(exc.kind, exc.message)

    def _flush_malformed(self, force: bool = False) -> None:
        for record in self._malformed.due(force):
            self._record(record)

    def _check_sequence(self, frame_id: int) -> None:
        last = self._last_seen_id
        resumed, self._resumed = self._resumed, False
        if last is None:
            return
        if frame_id <= last:
            self._stats.publisher_restarts += 1
            self._record(PublisherRestart(frame_id=frame_id, previous_frame_id=last, stream=self._stream_id, address=self._address))
            return
        gap = self._step.gap(last, frame_id)
        if gap is None:
            return
        self._stats.lost_on_wire += gap.count
        self._record(
            FrameDrop(
                frame_id=frame_id,
                stream=self._stream_id,
                dropped_frame_ids=self._step.listed(last, gap),
                dropped_count=gap.count,
                dropped_range=[gap.first, gap.last],
                reason="queue_full",
                where="while_down" if resumed else "pipe",
                queue_depth=len(self._buffer),
            )
        )

    def _record(self, record: TraceRecord) -> None:
        if len(self._records) >= MAX_PENDING_RECORDS:
            self._records.popleft()
            self._stats.records_dropped += 1
        self._records.append(record)

    # ------------------------------------------------------------ worker thread

    def _take(self) -> List[SourceItem]:
        with self._lock:
            self._flush_malformed()
            out: List[SourceItem] = list(self._records)
            self._records.clear()
            frames = self._buffer.drain()
            shed = self._shed.record(self._last_seen_id)
            if shed is not None:
                out.append(shed)
            out.extend(frames)
            self._stats.frames_emitted += len(frames)
            self._accounted_id = self._last_seen_id
        return out

    def _stop_receiver(self) -> None:
        stop_receiver(self._stop, self._thread)

    def _end_reason(self) -> Optional[str]:
        if self._stop_event is not None and self._stop_event.is_set():
            return "stop_event"
        if self._receiver_error is not None:
            return "receiver_error"
        now = time.monotonic()
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
        return self._take()

    def _summary(self, reason: str) -> SourceSummary:
        return SourceSummary(
            stream=self._stream_id,
            address=self._address,
            end_reason=reason,
            duration_s=round(time.monotonic() - self._started, 3),
            error=self._receiver_error,
            **self.stats.as_dict(),
        )

    @property
    def stats(self) -> SourceStats:
        with self._lock:
            return copy.deepcopy(self._stats)

    def snapshot(self) -> Dict[str, Any]:
        with self._lock:
            return {"last_frame_id": self._accounted_id, "counts": self._stats.as_dict(), "steps": self._step.recent()}

    def close(self) -> None:
        self._stop_receiver()


class FifoFrameSource(FixedPartitionedSource[SourceItem, Dict[str, Any]]):
    """Frames of one visualbase proxy stream read from its FIFO, plus trace records.

    :arg path: the FIFO's path (``fifo:///path`` or the plain path).
    :arg stream_id: the stream of the frames; also the partition key (one partition:
        a FIFO has one reader).

    :arg settings: the `source` section, as for the ZeroMQ frame source
        (connectors.zmq_source); `max_frame_mb` bounds one JPEG.

    The other arguments are the ZeroMQ frame source's.
    """

    def __init__(
        self,
        path: str,
        stream_id: str,
        settings: Optional[SourceConfig] = None,
        *,
        stop_event: Optional[threading.Event] = None,
        connect_timeout_s: Optional[float] = None,
    ) -> None:
        self.path = fifo_path(path)
        if not self.path.startswith("/") and path.startswith(FIFO_SCHEME):
            raise ValueError(f"FIFO source {path!r} must name an absolute path: fifo:///path/to/pipe")
        src = settings or SourceConfig()
        self.stream_id = stream_id
        self.idle_timeout_s = src.idle_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.buffer_frames = src.buffer_frames
        self.drop_strategy = src.drop_strategy
        self.keyframe_interval = src.keyframe_interval
        self.stop_event = stop_event
        self.max_frame_bytes = int(src.max_frame_mb * 1024 * 1024)
        self.buffer_max_bytes = int(src.buffer_max_mb * 1024 * 1024)
        self.max_time_jump_s = src.max_time_jump_s or None
        self.partitions: Dict[str, _FifoPartition] = {}

    def list_parts(self) -> List[str]:
        return [self.stream_id]

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[Dict[str, Any]]) -> _FifoPartition:
        part = _FifoPartition(self, resume_state)
        self.partitions[for_part] = part
        return part


__all__ = ["FifoFrameSource"]
