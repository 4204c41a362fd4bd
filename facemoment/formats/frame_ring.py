"""Frames kept for clips: JPEG-compressed frames in a ring buffer bounded in age and bytes, and a clip span's frames at a constant rate (from the ring or a recording)."""

from __future__ import annotations

from bisect import bisect_right, insort
from dataclasses import dataclass
from typing import List, Optional, Tuple

import cv2
import numpy as np

from facemoment.core.types import Frame
from facemoment.formats import media


@dataclass(frozen=True)
class EncodedFrame:
    """One frame of a live stream, JPEG-compressed for the ring buffer."""

    stream_id: str
    frame_id: int
    t_ns: int
    jpeg: bytes
    width: int
    height: int

    @property
    def nbytes(self) -> int:
        return len(self.jpeg)


def encode_frame(frame: Frame, quality: int = 90) -> EncodedFrame:
    """JPEG-compress a frame for the clip ring buffer."""
    image = frame.record_image  # clips are cut at the recorded resolution
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"cannot JPEG-encode frame {frame.frame_id} of {frame.stream_id} (shape {image.shape})")
    return EncodedFrame(frame.stream_id, frame.frame_id, frame.t_src_ns, buf.tobytes(), int(image.shape[1]), int(image.shape[0]))


class FrameRing:
    """Recent frames in time order, bounded by age behind the newest and by total bytes."""

    def __init__(self, max_age_ns: int, max_bytes: int):
        if max_age_ns <= 0 or max_bytes <= 0:
            raise ValueError("ring buffer bounds must be positive")
        self.max_age_ns = int(max_age_ns)
        self.max_bytes = int(max_bytes)
        self._frames: List[EncodedFrame] = []
        self._bytes = 0
        self.evicted_count = 0

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def total_bytes(self) -> int:
        return self._bytes

    @property
    def newest_t_ns(self) -> Optional[int]:
        return self._frames[-1].t_ns if self._frames else None

    @property
    def oldest_t_ns(self) -> Optional[int]:
        return self._frames[0].t_ns if self._frames else None

    def frames(self) -> Tuple[EncodedFrame, ...]:
        return tuple(self._frames)

    def add(self, frame: EncodedFrame) -> None:
        if self._frames and frame.t_ns < self._frames[-1].t_ns:
            # Late frame: keep time order (rare, so a sorted insert is fine).
            idx = bisect_right(self._frames, frame.t_ns, key=lambda f: f.t_ns)
            if idx > 0 and self._frames[idx - 1].t_ns == frame.t_ns:
                return
            insort(self._frames, frame, key=lambda f: f.t_ns)
        elif self._frames and frame.t_ns == self._frames[-1].t_ns:
            return  # the same instant twice (a replay): keep the first
        else:
            self._frames.append(frame)
        self._bytes += frame.nbytes
        self._evict()

    def _evict(self) -> None:
        newest = self._frames[-1].t_ns
        drop = 0
        dropped_bytes = 0
        for f in self._frames:
            too_old = f.t_ns < newest - self.max_age_ns
            too_big = self._bytes - dropped_bytes > self.max_bytes
            if not (too_old or too_big):
                break
            drop += 1
            dropped_bytes += f.nbytes
        if drop:
            del self._frames[:drop]
            self._bytes -= dropped_bytes
            self.evicted_count += drop

    def clip_frames(self, t_start_ns: int, t_end_ns: int, fps: float) -> List[EncodedFrame]:
        """Frames for [t_start, t_end] at a constant `fps`, one per output slot.

        Each slot gets the latest frame at or before it (half a frame of slack for
        timestamp jitter), so frames lost on the way are filled by their
        predecessor. Slots before the first buffered frame or after the newest one
        are left out. Empty when no frame lies inside the span.
        """
        times = [f.t_ns for f in self._frames]
        lo = bisect_right(times, t_start_ns - 1)
        if lo >= len(times) or times[lo] > t_end_ns:
            return []
        period = 1e9 / fps
        slots = max(1, int(round((t_end_ns - t_start_ns) / period)))
        newest = times[-1]
        out: List[EncodedFrame] = []
        for k in range(slots):
            slot = t_start_ns + k * period
            if slot > newest + period / 2:
                break
            idx = bisect_right(times, slot + period / 2) - 1
            if idx >= 0:
                out.append(self._frames[idx])
        return out


def recorded_frames(path: str, stream_id: str, t_start_ns: int, t_end_ns: int, fps: float) -> List[EncodedFrame]:
    """A recording's frames for [t_start, t_end] at a constant `fps` (slots as in FrameRing)."""
    from facemoment.formats.recording import ENCODINGS, RecordingReader, load_index

    period_ns = int(1e9 / fps)
    ring = FrameRing(max_age_ns=2**62, max_bytes=2**62)
    with RecordingReader(path) as reader:
        index = load_index(reader)
        times = index.t_ns
        first = max(0, int(np.searchsorted(times, t_start_ns - period_ns, side="left")) - 1)
        if first >= len(index):
            return []
        for record in reader.records(index.offset_at(first)):
            if record.t_src_ns > t_end_ns + period_ns:
                break
            if record.encoding == ENCODINGS["jpeg"]:
                jpeg = bytes(record.payload)
            else:
                ok, buf = cv2.imencode(".jpg", record.image(), [cv2.IMWRITE_JPEG_QUALITY, 90])
                if not ok:
                    raise media.MediaError(f"cannot re-encode frame {record.frame_id} of {path}")
                jpeg = buf.tobytes()
            ring.add(EncodedFrame(stream_id, record.frame_id, record.t_src_ns, jpeg, record.width, record.height))
    return ring.clip_frames(t_start_ns, t_end_ns, fps)
