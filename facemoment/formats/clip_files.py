"""Clip files: where a clip comes from (a file, a recording, the live ring), its name, the temporary-then-rename write and the clips.jsonl manifest."""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Set

from facemoment.core.types import Trigger
from facemoment.formats import media, stills

log = logging.getLogger(__name__)


CLIPS_DIR = "clips"


MANIFEST_NAME = "clips.jsonl"


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


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def clip_file_name(trigger: Trigger, now: datetime, ring: bool = False) -> str:
    """visualbase's names: `{YYYYmmdd_HHMMSS}_{label}{_score}_t{int(start_sec)}.mp4` for
    clips cut from a file, `{YYYYmmdd_HHMMSS}_{label}{_score}.mp4` for clips from a live
    ring buffer; `_score` is `_{score:.2f}`, left out when the score is not above 0."""
    label = _UNSAFE.sub("_", trigger.label) or "clip"
    score = f"_{trigger.score:.2f}" if trigger.score > 0 else ""
    if ring:
        return f"{now:%Y%m%d_%H%M%S}_{label}{score}.mp4"
    start_sec = trigger.t_start_ns / 1e9
    return f"{now:%Y%m%d_%H%M%S}_{label}{score}_t{int(start_sec)}.mp4"


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


def write_clip(
    trigger: Trigger,
    clips_dir: Path,
    manifest: ClipManifest,
    produce: Callable[[Path], None],
    ring: bool = False,
) -> ClipResult:
    """Run `produce(tmp_path)`, probe, move into place, record in the manifest. Never raises."""
    requested = (trigger.t_end_ns - trigger.t_start_ns) / 1e9
    tmp: Optional[Path] = None
    still: Dict[str, Any] = {}
    try:
        clips_dir.mkdir(parents=True, exist_ok=True)
        target = _free_path(clips_dir, clip_file_name(trigger, datetime.now(), ring))
        tmp = target.with_name(f".{target.name}.part")
        produce(tmp)
        duration = media.probe_duration(tmp)
        # The still first: moving the clip into place and recording it stay back to
        # back, so a kill between them (a clip without its manifest line) stays rare.
        still = stills.still_for_clip(trigger, tmp, clips_dir)
        os.replace(tmp, target)
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


def fail_with(message: str) -> Callable[[Path], None]:
    def produce(_tmp: Path) -> None:
        raise media.MediaError(message)

    return produce
