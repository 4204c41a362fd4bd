"""JSONL sinks: trace.jsonl (filtered by level) and observations.jsonl."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from pathlib import Path
from typing import Callable, List, Optional

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from connectors.appending import append_whole
from facemoment.core.records import Level, ObservationRecord, TraceDegraded, as_dict, wanted
from facemoment.core.types import Observation, TraceRecord
from facemoment.formats.obs import format_obs
from facemoment.runtime import output_losses

log = logging.getLogger(__name__)


class _JsonlPartition(StatefulSinkPartition[TraceRecord, int]):
    def __init__(self, path: Path, keep: Callable[[TraceRecord], bool], resume_bytes: Optional[int]):
        path.parent.mkdir(parents=True, exist_ok=True)
        # On resume, drop whatever was written after the snapshot so records the
        # replay writes again are not doubled.
        if resume_bytes is not None and path.exists() and path.stat().st_size > resume_bytes:
            with open(path, "r+b") as f:
                f.truncate(resume_bytes)
        self._file = open(path, "ab" if resume_bytes is not None else "wb", buffering=0)
        self._keep = keep
        # Records a failed write (a full disk) lost since the last good one: the run
        # goes on without them and the next write that succeeds says how many.
        self.lost = 0
        self.lost_total = 0
        self._error = ""

    def write_batch(self, values: List[TraceRecord]) -> None:
        lines = [_line(record) for record in values if self._keep(record)]
        if self.lost:
            lines.insert(0, _line(as_dict(TraceDegraded(self.lost, self.lost_total, self._error, str(self._file.name)))))
        if not lines:
            return
        error = append_whole(self._file, b"".join(lines))
        if error is None:
            self.lost = 0
            return
        count = len(lines) - (1 if self.lost else 0)
        if not self.lost_total:
            log.error("%s: cannot write the trace, dropping records until it can: %s", self._file.name, error)
        self.lost += count
        self.lost_total += count
        self._error = f"{type(error).__name__}: {error}"
        output_losses.note_trace_loss(str(self._file.name), self.lost_total, self._error)

    def snapshot(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        if self.lost:
            self.write_batch([])
        self._file.close()


def _line(record: TraceRecord) -> bytes:
    return json.dumps(as_dict(record), separators=(",", ":"), default=_jsonable).encode() + b"\n"


def _jsonable(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def _keep_all(_record: TraceRecord) -> bool:
    return True


class JsonlSink(FixedPartitionedSink[TraceRecord, int]):
    """Appends JSON records to one file; one partition, so one worker owns it."""

    def __init__(self, path: str | os.PathLike[str], keep: Callable[[TraceRecord], bool] = _keep_all):
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


def _wanted_at(level: Level, record: TraceRecord) -> bool:
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
