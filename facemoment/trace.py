"""The trace: JSONL records users debug the pipeline with (`jq` over trace.jsonl).

Record names and fields follow the moments spec; `record_type` is always the first
key. Each record type has the lowest level at which it is written.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from facemoment.types import TraceRecord

log = logging.getLogger(__name__)

LEVELS = {"off": 0, "minimal": 1, "normal": 2, "verbose": 3}

# Lowest level at which each record type is written; unknown types count as normal.
RECORD_LEVELS: Dict[str, int] = {
    "trigger_fire": 1,
    "malformed_message": 1,
    "publisher_restart": 1,
    "source_summary": 1,
    "fps_summary": 1,
    "clip": 1,
    "timing": 2,
    "frame_drop": 2,
    "sync_delay": 2,
    "trigger_decision": 2,
    "gate_change": 2,
    "frame_extract": 2,
    "out_of_order": 2,
    "extract_error": 2,
    "gate_condition": 3,
}


def level_value(level: str) -> int:
    try:
        return LEVELS[level]
    except KeyError:
        raise ValueError(f"unknown trace level {level!r}; use one of {', '.join(LEVELS)}") from None


def wanted(record: TraceRecord, level: int) -> bool:
    return level > 0 and RECORD_LEVELS.get(record.get("record_type", ""), 2) <= level


class _TracePartition(StatefulSinkPartition[TraceRecord, int]):
    def __init__(self, path: Path, level: int, resume_bytes: Optional[int]):
        path.parent.mkdir(parents=True, exist_ok=True)
        # On resume, drop whatever was written after the snapshot so records the
        # replay writes again are not doubled.
        if resume_bytes is not None and path.exists() and path.stat().st_size > resume_bytes:
            with open(path, "r+b") as f:
                f.truncate(resume_bytes)
        self._file = open(path, "ab" if resume_bytes is not None else "wb")
        self._level = level

    def write_batch(self, values: List[TraceRecord]) -> None:
        lines = [
            json.dumps(record, separators=(",", ":"), default=_jsonable).encode() + b"\n"
            for record in values
            if wanted(record, self._level)
        ]
        if lines:
            self._file.write(b"".join(lines))
            self._file.flush()

    def snapshot(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()


def _jsonable(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


class TraceSink(FixedPartitionedSink[TraceRecord, int]):
    """Writes trace records at or below `level` to one JSONL file.

    One partition, so one worker in the whole cluster owns the file.
    """

    def __init__(self, path: str | os.PathLike[str], level: str = "normal"):
        self.path = Path(path)
        self.level = level_value(level)

    def list_parts(self) -> List[str]:
        return ["trace"]

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[int]) -> _TracePartition:
        return _TracePartition(self.path, self.level, resume_state)


def keyed(record: TraceRecord) -> Tuple[str, TraceRecord]:
    return ("trace", record)
