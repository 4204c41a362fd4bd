"""Frames of a visualbase publisher, received into a :class:`FrameBuffer`.

A :class:`SubReceiver` thread owns the SUB socket (subscribed to ``frame``, as
visualbase subscribers are, with a receive high-water mark of 16 frames rather than
their 2: see :data:`RECEIVE_HWM`). Every message it reads is
checked here (header, event time, share) and told to the :class:`FrameAccounting`;
this share's frames go to the buffer. One lock guards the buffer and the accounting,
so a batch drained from the buffer and the accounting's resume point agree.
"""

from __future__ import annotations

import threading
from typing import Any, List, Optional, Tuple

from connectors.frame_accounting import FrameAccounting
from connectors.frame_buffer import FrameBuffer, TimeJumpGuard
from connectors.receiver import ArrivalSignal, SubReceiver
from connectors.shares import in_share
from facemoment.core.types import Frame
from facemoment.formats.wire import FRAME_TOPIC, WireError, unpack_frame, unpack_header

# The daemon's send high-water mark is 2 and its sends never wait, so a frame this
# socket cannot take is lost on the wire. On a busy 2-core box the receive thread is
# now and then held back for several frame periods (a full collection, cores taken),
# and the kernel buffers little of a 6 MB raw 1080p frame: 16 frames (half a second)
# ride that out. The bounded FrameBuffer behind this socket still sheds by its own
# policy, with a record, when the flow is truly behind.
RECEIVE_HWM = 16
RECEIVE_TIMEOUT_MS = 1000
# How long the receive thread waits on the socket before re-checking for stop.
POLL_INTERVAL_MS = 50


class FrameReceiver:
    """Receives one share (index, count) of ``address``'s frames into ``buffer``.

    :arg max_frame_bytes: the largest frame payload taken (None: no limit); a
        message over it is refused by ZeroMQ unread, and the socket is replaced.
    :arg max_time_jump_s: see :class:`TimeJumpGuard` (None: no check).
    """

    def __init__(
        self,
        address: str,
        stream_id: str,
        buffer: FrameBuffer,
        accounting: FrameAccounting,
        *,
        share: Tuple[int, int] = (0, 1),
        max_frame_bytes: Optional[int] = None,
        max_time_jump_s: Optional[float] = None,
    ) -> None:
        self.lock = threading.Lock()
        self._arrived = ArrivalSignal()  # set for every message handled
        self._stream_id = stream_id
        self._buffer = buffer
        self._accounting = accounting
        self._share = share
        self._max_frame_bytes = max_frame_bytes
        self._time_guard = TimeJumpGuard(max_time_jump_s)
        self._sub = SubReceiver(
            [address],
            FRAME_TOPIC,
            RECEIVE_HWM,
            self._handle,
            name=f"zmq-frames-{stream_id}",
            what="frame publisher",
            max_message_bytes=max_frame_bytes,
            on_dropped=self._dropped,
            poll_ms=POLL_INTERVAL_MS,
            copy=False,
            RCVTIMEO=RECEIVE_TIMEOUT_MS,
        )

    @property
    def error(self) -> Optional[str]:
        """Why the receive thread stopped by itself, if it did."""
        return self._sub.error

    @property
    def alive(self) -> bool:
        return self._sub.alive

    def take(self, force_malformed: bool = False) -> List[Any]:
        """The records and frames received since the last call (see FrameAccounting.batch)."""
        with self.lock:
            return self._accounting.batch(self._buffer.drain(), force_malformed)

    def wait(self, timeout_s: float) -> bool:
        """Block until a message was handled since the last wait, at most `timeout_s`;
        whether one was (what it brought is for `take`)."""
        return self._arrived.wait(timeout_s)

    def stop(self) -> None:
        self._sub.stop()

    def close(self) -> None:
        self._sub.close()

    # ------------------------------------------------------------ receive thread

    def _handle(self, parts: List[Any]) -> None:
        try:
            self._check(parts)
        finally:
            self._arrived.set()

    def _check(self, parts: List[Any]) -> None:
        # Every share validates the whole header of every message it reads: a
        # malformed header must not cost the other shares what it costs share 0.
        try:
            frame_id, t_src_ns, _w, _h, _c = unpack_header(parts, self._max_frame_bytes)
        except WireError as exc:
            with self.lock:
                self._accounting.malformed(exc.kind, exc.message)
            return
        if not self._time_guard.plausible(t_src_ns):
            detail = f"t_src_ns {t_src_ns} is more than {self._time_guard.describe()} past the stream's time"
            with self.lock:
                self._accounting.malformed("time_jump", detail)
                self._accounting.passed_over(frame_id)
            return
        if not in_share(frame_id, *self._share):
            with self.lock:
                self._accounting.seen(frame_id, t_src_ns, len(self._buffer))
            return
        # A read-only view over the message's own buffer, which ZeroMQ does not reuse while
        # the frame holds it: copying 1-6 MB per frame into fresh pages cost a camera more
        # than everything else its receive thread does.
        _, _, image = unpack_frame(parts)
        frame = Frame(self._stream_id, frame_id, t_src_ns, image)
        with self.lock:
            self._accounting.seen(frame_id, t_src_ns, len(self._buffer))
            dropped = self._buffer.offer(frame)
            self._accounting.received(dropped, len(self._buffer))

    def _dropped(self, refused: bool) -> None:
        with self.lock:
            if refused:
                self._accounting.malformed(
                    "too_large", f"a message over {self._max_frame_bytes} bytes: ZeroMQ refused it and dropped the connection"
                )
            self._accounting.reconnected()
        self._arrived.set()
