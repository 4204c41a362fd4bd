"""Clips for triggers: cut from the source file, or encoded from a ring buffer of frames.

Items are `(stream_id, ClipItem)`: triggers, and for live streams the stream's frames
as JPEGs (`EncodedFrame`). One partition per stream.

- File source: on a trigger, `ffmpeg -ss START -i SRC -t DURATION -c copy` (as
  visualbase does), then the real duration is probed.
- Live source: a ring buffer bounded in age and bytes; a trigger waits until a frame
  at or past its end arrives, then its span is written at a constant frame rate,
  every output slot filled with the latest frame at or before it.

Encoding runs on one background thread per partition, so a clip never stalls the
dataflow. `clips/clips.jsonl` records every clip (ok or failed); a trigger whose key
has an ok line there is never written again, which makes resumes idempotent.
"""

from __future__ import annotations

import json
import logging
import os
import re
from bisect import bisect_right, insort
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple, Union
from zlib import adler32

import cv2
import numpy as np
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from facemoment.formats import media, stills
from facemoment.core.types import Frame, Trigger

log = logging.getLogger(__name__)

CLIPS_DIR = "clips"
MANIFEST_NAME = "clips.jsonl"
# Keys kept in the snapshot; the manifest remains the full record.
RECENT_DONE_KEYS = 1024


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


ClipItem = Union[Trigger, EncodedFrame]


def encode_frame(frame: Frame, quality: int = 90) -> EncodedFrame:
    """JPEG-compress a frame for the clip ring buffer."""
    ok, buf = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(
            f"cannot JPEG-encode frame {frame.frame_id} of {frame.stream_id} (shape {frame.image.shape})"
        )
    return EncodedFrame(frame.stream_id, frame.frame_id, frame.t_src_ns, buf.tobytes(), frame.width, frame.height)


# ----------------------------------------------------------------------- sources


@dataclass(frozen=True)
class ClipSource:
    """Where a stream's clips come from: a video file, a recording, or (no path) live frames."""

    path: Optional[str] = None
    recording: bool = False

    @property
    def is_file(self) -> bool:
        return self.path is not None and not self.recording

    @property
    def is_recording(self) -> bool:
        return self.path is not None and self.recording


def clip_source(descriptor: Any) -> ClipSource:
    """Read a source descriptor: a ClipSource, {"path": ...} / {"live": True}, a path, or None (live)."""
    if isinstance(descriptor, ClipSource):
        return descriptor
    if descriptor is None:
        return ClipSource()
    if isinstance(descriptor, Mapping):
        if descriptor.get("recording"):
            return ClipSource(str(descriptor["recording"]), recording=True)
        path = descriptor.get("path")
        return ClipSource(str(path) if path else None)
    if isinstance(descriptor, os.PathLike):
        return ClipSource(os.fspath(descriptor))
    if isinstance(descriptor, str):
        live = "://" in descriptor or descriptor.isdigit()
        return ClipSource(None if live else descriptor)
    raise TypeError(f"clip source descriptor {descriptor!r}: expected a path, a mapping with 'path', or None")


# ------------------------------------------------------------------- ring buffer


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


# ---------------------------------------------------------------------- manifest


class ClipManifest:
    """`clips/clips.jsonl`: one line per clip attempt (ok or failed)."""

    def __init__(self, path: Path):
        self.path = path

    def ok_keys(self) -> Set[str]:
        keys: Set[str] = set()
        if not self.path.exists():
            return keys
        with open(self.path, "rb") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # a torn last line from a crash
                if isinstance(entry, dict) and entry.get("status") == "ok" and isinstance(entry.get("key"), str):
                    keys.add(entry["key"])
        return keys

    def append(self, entry: Dict[str, Any]) -> None:
        data = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One write on an O_APPEND descriptor: lines from several partitions never interleave.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)


# ---------------------------------------------------------------- clip writing

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def clip_file_name(trigger: Trigger, now: datetime) -> str:
    """visualbase's name: `{YYYYmmdd_HHMMSS}_{label}_{score:.2f}_t{int(start_sec)}.mp4`."""
    label = _UNSAFE.sub("_", trigger.label) or "clip"
    start_sec = trigger.t_start_ns / 1e9
    return f"{now:%Y%m%d_%H%M%S}_{label}_{trigger.score:.2f}_t{int(start_sec)}.mp4"


def _free_path(directory: Path, name: str) -> Path:
    path = directory / name
    stem, suffix = path.stem, path.suffix
    n = 2
    while path.exists():
        path = directory / f"{stem}_{n}{suffix}"
        n += 1
    return path


@dataclass
class ClipResult:
    key: str
    status: str  # ok | failed
    file: Optional[str] = None
    duration_s: Optional[float] = None
    error: Optional[str] = None


