"""Live frames JPEG-compressed for the clip ring on threads of their own.

Compressing a raw 1920x1080 frame takes about 9 ms; done in line, that is a quarter of
a worker's time at 30 fps, and every frame behind it waits. A :class:`JpegEncoder`
compresses on background threads at a lower priority, so receiving and extraction
come first; the clip ring takes each frame once it is compressed (:class:`PendingFrame`).

At most ``max_pending`` frames wait to be compressed: beyond that ``submit`` waits, so
a machine too slow to compress every frame slows the flow as compressing in line would,
and holds no more frames in memory.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Optional

from facemoment.core.types import Frame
from facemoment.formats.frame_ring import EncodedFrame, encode_frame

ENCODER_THREADS = 2
# About 1 s of one camera's frames.
MAX_PENDING = 32
# Below the receive and extraction threads when the cores are contended, never starved:
# a niced thread still gets its share, so a full queue always drains.
ENCODER_NICE = 5


class PendingFrame:
    """A frame being compressed: its stream, id and time now, its JPEG once `done()`."""

    __slots__ = ("stream_id", "frame_id", "t_ns", "_future")

    def __init__(self, stream_id: str, frame_id: int, t_ns: int, future: "Future[EncodedFrame]"):
        self.stream_id = stream_id
        self.frame_id = frame_id
        self.t_ns = t_ns
        self._future = future

    def done(self) -> bool:
        return self._future.done()

    def result(self) -> EncodedFrame:
        """The compressed frame (waits for it); raises what compressing raised."""
        return self._future.result()

    def __reduce__(self):
        # Sent to another process as the compressed frame it becomes.
        e = self.result()
        return (EncodedFrame, (e.stream_id, e.frame_id, e.t_ns, e.jpeg, e.width, e.height))


def _lower_thread_priority() -> None:
    try:  # on Linux a thread id names one thread to setpriority
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + ENCODER_NICE))
    except (AttributeError, OSError):
        pass


class JpegEncoder:
    """Compresses frames for the clip ring on `threads` background threads."""

    def __init__(self, threads: int = ENCODER_THREADS, max_pending: int = MAX_PENDING, encode=encode_frame):
        if threads < 1 or max_pending < 1:
            raise ValueError("a JPEG encoder needs at least one thread and one pending frame")
        self._encode = encode
        self._slots = threading.BoundedSemaphore(max_pending)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="ring-jpeg", initializer=_lower_thread_priority)

    def submit(self, frame: Frame, quality: int = 90) -> PendingFrame:
        """Start compressing `frame` (waits while `max_pending` frames are)."""
        self._slots.acquire()
        try:
            future = self._pool.submit(self._encode, frame, quality)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _f: self._slots.release())
        return PendingFrame(frame.stream_id, frame.frame_id, frame.t_src_ns, future)


_shared: Optional[JpegEncoder] = None
_shared_lock = threading.Lock()


def encode_later(frame: Frame, quality: int = 90) -> PendingFrame:
    """`frame` compressed for the clip ring by this process's encoder."""
    global _shared
    if _shared is None:
        with _shared_lock:
            if _shared is None:
                _shared = JpegEncoder()
    return _shared.submit(frame, quality)
