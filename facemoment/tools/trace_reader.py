"""Reading trace.jsonl line by line: lines that are not records are counted and quoted, never fatal."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

# How many unreadable lines are quoted in the summary (all are counted).
MAX_BAD_EXAMPLES = 5


BAD_EXAMPLE_CHARS = 80


Record = Dict[str, Any]


class TraceFileError(Exception):
    """The trace file cannot be read at all (missing, a directory, unreadable)."""


@dataclass
class ReadStats:
    """How the lines of a trace file turned out."""

    lines: int = 0
    records: int = 0
    blank: int = 0
    not_json: int = 0
    not_record: int = 0
    torn_last_line: bool = False
    bad_examples: List[Tuple[int, str]] = field(default_factory=list)

    @property
    def bad_lines(self) -> int:
        return self.not_json + self.not_record + int(self.torn_last_line)

    def note_bad(self, line_number: int, text: str) -> None:
        if len(self.bad_examples) < MAX_BAD_EXAMPLES:
            self.bad_examples.append((line_number, text[:BAD_EXAMPLE_CHARS]))

    def as_dict(self) -> Dict[str, Any]:
        return {
            "lines": self.lines,
            "records": self.records,
            "bad_lines": self.bad_lines,
            "not_json": self.not_json,
            "not_record": self.not_record,
            "torn_last_line": self.torn_last_line,
            "bad_examples": [{"line": n, "text": t} for n, t in self.bad_examples],
        }


def iter_trace(path: str | Path, stats: ReadStats) -> Iterator[Record]:
    """Yield the records of a JSONL trace, counting every line that is not one in `stats`."""
    p = Path(path)
    if not p.exists():
        raise TraceFileError(f"{p}: no such file")
    if p.is_dir():
        raise TraceFileError(f"{p} is a directory, not a trace file")
    try:
        handle = open(p, "rb")
    except OSError as exc:
        raise TraceFileError(f"{p}: cannot read ({exc.strerror or exc})") from None
    with handle:
        try:
            for number, raw in enumerate(handle, 1):
                stats.lines += 1
                record = _parse_line(number, raw, stats)
                if record is not None:
                    stats.records += 1
                    yield record
        except OSError as exc:
            raise TraceFileError(f"{p}: read failed after line {stats.lines} ({exc.strerror or exc})") from None


def _parse_line(number: int, raw: bytes, stats: ReadStats) -> Optional[Record]:
    text = raw.decode("utf-8", errors="replace").strip()
    if not text:
        stats.blank += 1
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        # Only the last line can lack its newline: a writer stopped mid-record.
        if not raw.endswith(b"\n"):
            stats.torn_last_line = True
        else:
            stats.not_json += 1
        stats.note_bad(number, text)
        return None
    if not isinstance(value, dict) or not isinstance(value.get("record_type"), str):
        stats.not_record += 1
        stats.note_bad(number, text)
        return None
    return value


def number(value: Any) -> Optional[float]:
    """A finite int or float (bools and NaN are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 1]."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)