def _write_clip(
    trigger: Trigger,
    clips_dir: Path,
    manifest: ClipManifest,
    produce: Callable[[Path], None],
) -> ClipResult:
    """Run `produce(tmp_path)`, probe, move into place, record in the manifest. Never raises."""
    requested = (trigger.t_end_ns - trigger.t_start_ns) / 1e9
    tmp: Optional[Path] = None
    still: Dict[str, Any] = {}
    try:
        clips_dir.mkdir(parents=True, exist_ok=True)
        target = _free_path(clips_dir, clip_file_name(trigger, datetime.now()))
        tmp = target.with_name(f".{target.name}.part")
        produce(tmp)
        duration = media.probe_duration(tmp)
        os.replace(tmp, target)
        still = stills.still_for_clip(trigger, target, clips_dir)
        result = ClipResult(trigger.key, "ok", target.name, round(duration, 4))
        log.info("clip %s: %.3f s (asked %.3f s) for %s", target.name, duration, requested, trigger.key)
    except Exception as exc:  # noqa: BLE001 - a clip failure must never stop the dataflow
        result = ClipResult(trigger.key, "failed", error=str(exc) or type(exc).__name__)
        log.error("clip for %s failed: %s", trigger.key, result.error)
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    entry = {
        "key": result.key,
        "stream": trigger.stream_id,
        "file": result.file,
        "status": result.status,
        "duration_s": result.duration_s,
        "requested_s": round(requested, 4),
        "t_start_ns": int(trigger.t_start_ns),
        "t_end_ns": int(trigger.t_end_ns),
        "label": trigger.label,
        "reason": trigger.reason,
        "score": float(trigger.score),
        "error": result.error,
        **(still if result.status == "ok" else {"best_frame": None}),
        "written_at": datetime.now(timezone.utc).astimezone().isoformat(timespec="milliseconds"),
    }
    try:
        manifest.append(entry)
    except OSError as exc:
        log.error("cannot record clip %s in %s: %s", trigger.key, manifest.path, exc)
    return result


def _fail(message: str) -> Callable[[Path], None]:
    def produce(_tmp: Path) -> None:
        raise media.MediaError(message)

    return produce


# -------------------------------------------------------------------- partition


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
        self._in_flight: Dict[str, Tuple[Trigger, Future]] = {}
        self._claimed: Set[str] = set()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"clips-{stream_id}")
        self.results: List[ClipResult] = []
        self.ignored_count = 0
        for trigger in state.pending:
            self._on_trigger(trigger)

    # -- items

    def write_batch(self, values: List[ClipItem]) -> None:
        self._harvest()
        for item in values:
            if isinstance(item, EncodedFrame):
                self._on_frame(item)
            elif isinstance(item, Trigger):
                self._on_trigger(item)
            else:
                self.ignored_count += 1
                log.warning("clips: ignoring an item of type %s", type(item).__name__)

    def _on_frame(self, frame: EncodedFrame) -> None:
        if self.source.is_file or frame.stream_id != self.stream_id:
            self.ignored_count += 1
            return
        self.ring.add(frame)
        if self._pending and frame.t_ns >= min(t.t_end_ns for t in self._pending):
            self._submit_ready(frame.t_ns)

    def _on_trigger(self, trigger: Trigger) -> None:
        key = trigger.key
        if key in self._done_set or key in self._claimed:
            return
        self._claimed.add(key)
        if trigger.stream_id != self.stream_id:
            self._submit(trigger, _fail(f"no clip source is configured for stream {trigger.stream_id!r}"))
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
            return _fail(
                f"no frames buffered for [{trigger.t_start_ns}, {trigger.t_end_ns}] ns of stream {self.stream_id} "
                f"(buffer holds {len(self.ring)} frames)"
            )
        jpegs = [f.jpeg for f in frames]
        fps = self.fps

        def produce(tmp: Path) -> None:
            media.encode_jpeg_sequence(jpegs, tmp, fps)

        return produce

    def _from_recording(self, trigger: Trigger) -> Callable[[Path], None]:
        # A recording keeps every frame: clips come from the file, so they can be
        # cut again after a restart, like clips of a video file.
        path, stream_id, fps = str(self.source.path), self.stream_id, self.fps

        def produce(tmp: Path) -> None:
            frames = recorded_frames(path, stream_id, trigger.t_start_ns, trigger.t_end_ns, fps)
            if not frames:
                raise media.MediaError(f"{path} has no frames in [{trigger.t_start_ns}, {trigger.t_end_ns}] ns")
            media.encode_jpeg_sequence([f.jpeg for f in frames], tmp, fps)

        return produce

    def _submit_ready(self, newest_t_ns: int) -> None:
        ready = [t for t in self._pending if t.t_end_ns <= newest_t_ns]
        self._pending = [t for t in self._pending if t.t_end_ns > newest_t_ns]
        for trigger in ready:
            self._submit(trigger, self._from_ring(trigger))

    def _submit(self, trigger: Trigger, produce: Callable[[Path], None]) -> None:
        future = self._pool.submit(_write_clip, trigger, self.clips_dir, self.manifest, produce)
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
        # End of stream: pending triggers get whatever the buffer holds.
        pending, self._pending = self._pending, []
        for trigger in pending:
            self._submit(trigger, self._from_ring(trigger))
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


__all__ = [
    "ClipItem",
    "ClipManifest",
    "ClipResult",
    "ClipSink",
    "ClipSource",
    "ClipState",
    "EncodedFrame",
    "FrameRing",
    "clip_file_name",
    "clip_source",
    "encode_frame",
]
