"""A recording as a frame source with the interface of facemoment.formats.frames.FrameReader."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple, Union

import numpy as np

from facemoment.formats.closing import Closing
from facemoment.formats.recording.codec import RecordingError
from facemoment.formats.recording.index import RecordingIndex
from facemoment.formats.recording.reader import RecordingReader

log = logging.getLogger(__name__)


class RecordingFrameReader(Closing):
    """A recording as ``facemoment.formats.frames.FrameReader``: ``(frame_id, t_src_ns, image)`` as recorded.

    Ids and timestamps are the recorded ones (gaps stay gaps).  ``start_frame_id``
    starts at the first record with an id at least that.  A damaged record is
    skipped and reading goes on at the next intact one: ``damaged`` counts them by
    kind, ``error`` holds the first, ``truncated`` says some frames were lost, and
    the first of each kind is logged.  ``loop`` starts over at the first
    record and, as ``FrameReader`` does for files, keeps ids and timestamps
    increasing: pass ``k`` adds ``k`` times the recording's id span to the ids and
    ``k`` times its duration plus one frame period to the timestamps.
    """

    is_live = False
    target_fps: Optional[float] = None

    def __init__(
        self,
        source: Union[str, Path],
        fps: Optional[float] = None,
        loop: bool = False,
        start_frame_id: int = 0,
    ) -> None:
        if fps is not None:
            raise ValueError(
                f"recording {source}: fps sampling is not supported; a recording replays every frame with its recorded id"
            )
        if start_frame_id < 0:
            raise ValueError(f"start_frame_id must not be negative, got {start_frame_id}")
        self.source = os.fspath(source)
        self.loop = loop
        self._reader = RecordingReader(source)
        self.path = self._reader.path
        self.metadata = self._reader.metadata
        index = self._reader.index()
        self.frame_count: Optional[int] = len(index)
        self.source_fps: Optional[float] = _rate(index)
        self.width, self.height = _first_geometry(self._reader, index)
        self.error: Optional[RecordingError] = None
        self.truncated = False
        self.damaged: Dict[str, int] = {}
        self._pass = 0
        self._id_span, self._t_span = _loop_spans(index)
        self._next_id = start_frame_id
        self._records = self._reader.records(self._reader.offset_for(start_frame_id), self._on_damage)
        self._closed = False

    @property
    def fps(self) -> Optional[float]:
        return self.source_fps

    @property
    def next_frame_id(self) -> int:
        return self._next_id

    def __iter__(self) -> Iterator[Tuple[int, int, np.ndarray]]:
        return self

    def __next__(self) -> Tuple[int, int, np.ndarray]:
        item = self.read()
        if item is None:
            raise StopIteration
        return item

    def read(self) -> Optional[Tuple[int, int, np.ndarray]]:
        """The next intact recorded frame, or None at the end."""
        while not self._closed:
            record = next(self._records, None)
            if record is None:
                if self.loop and self.frame_count:
                    self._records = self._reader.records(None, self._on_damage if not self._pass else _ignore)
                    self._pass += 1
                    continue
                return None
            try:
                image = record.image()
            except RecordingError as exc:
                (_ignore if self._pass else self._on_damage)(exc, record.end)
                continue
            frame_id = record.frame_id + self._pass * self._id_span
            self._next_id = frame_id + 1
            return frame_id, record.t_src_ns + self._pass * self._t_span, image
        return None

    def _on_damage(self, exc: RecordingError, _resumes_at: Optional[int]) -> None:
        if exc.kind not in self.damaged:
            log.error("%s; the record is skipped (further damage of this kind is counted)", exc)
        self.damaged[exc.kind] = self.damaged.get(exc.kind, 0) + 1
        self.error = self.error or exc
        self.truncated = True

    def close(self) -> None:
        self._closed = True
        self._reader.close()


def _ignore(_exc: RecordingError, _resumes_at: Optional[int]) -> None:
    """Damage met again on a later loop pass: counted on the first."""


def _rate(index: RecordingIndex) -> Optional[float]:
    """The publisher's rate: frame ids per second over the recorded span (lost frames count)."""
    if len(index) < 2:
        return None
    span = int(index.t_ns[-1]) - int(index.t_ns[0])
    if span <= 0:
        return None
    return (int(index.frame_ids[-1]) - int(index.frame_ids[0])) * 1e9 / span


def _loop_spans(index: RecordingIndex) -> Tuple[int, int]:
    """How far each loop pass shifts ids and timestamps: the span of the recording plus one frame."""
    if not len(index):
        return 0, 0
    ids = int(index.frame_ids[-1]) - int(index.frame_ids[0])
    duration = max(0, int(index.t_ns[-1]) - int(index.t_ns[0]))
    period = duration // ids if ids > 0 and duration > 0 else int(1e9 / 30)
    return ids + 1, duration + period


def _first_geometry(reader: RecordingReader, index: RecordingIndex) -> Tuple[int, int]:
    if not len(index):
        return 0, 0
    found = reader.read_header_at(int(index.offsets[0]))
    assert found is not None
    return int(found[2][2]), int(found[2][3])
