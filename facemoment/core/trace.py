"""Trace levels: which record types trace.jsonl keeps at each level.

Record names and fields follow the moments spec; `record_type` is always the first
key. Each record type has the lowest level at which it is written.
"""

from __future__ import annotations

from typing import Dict

from facemoment.core.records import level_of
from facemoment.core.types import TraceRecord

LEVELS = {"off": 0, "minimal": 1, "normal": 2, "verbose": 3}

# Lowest level at which each record type is written; unknown types count as normal.
RECORD_LEVELS: Dict[str, int] = {
    "trigger_fire": 1,
    "malformed_message": 1,
    "publisher_restart": 1,
    "source_summary": 1,
    "source_error": 1,
    "fps_summary": 1,
    "models_ready": 1,
    "gate_tally": 1,
    "timing": 2,
    "frame_drop": 2,
    "sync_delay": 2,
    "trigger_decision": 2,
    "gate_change": 2,
    "frame_extract": 2,
    "out_of_order": 2,
    "gate_condition": 3,
}


def level_value(level: str) -> int:
    try:
        return LEVELS[level]
    except KeyError:
        raise ValueError(f"unknown trace level {level!r}; use one of {', '.join(LEVELS)}") from None


def wanted(record: TraceRecord, level: int) -> bool:
    kind = record.get("record_type", "")
    lowest = RECORD_LEVELS.get(kind)
    if lowest is None:
        lowest = int(level_of(kind))  # typed records declare their own level
    return level > 0 and lowest <= level
