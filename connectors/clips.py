"""Clips for triggers: cut from the source file, or encoded from a ring buffer of frames.

Items are `(stream_id, ClipItem)`: triggers, and for live streams the stream's frames
as JPEGs (`EncodedFrame`, or a `PendingFrame` still being compressed: it joins the ring
once done, in arrival order). One partition per stream.

- File source: on a trigger, `ffmpeg -ss START -i SRC -t DURATION -c copy` (as
  visualbase does), then the real duration is probed.
- Live source: a ring buffer bounded in age and bytes; a trigger waits until a frame
  at or past its end is in it (waiting for compressions already under way), then its
  span is written at a constant frame rate, every output slot filled with the latest
  frame at or before it.

Encoding runs on one background thread per partition, so a clip never stalls the
dataflow. `clips/clips.jsonl` records every clip (ok or failed); a trigger whose key
has an ok line there is never written again, which makes resumes idempotent.

This module is the sink; the frames and their ring buffer are in
`facemoment.formats.frame_ring`, the clip files and manifest in
`facemoment.formats.clip_files`.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional, Set, Tuple, Union
from zlib import adler32

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from facemoment.core.types import Trigger
from facemoment.formats import media
from facemoment.formats.clip_files import (
    CLIPS_DIR,
    MANIFEST_NAME,
    ClipManifest,
    ClipResult,
    ClipSource,
    fail_with,
    write_clip,
    clip_source,
)
from facemoment.formats.frame_ring import EncodedFrame, FrameRing, recorded_frames
from facemoment.formats.ring_encoder import PendingFrame

log = logging.getLogger(__name__)


# Keys kept in the snapshot; the manifest remains the full record.
RECENT_DONE_KEYS = 1024


ClipItem = Union[Trigger, EncodedFrame, PendingFrame]
RingFrame = Union[EncodedFrame, PendingFrame]


@dataclass
class ClipState:
    """Snapshot of one stream's clip partition."""

    pending: List[Trigger] = field(default_factory=list)
    done: List[str] = field(default_factory=list)


class _ClipPartition(StatefulSinkPartition[ClipItem, ClipState]):
    def __init__(
        self,
        stream_id: str,
        source: ClipSource,
        clips_dir: Path,
        ring: FrameRing,
        fps: float,
        resume_state: Optional[ClipState],
    ):
        self.stream_id = stream_id
        self.source = source
        self.clips_dir = clips_dir
        self.ring = ring
        self.fps = fps
        self.manifest = ClipManifest(clips_dir / MANIFEST_NAME)
        state = resume_state or ClipState()
        self._done: List[str] = list(state.done)[-RECENT_DONE_KEYS:]
        self._done_set: Set[str] = self.manifest.ok_keys() | set(state.done)
        self._pending: List[Trigger] = []
        # Frames not yet in the ring: compressing, or behind one that is.
        self._compressing: Deque[RingFrame] = deque()
        self.frames_not_compressed = 0
        self._in_flight: Dict[str, Tuple[Trigger, Future]] = {}
        self._claimed: Set[str] = set()
        self._encoding = media.Background()  # idle priority until the input ends
        self._pool = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"clips-{stream_id}", initializer=self._encoding.take_thread
        )
        self.results: List[ClipResult] = []
        for trigger in state.pending:
            self._on_trigger(trigger)

    # -- items

    def write_batch(self, values: List[ClipItem]) -> None:
        self._harvest()
        for item in values:
            if isinstance(item, (EncodedFrame, PendingFrame)):
                self._on_frame(item)
            elif isinstance(item, Trigger):
                self._on_trigger(item)
            else:
                log.warning("clips: ignoring an item of type %s", type(item).__name__)
        self._settle()

    def _on_frame(self, frame: RingFrame) -> None:
        if self.source.is_file or frame.stream_id != self.stream_id:
            return  # a file source cuts its clips from the file
        self._compressing.append(frame)

    def _settle(self, wait: bool = False) -> None:
        """Move compressed frames into the ring, in arrival order, and submit the
        triggers whose end the ring now reaches. Waits for a compression only when a
        pending trigger needs that frame (or `wait`): a clip starts as soon as it could."""
        queue = self._compressing
        end = min((t.t_end_ns for t in self._pending), default=None)
        # A pending trigger ends at or before a frame already queued: the frames up to it
        # are as good as here, so they are waited for until the ring reaches that end.
        reach = end if end is not None and any(f.t_ns >= end for f in queue) else None
        while queue:
            head = queue[0]
            newest = self.ring.newest_t_ns
            needed = reach is not None and (newest is None or newest < reach)
            if not (wait or needed or isinstance(head, EncodedFrame) or head.done()):
                break
            queue.popleft()
            try:
                encoded = head if isinstance(head, EncodedFrame) else head.result()
            except Exception as exc:  # the frame is missing from clips, which fill its slot
                self.frames_not_compressed += 1
                log.warning("clips: frame %s of %s was not compressed: %s", head.frame_id, self.stream_id, exc)
                continue
            self.ring.add(encoded)
        newest = self.ring.newest_t_ns
        if end is not None and newest is not None and newest >= end:
            self._submit_ready(newest)

    def _on_trigger(self, trigger: Trigger) -> None:
        key = trigger.key
        if key in self._done_set or key in self._claimed:
            return
        self._claimed.add(key)
        if trigger.stream_id != self.stream_id:
            self._submit(trigger, fail_with(f"no clip source is configured for stream {trigger.stream_id!r}"))
        elif self.source.is_file:
            self._submit(trigger, self._cut_from_file(trigger))
        elif self.source.is_recording:
            self._submit(trigger, self._from_recording(trigger))
        else:
            self._pending.append(trigger)
            newest = self.ring.newest_t_ns
            if newest is not None and newest >= trigger.t_end_ns:
                self._submit_ready(newest)

    # -- clip jobs

    def _cut_from_file(self, trigger: Trigger) -> Callable[[Path], None]:
        src = str(self.source.path)
        start = trigger.t_start_ns / 1e9
        duration = (trigger.t_end_ns - trigger.t_start_ns) / 1e9

        def produce(tmp: Path) -> None:
            media.cut_copy(src, tmp, start, duration)

        return produce

    def _from_ring(self, trigger: Trigger) -> Callable[[Path], None]:
        frames = self.ring.clip_frames(trigger.t_start_ns, trigger.t_end_ns, self.fps)
        if not frames:
            return fail_with(
                f"no frames buffered for [{trigger.t_start_ns}, {trigger.t_end_ns}] ns of stream {self.stream_id} "
                f"(buffer holds {len(self.ring)} frames)"
            )
        jpegs = [f.jpeg for f in frames]
        fps, encoding = self.fps, self._encoding

        def produce(tmp: Path) -> None:
            media.encode_jpeg_sequence(jpegs, tmp, fps, background=encoding)

        return produce

    def _from_recording(self, trigger: Trigger) -> Callable[[Path], None]:
        # A recording keeps every frame: clips come from the file, so they can be
        # cut again after a restart, like clips of a video file.
        path, stream_id, fps, encoding = str(self.source.path), self.stream_id, self.fps, self._encoding

        def produce(tmp: Path) -> None:
            frames = recorded_frames(path, stream_id, trigger.t_start_ns, trigger.t_end_ns, fps)
            if not frames:
                raise media.MediaError(f"{path} has no frames in [{trigger.t_start_ns}, {trigger.t_end_ns}] ns")
            media.encode_jpeg_sequence([f.jpeg for f in frames], tmp, fps, background=encoding)

        return produce

    def _submit_ready(self, newest_t_ns: int) -> None:
        ready = [t for t in self._pending if t.t_end_ns <= newest_t_ns]
        self._pending = [t for t in self._pending if t.t_end_ns > newest_t_ns]
        for trigger in ready:
            self._submit(trigger, self._from_ring(trigger), ring=True)

    def _submit(self, trigger: Trigger, produce: Callable[[Path], None], ring: bool = False) -> None:
        future = self._pool.submit(write_clip, trigger, self.clips_dir, self.manifest, produce, ring)
        self._in_flight[trigger.key] = (trigger, future)

    def _harvest(self, wait: bool = False) -> None:
        for key, (_trigger, future) in list(self._in_flight.items()):
            if not (wait or future.done()):
                continue
            result: ClipResult = future.result()
            del self._in_flight[key]
            self.results.append(result)
            if result.status == "ok":
                self._done_set.add(key)
                self._done.append(key)
        del self._done[:-RECENT_DONE_KEYS]

    def drain(self) -> List[ClipResult]:
        """Wait for every submitted clip; returns all results so far."""
        self._harvest(wait=True)
        return list(self.results)

    # -- Bytewax

    def snapshot(self) -> ClipState:
        self._harvest()
        unfinished = [t for t, _f in self._in_flight.values()]
        return ClipState(pending=unfinished + list(self._pending), done=list(self._done))

    def close(self) -> None:
        # End of stream: nothing left for the encoder to yield to (other load on the
        # machine must not hold the end of the run), and pending triggers get whatever
        # the buffer holds.
        self._encoding.lift()
        self._settle(wait=True)
        pending, self._pending = self._pending, []
        for trigger in pending:
            self._submit(trigger, self._from_ring(trigger), ring=True)
        self.drain()
        self._pool.shutdown(wait=True)


