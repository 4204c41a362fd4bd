"""A Bytewax source reading one video file as a finite stream of Frames.

One partition per file, keyed by the stream id.  The resume state is the
frame_id of the next frame to emit; a resumed partition positions the reader so
it emits exactly the frames a fresh run would have emitted from there on.

A file that is damaged part way (truncated download, cut recording) emits the
frames before the damage, logs an error and ends; it never fails the dataflow.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, List, Optional, Tuple

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from facemoment.formats.frames import FrameReader, open_frames
from connectors.shares import StreamShares, in_share, parse_share
from facemoment.core.config import SourceConfig
from facemoment.core.types import Frame
from facemoment.runtime import exit_status

log = logging.getLogger(__name__)


class _VideoFilePartition(StatefulSourcePartition[Frame, int]):
    def __init__(
        self,
        source: str,
        stream_id: str,
        fps: Optional[float],
        progress: bool,
        batch_size: int,
        start_frame_id: int,
        share: Tuple[int, int] = (0, 1),
    ) -> None:
        self._stream_id = stream_id
        self._share = share
        self._batch_size = batch_size
        self._next_id = start_frame_id
        self._ended = False
        self._bar: Any = None
        self._reader: Optional[FrameReader] = None
        try:
            self._reader = open_frames(source, fps=fps, start_frame_id=start_frame_id)
        except (ValueError, OSError) as exc:
            log.error("video source %s (%s) cannot be read and ends: %s", stream_id, source, exc)
            if share[0] == 0:
                exit_status.input_incomplete(f"{source} ({stream_id}) cannot be read: {exc}")
            self._ended = True
            return
        self._next_id = self._reader.next_frame_id
        if progress and share[0] == 0:
            self._bar = _progress_bar(self._reader, stream_id, start_frame_id)

    def next_batch(self) -> List[Frame]:
        if self._ended or self._reader is None:
            self._finish()
            raise StopIteration
        batch: List[Frame] = []
        while len(batch) < self._batch_size:
            item = self._read()
            if item is None:
                self._ended = True
                if getattr(self._reader, "truncated", False) and self._share[0] == 0:
                    damaged = getattr(self._reader, "damaged", None)  # recordings read on past damage
                    exit_status.input_incomplete(
                        f"{self._stream_id}: damaged records skipped ({', '.join(f'{k} {n}' for k, n in sorted(damaged.items()))})"
                        if damaged
                        else f"{self._stream_id} ended after frame {self._next_id - 1}: truncated or damaged"
                    )
                break
            frame_id, t_ns, image = item
            self._next_id = frame_id + 1
            if self._bar is not None:
                self._bar.update(1)
            if in_share(frame_id, *self._share):
                batch.append(Frame(self._stream_id, frame_id, t_ns, image))
        if not batch:
            self._finish()
            raise StopIteration
        return batch

    def _read(self) -> Optional[tuple]:
        assert self._reader is not None
        try:
            return self._reader.read()
        except Exception as exc:  # a decoder failure must end this file, not the dataflow
            log.error("video source %s failed while decoding and ends: %s", self._stream_id, exc)
            if self._share[0] == 0:
                exit_status.input_incomplete(f"{self._stream_id} failed while decoding after frame {self._next_id - 1}: {exc}")
            return None

    def snapshot(self) -> int:
        return self._next_id

    def _finish(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._reader is not None:
            self._reader.close()

    def close(self) -> None:
        self._finish()


def _progress_bar(reader: FrameReader, stream_id: str, initial: int) -> Any:
    from tqdm import tqdm  # only needed when a bar is asked for

    total = reader.frame_count
    if total is not None and reader.target_fps is not None and reader.source_fps:
        # Sampling keeps about target/source of the frames.
        total = int(round(total * min(1.0, reader.target_fps / reader.source_fps)))
    return tqdm(total=total, initial=initial, desc=stream_id, unit="frame", file=sys.stderr, leave=False)


class VideoFileSource(StreamShares, FixedPartitionedSource[Frame, int]):
    """Frames of one video file (or "sample"), ending the dataflow at the end of the file.

    :arg path: video file path, or "sample" for the built-in sample video.
    :arg stream_id: the stream the frames belong to; also the partition key.
    :arg settings: the `source` section: `fps` (sample the file down to this rate)
        and `progress` (a tqdm bar on stderr); None: its declared defaults.
    :arg batch_size: frames per batch handed to Bytewax.
    :arg shares: split the file into this many partitions by frame id (one per
        worker), each decoding the file and keeping its own frames.
    """

    def __init__(
        self,
        path: str | Path,
        stream_id: str,
        settings: Optional[SourceConfig] = None,
        *,
        batch_size: int = 4,
        shares: int = 1,
    ) -> None:
        text = str(path)
        if text != "sample":
            if not Path(text).exists():
                raise FileNotFoundError(f"video file {text!r} does not exist")
            if not Path(text).is_file():
                raise ValueError(f"video source {text!r} is not a file")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.path = text
        self.stream_id = stream_id
        settings = settings or SourceConfig()
        self.fps = settings.fps
        self.progress = settings.progress
        self.batch_size = batch_size
        self.shares = max(1, shares)

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[int]) -> _VideoFilePartition:
        stream_id, index, count = parse_share(for_part)
        return _VideoFilePartition(
            self.path,
            stream_id,
            self.fps,
            self.progress,
            self.batch_size,
            start_frame_id=int(resume_state or 0),
            share=(index, count),
        )
