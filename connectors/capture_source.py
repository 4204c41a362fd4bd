"""A live capture device (camera index, rtsp:// or http:// URL) read in-process.

The device is read on its own thread so a slow dataflow never stalls capture; at
most `buffer_frames` frames wait, and the source's drop strategy (skip_oldest,
skip_intermediate, keyframe_only: the ZMQ source's buffer) decides which go; every
dropped frame is reported in a `frame_drop` record.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, timezone
from typing import Any, List, Optional, Union

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from connectors.frame_buffer import FrameBuffer
from facemoment.core.config import SourceConfig
from facemoment.core.records import FrameDrop
from facemoment.core.types import Frame, TraceRecord

log = logging.getLogger(__name__)

_IDLE_WAKE = timedelta(milliseconds=5)


class _CapturePartition(StatefulSourcePartition[Union[Frame, TraceRecord], None]):
    def __init__(
        self,
        source: str,
        stream_id: str,
        buffer_frames: int,
        stop_event: Optional[threading.Event],
        drop_strategy: str = "skip_oldest",
        keyframe_interval: int = 3,
    ):
        from facemoment.formats.frames import open_frames

        self._reader = open_frames(source)
        self._stream_id = stream_id
        self._buffer = FrameBuffer(buffer_frames, drop_strategy, keyframe_interval)
        self._strategy = drop_strategy
        self._limit = buffer_frames
        self._dropped: List[int] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._stop = stop_event
        self._error: Optional[str] = None
        self._thread = threading.Thread(target=self._read, name=f"capture-{stream_id}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for frame_id, t_ns, image in self._reader:
                if self._stop is not None and self._stop.is_set():
                    break
                with self._lock:
                    dropped = self._buffer.offer(Frame(self._stream_id, frame_id, t_ns, image))
                    self._dropped.extend(_frame_id(d) for d in dropped)
        except Exception as exc:  # a device that fails ends the stream, it does not crash the flow
            self._error = f"{type(exc).__name__}: {exc}"
            log.error("capture %s failed: %s", self._stream_id, self._error)
        finally:
            self._done.set()

    def next_batch(self) -> List[Union[Frame, TraceRecord]]:
        with self._lock:
            frames = list(self._buffer.drain())
            dropped, self._dropped = self._dropped, []
        out: List[Union[Frame, TraceRecord]] = []
        if dropped:
            out.append(
                FrameDrop(
                    frame_id=frames[0].frame_id if frames else dropped[-1],
                    stream=self._stream_id,
                    dropped_frame_ids=dropped,
                    dropped_count=len(dropped),
                    reason="backpressure",
                    strategy=self._strategy,
                    queue_depth=self._limit,
                )
            )
        out.extend(frames)
        if not out and (self._done.is_set() or (self._stop is not None and self._stop.is_set())):
            raise StopIteration
        return out

    def next_awake(self) -> Optional[datetime]:
        with self._lock:
            pending = len(self._buffer) > 0
        return None if pending else datetime.now(timezone.utc) + _IDLE_WAKE

    def snapshot(self) -> None:
        return None

    def close(self) -> None:
        self._done.set()
        close = getattr(self._reader, "close", None)
        if close is not None:
            close()


def _frame_id(dropped: Any) -> int:
    return int(getattr(dropped, "frame_id", dropped))


class CaptureSource(FixedPartitionedSource[Union[Frame, TraceRecord], None]):
    """One partition per device; frames are stamped with capture time."""

    def __init__(
        self,
        source: str,
        stream_id: str,
        settings: Optional[SourceConfig] = None,
        stop_event: Optional[threading.Event] = None,
    ):
        settings = settings or SourceConfig()
        self.source = source
        self.stream_id = stream_id
        # A device is read on its own thread: at least one frame waits for the dataflow.
        self.buffer_frames = max(1, settings.buffer_frames)
        self.stop_event = stop_event
        self.drop_strategy = settings.drop_strategy
        self.keyframe_interval = settings.keyframe_interval

    def list_parts(self) -> List[str]:
        return [self.stream_id]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _CapturePartition:
        return _CapturePartition(
            self.source, self.stream_id, self.buffer_frames, self.stop_event, self.drop_strategy, self.keyframe_interval
        )