class ClipSink(FixedPartitionedSink[ClipItem, ClipState]):
    """Write clips for `(stream_id, Trigger | EncodedFrame)` items into `output_dir/clips/`.

    `sources` maps each stream id to its descriptor: `{"path": file}` for a file
    source, `{"live": True}` (or None) for a live one.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike[str],
        sources: Mapping[str, Any],
        ring_buffer_sec: float = 120.0,
        ring_buffer_max_mb: float = 512.0,
        fps: float = 30.0,
    ):
        if not sources:
            raise ValueError("ClipSink needs at least one stream source")
        if ring_buffer_sec <= 0 or ring_buffer_max_mb <= 0 or fps <= 0:
            raise ValueError("ring_buffer_sec, ring_buffer_max_mb and fps must be positive")
        self._clips_dir = Path(output_dir) / CLIPS_DIR
        self._sources: Dict[str, ClipSource] = {sid: clip_source(d) for sid, d in sources.items()}
        self._parts = sorted(self._sources)
        self._max_age_ns = int(ring_buffer_sec * 1e9)
        self._max_bytes = int(ring_buffer_max_mb * 1024 * 1024)
        self._fps = float(fps)

    @property
    def clips_dir(self) -> Path:
        return self._clips_dir

    def list_parts(self) -> List[str]:
        # Listed when the flow starts running; a partition is built only for its first
        # item. The folder the run summary points at exists from the start, triggers or not.
        self._clips_dir.mkdir(parents=True, exist_ok=True)
        return list(self._parts)

    def part_fn(self, item_key: str) -> int:
        # Partitions are indexed in sorted order: each stream lands on its own.
        try:
            return self._parts.index(item_key)
        except ValueError:
            return adler32(item_key.encode())

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[ClipState]) -> _ClipPartition:
        return _ClipPartition(
            stream_id=for_part,
            source=self._sources[for_part],
            clips_dir=self._clips_dir,
            ring=FrameRing(self._max_age_ns, self._max_bytes),
            fps=self._fps,
            resume_state=resume_state,
        )
