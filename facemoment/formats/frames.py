"""Read frames from a video file, a camera, a network stream or the sample video.

:func:`open_frames` gives a :class:`FrameReader`, an iterator of
``(frame_id, t_src_ns, bgr_image)``:

- ``frame_id`` counts the frames the reader yields, from ``start_frame_id`` (0),
  without gaps, also across loops and after fps sampling; visualbase subscribers
  read gaps as frames lost on the wire, so the reader never makes any.
- ``t_src_ns`` is the position in the file for files (the decoder's timestamp
  when it is usable, else index / fps), shifted by the file's duration on every
  loop; for cameras and URLs it is the capture time (``time.time_ns()``).
- ``fps`` sampling keeps the first frame and then the first frame at or after
  each ``1/fps`` step of the timestamps (half a source frame of tolerance), so a
  30 fps file read at 15 fps keeps every other frame.  A target at or above the
  source rate keeps every frame; sampling never speeds a file up.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional, Tuple

import cv2
import numpy as np
from facemoment.formats.closing import Closing

if TYPE_CHECKING:
    from facemoment.formats.recording import RecordingFrameReader

log = logging.getLogger(__name__)

LIVE_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "udp://")
# Consecutive failed reads after which a live source counts as gone.
LIVE_READ_FAILURES = 3
# Used when a file reports no frame rate.
FALLBACK_FPS = 30.0

FrameTuple = Tuple[int, int, np.ndarray]


class FrameReader(Closing):
    """Iterator of ``(frame_id, t_src_ns, image)`` over one source; see the module doc."""

    def __init__(
        self,
        source: str,
        fps: Optional[float] = None,
        loop: bool = False,
        start_frame_id: int = 0,
    ) -> None:
        if fps is not None and not (fps > 0 and math.isfinite(fps)):
            raise ValueError(f"target fps must be a positive number, got {fps!r}")
        if start_frame_id < 0:
            raise ValueError(f"start_frame_id must not be negative, got {start_frame_id}")
        self.source = source
        self.target_fps = fps
        self.loop = loop
        self._capture_arg, self.path, self.is_live = _classify(source)
        self._cap = self._open()
        self.source_fps: Optional[float] = _positive(self._cap.get(cv2.CAP_PROP_FPS))
        self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        count = _positive(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count: Optional[int] = None if self.is_live or count is None else int(count)
        self._frame_period_ns = 1e9 / (self.source_fps or FALLBACK_FPS)
        self._next_id = 0
        self._file_index = 0  # index in the file of the next frame to decode
        self._loop_offset_ns = 0
        self._last_file_t_ns = -1  # last timestamp within the current pass over the file
        self._next_keep_ns: Optional[float] = None
        self._live_failures = 0
        self._exhausted = False
        # Frames decoded from the file in the current pass, to tell damage from a clean end.
        self.frames_decoded = 0
        self.truncated = False
        if start_frame_id:
            self._skip_to(start_frame_id)

    # ------------------------------------------------------------------ properties

    @property
    def fps(self) -> Optional[float]:
        """The rate frames come out at: the target when it is below the source's."""
        if self.target_fps is None:
            return self.source_fps
        if self.source_fps is None:
            return self.target_fps
        return min(self.target_fps, self.source_fps)

    @property
    def next_frame_id(self) -> int:
        return self._next_id

    # --------------------------------------------------------------------- opening

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(self._capture_arg)
        if not cap.isOpened():
            cap.release()
            if self.path is not None:
                raise ValueError(f"cannot read video file {str(self.path)!r}: not a readable video")
            raise ValueError(f"cannot open video source {self.source!r}")
        return cap

    def _rewind(self) -> bool:
        """Start the file over for another loop; False when it cannot be reopened."""
        self._cap.release()
        try:
            self._cap = self._open()
        except ValueError as exc:
            log.error("%s", exc)
            return False
        self._file_index = 0
        self.frames_decoded = 0
        return True

    def _skip_to(self, frame_id: int) -> None:
        """Position so the next frame yielded is the one a fresh reader would yield as ``frame_id``."""
        if self.is_live:
            self._next_id = frame_id  # nothing to seek: live frames continue the numbering
            return
        plain = self.target_fps is None and not self.loop
        if plain and self._cap.set(cv2.CAP_PROP_POS_FRAMES, frame_id):
            if int(self._cap.get(cv2.CAP_PROP_POS_FRAMES)) == frame_id:
                self._file_index = frame_id
                self.frames_decoded = frame_id
                self._next_id = frame_id
                self._last_file_t_ns = -1
                return
            self._rewind()
        # Replay the keep/skip decisions without converting pixels: exact for any mode.
        while self._next_id < frame_id:
            if self._advance(retrieve=False) is None:
                break

    # -------------------------------------------------------------------- reading

    def __iter__(self) -> Iterator[FrameTuple]:
        return self

    def __next__(self) -> FrameTuple:
        item = self._advance(retrieve=True)
        if item is None:
            raise StopIteration
        return item

    def read(self) -> Optional[FrameTuple]:
        """The next frame, or None at the end."""
        return self._advance(retrieve=True)

    def _advance(self, retrieve: bool) -> Optional[FrameTuple]:
        while not self._exhausted:
            decoded = self._decode(retrieve)
            if decoded is None:
                continue
            t_ns, image = decoded
            if not self._keep(t_ns):
                continue
            frame_id = self._next_id
            self._next_id += 1
            return frame_id, t_ns, image
        return None

    def _decode(self, retrieve: bool) -> Optional[Tuple[int, np.ndarray]]:
        """One frame from the capture; None when it is to be retried (or the source ended)."""
        try:
            ok = self._cap.grab()
            image = None
            if ok and retrieve:
                ok, image = self._cap.retrieve()
        except cv2.error as exc:
            log.error("reading %s failed: %s", self.source, exc)
            ok = False
        if not ok:
            self._on_read_failure()
            return None
        if self.is_live:
            self._live_failures = 0
            return time.time_ns(), image
        t_ns = self._file_timestamp()
        self._file_index += 1
        self.frames_decoded += 1
        return t_ns, image

    def _on_read_failure(self) -> None:
        if self.is_live:
            self._live_failures += 1
            if self._live_failures >= LIVE_READ_FAILURES:
                log.error("live source %s stopped delivering frames", self.source)
                self._exhausted = True
            return
        if self.frame_count is not None and self.frames_decoded < self.frame_count:
            self.truncated = True
            log.error(
                "video file %s ended after %d of %d frames: the file is truncated or damaged",
                self.source,
                self.frames_decoded,
                self.frame_count,
            )
        if self.loop and self.frames_decoded > 0:
            # The next pass starts one frame period after the last frame of this one.
            self._loop_offset_ns += self._last_file_t_ns + int(round(self._frame_period_ns))
            self._last_file_t_ns = -1
            if self._rewind():
                return
        self._exhausted = True

    def _file_timestamp(self) -> int:
        """Position of the frame just decoded, in the file, plus the loop offset."""
        by_index = int(round(self._file_index * self._frame_period_ns))
        pos_ms = self._cap.get(cv2.CAP_PROP_POS_MSEC)
        t = by_index
        if math.isfinite(pos_ms) and pos_ms >= 0:
            by_decoder = int(pos_ms * 1e6)  # truncated, as visualbase's file source does
            # Some backends report 0 or stale positions; use the decoder's clock only while it moves forward.
            if by_decoder > self._last_file_t_ns:
                t = by_decoder
        if t <= self._last_file_t_ns:
            t = self._last_file_t_ns + 1
        self._last_file_t_ns = t
        return self._loop_offset_ns + t

    def _keep(self, t_ns: int) -> bool:
        if self.target_fps is None:
            return True
        period = 1e9 / self.target_fps
        tolerance = 0.5 * self._frame_period_ns if not self.is_live else 0.0
        if self._next_keep_ns is None:
            self._next_keep_ns = t_ns + period
            return True
        if t_ns + tolerance < self._next_keep_ns:
            return False
        self._next_keep_ns += period
        if self._next_keep_ns <= t_ns:
            # After a stall, continue the schedule from now instead of catching up in a burst.
            self._next_keep_ns = t_ns + period
        return True

    # -------------------------------------------------------------------- closing

    def close(self) -> None:
        self._exhausted = True
        self._cap.release()


