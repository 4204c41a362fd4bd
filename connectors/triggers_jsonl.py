"""triggers.jsonl: one JSON object per trigger, appended and flushed per batch.

One partition (one writer). Resuming never duplicates a line: the keys already in
the file are read back at build, and triggers replayed after the snapshot whose
lines made it to disk before the crash are skipped.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from connectors.appending import append_whole
from connectors.clips import CLIPS_DIR
from facemoment.formats.stills import still_file_name
from facemoment.formats.wire import format_trigger
from facemoment.core.types import Trigger

log = logging.getLogger(__name__)

FILE_NAME = "triggers.jsonl"
_PART = "triggers_jsonl"
_TAIL_CHUNK = 4096


def trigger_record(trigger: Trigger, written_at: Optional[datetime] = None, stills: bool = False) -> Dict[str, Any]:
    """The JSON object for one trigger; wall-clock time only under `written_at`.

    With `stills` (clips are written), `best_frame` names the clip's best frame,
    relative to the output directory.
    """
    try:
        message: Optional[str] = format_trigger(trigger)
    except ValueError as exc:
        log.error("trigger %s has no TRIG text: %s", trigger.key, exc)
        message = None
    when = written_at or datetime.now(timezone.utc).astimezone()
    record = {
        "label": trigger.label,
        "t_start_ns": int(trigger.t_start_ns),
        "t_end_ns": int(trigger.t_end_ns),
        "faces": int(trigger.face_count),
        "score": float(trigger.score),
        "reason": trigger.reason,
        "stream": trigger.stream_id,
        "event_t_ns": int(trigger.event_t_ns),
        "frame_id": int(trigger.frame_id),
        "t_ns": int(trigger.t_ns),
        "key": trigger.key,
        "message": message,
        "written_at": when.isoformat(timespec="milliseconds"),
    }
    if stills:
        record["best_frame"] = f"{CLIPS_DIR}/{still_file_name(trigger)}"
    return record


def _record_key(record: Dict[str, Any]) -> Optional[str]:
    if isinstance(record.get("key"), str):
        return record["key"]
    if all(k in record for k in ("stream", "event_t_ns", "reason")):
        return f"{record['stream']}:{record['event_t_ns']}:{record['reason']}"
    return None


def drop_partial_last_line(path: Path) -> int:
    """Cut an unterminated last line (a write torn by a crash); returns bytes dropped."""
    if not path.exists():
        return 0
    with open(path, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        end = size
        while end > 0:
            start = max(0, end - _TAIL_CHUNK)
            f.seek(start)
            chunk = f.read(end - start)
            if end == size and chunk.endswith(b"\n"):
                return 0
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        else:
            keep = 0
        f.truncate(keep)
    dropped = size - keep
    if dropped:
        log.warning("%s: dropped an incomplete last line (%d bytes)", path, dropped)
    return dropped


def read_keys(path: Path) -> Set[str]:
    """Trigger keys already in a triggers.jsonl file (unreadable lines are counted and skipped)."""
    keys: Set[str] = set()
    if not path.exists():
        return keys
    bad = 0
    with open(path, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                key = _record_key(json.loads(line))
            except (ValueError, AttributeError):
                key = None
            if key is None:
                bad += 1
            else:
                keys.add(key)
    if bad:
        log.warning("%s: %d lines are not trigger records", path, bad)
    return keys


class _TriggersJsonlPartition(StatefulSinkPartition[Trigger, int]):
    def __init__(self, path: Path, resume_state: Optional[int], keep_existing: bool = True, stills: bool = False):
        self._stills = stills
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume_state is None and not keep_existing and path.exists():
            path.unlink()  # a new run starts a new file
        drop_partial_last_line(path)
        self._written: Set[str] = set()
        if resume_state is None and keep_existing:
            # Under recovery, a restart before the first snapshot replays from the
            # start: lines already written must not be written twice.
            self._written = read_keys(path)
        if resume_state is not None:
            size = path.stat().st_size if path.exists() else 0
            if size < resume_state:
                log.warning(
                    "%s holds %d bytes but %d were committed before the restart; was it edited?",
                    path, size, resume_state,
                )
            self._written = read_keys(path)
        # Binary append: tell() is the exact byte count committed.
        self._f = open(path, "ab", buffering=0)
        self.skipped_count = 0
        # Lines a failed write (a full disk) could not store; retried on every batch.
        self._unwritten: List[str] = []

    def write_batch(self, values: List[Trigger]) -> None:
        lines = []
        for trigger in values:
            key = trigger.key
            if key in self._written:
                self.skipped_count += 1
                continue
            self._written.add(key)
            lines.append(json.dumps(trigger_record(trigger, stills=self._stills), ensure_ascii=False) + "\n")
        lines = self._unwritten + lines
        if not lines:
            return
        error = append_whole(self._f, "".join(lines).encode("utf-8"), sync=True)
        if error is not None:
            # The TRIG messages went out already; keep the lines and try again later
            # rather than end the run.
            if not self._unwritten:
                log.error("%s: cannot write %d trigger(s), keeping them for a retry: %s", self._f.name, len(lines), error)
            self._unwritten = lines
            return
        if self._unwritten:
            log.warning("%s: %d trigger(s) held back by a failed write are stored now", self._f.name, len(self._unwritten))
        self._unwritten = []

    def snapshot(self) -> int:
        return self._f.tell()

    def close(self) -> None:
        if self._unwritten:
            self.write_batch([])
        if self._unwritten:
            log.error("%s: %d trigger(s) could not be stored: %s", self._f.name, len(self._unwritten), "".join(self._unwritten))
        self._f.close()


class TriggersJsonlSink(FixedPartitionedSink[Trigger, int]):
    """Append `(stream_id, Trigger)` items to `output_dir/triggers.jsonl`."""

    def __init__(self, output_dir: str | os.PathLike[str], keep_existing: bool = True, stills: bool = False):
        self._path = Path(output_dir) / FILE_NAME
        self._keep_existing = keep_existing
        # Clips are written, each with its best frame: list the still's path.
        self._stills = stills
        if not keep_existing:
            # Bytewax builds the partition only for a first trigger: a run without
            # one must still leave its own (empty) file, not the previous run's.
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._path.write_bytes(b"")

    @property
    def path(self) -> Path:
        return self._path

    def list_parts(self) -> List[str]:
        return [_PART]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[int]) -> _TriggersJsonlPartition:
        return _TriggersJsonlPartition(self._path, resume_state, self._keep_existing, self._stills)
