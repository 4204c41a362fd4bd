"""JSONL sinks: trace.jsonl (filtered by level) and observations.jsonl."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from facemoment.core.records import Level, ObservationRecord, Record, as_dict, wanted
from facemoment.core.types import Observation
from facemoment.formats.wire import format_obs

# What the JSONL sinks take: typed records (dicts pass through as they are).
Row = Union[Record, Dict[str, Any]]


class _JsonlPartition(StatefulSinkPartition[Row, int]):
    def __init__(self, path: Path, keep: Callable[[Row], bool], resume_bytes: Optional[int]):
        path.parent.mkdir(parents=True, exist_ok=True)
        # On resume, drop whatever was written after the snapshot so records the
        # replay writes again are not doubled.
        if resume_bytes is not None and path.exists() and path.stat().st_size > resume_bytes:
            with open(path, "r+b") as f:
                f.truncate(resume_bytes)
        self._file = open(path, "ab" if resume_bytes is not None else "wb")
        self._keep = keep

    def write_batch(self, values: List[Row]) -> None:
        lines = [
            json.dumps(as_dict(record), separators=(",", ":"), default=_jsonable).encode() + b"\n"
            for record in values
            if self._keep(record)
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


def _keep_all(_record: Row) -> bool:
    return True


class JsonlSink(FixedPartitionedSink[Row, int]):
    """Appends JSON records to one file; one partition, so one worker owns it."""

    def __init__(self, path: str | os.PathLike[str], keep: Callable[[Row], bool] = _keep_all):
        self.path = Path(path)
        self.keep = keep

    def list_parts(self) -> List[str]:
        return [self.path.name]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[int]) -> _JsonlPartition:
        return _JsonlPartition(self.path, self.keep, resume_state)


class TraceSink(JsonlSink):
    """Writes trace records at or below `level` to trace.jsonl."""

    def __init__(self, path: str | os.PathLike[str], level: "str | Level" = "normal"):
        super().__init__(path, functools.partial(_wanted_at, Level.parse(level)))


def _wanted_at(level: Level, record: Row) -> bool:
    return wanted(record, level)


def observation_record(obs: Observation) -> ObservationRecord:
    """One extractor result as observations.jsonl stores it: the OBS text and the full values."""
    return ObservationRecord(
        stream=obs.stream_id,
        frame_id=obs.frame_id,
        t_ns=obs.t_ns,
        source=obs.source,
        obs=format_obs(obs),
        data=dataclasses.asdict(obs),
    )