def _positive(value: float) -> Optional[float]:
    return float(value) if math.isfinite(value) and value > 0 else None


def _classify(source: str) -> Tuple[object, Optional[Path], bool]:
    """What to hand VideoCapture, the file path (None when live), and whether the source is live."""
    text = source.strip()
    if not text:
        raise ValueError("empty video source")
    if text == "sample":
        from facemoment.formats.sample import ensure_sample_video  # lazy: only the sample needs it

        path = Path(ensure_sample_video())
        if not path.is_file():
            raise FileNotFoundError(f"sample video {path} does not exist")
        return str(path), path, False
    if text.isdigit():
        return int(text), None, True
    if text.lower().startswith(LIVE_SCHEMES):
        return text, None, True
    if "://" in text:
        raise ValueError(
            f"unsupported video source {source!r}: use a file path, a camera index, "
            f"{', '.join(s[:-3] for s in LIVE_SCHEMES)} URLs or 'sample' (tcp:// is a ZMQ frame publisher)"
        )
    path = Path(os.path.expanduser(text))
    if not path.exists():
        raise FileNotFoundError(f"video file {source!r} does not exist")
    if not path.is_file():
        raise ValueError(f"video source {source!r} is not a file")
    return str(path), path, False


def open_frames(
    source: str, fps: Optional[float] = None, loop: bool = False, start_frame_id: int = 0
) -> "FrameReader | RecordingFrameReader":
    """Open a file path, a recording, a camera index ("0"), an rtsp/http URL or "sample"."""
    from facemoment.formats.recording import RecordingFrameReader, is_recording

    if is_recording(source):
        # Recorded ids and timestamps, gaps included (no renumbering, no fps sampling).
        return RecordingFrameReader(source, fps=fps, loop=loop, start_frame_id=start_frame_id)
    return FrameReader(source, fps=fps, loop=loop, start_frame_id=start_frame_id)
