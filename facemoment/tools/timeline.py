"""A trace as per-stream series on one clock: event time in seconds from each stream's first frame, or frame ids when a stream has no frame_id -> t_ns map."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from facemoment.tools.trace_reader import ReadStats, iter_trace, number
from facemoment.tools.trace_summary import SummaryBuilder

Record = Dict[str, Any]


def _int(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _stream(record: Record) -> str:
    stream = record.get("stream")
    return stream if isinstance(stream, str) and stream else "-"


@dataclass
class Decision:
    stream: str
    frame_id: Optional[int]
    t_ns: int
    gate_open: Optional[bool]
    in_cooldown: Optional[bool]
    candidates: Dict[str, float]
    ewma: Dict[str, float]


@dataclass
class Fire:
    stream: str
    frame_id: Optional[int]
    t_ns: Optional[int]
    event_t_ns: Optional[int]
    reason: str
    score: Optional[float]
    pre_sec: Optional[float]
    post_sec: Optional[float]


@dataclass
class Timeline:
    """What the report plots, gathered in one pass over the trace."""

    stream_filter: Optional[str] = None
    # stream -> frame_id -> t_ns, from every record that has both.
    frame_times: Dict[str, Dict[int, int]] = field(default_factory=dict)
    frame_only_streams: Set[str] = field(default_factory=set)
    first_frame: Dict[str, int] = field(default_factory=dict)
    streams: Set[str] = field(default_factory=set)
    decisions: List[Decision] = field(default_factory=list)
    gate_changes: List[Tuple[str, Optional[int], Optional[int], bool]] = field(default_factory=list)
    fires: List[Fire] = field(default_factory=list)
    # (stream, label, frame ids)
    drops: List[Tuple[str, str, List[int]]] = field(default_factory=list)
    # (stream, frame_id, expected_ns, delay_ms, extractor, late)
    syncs: List[Tuple[str, Optional[int], Optional[int], float, str, bool]] = field(default_factory=list)
    # (stream, component) -> frame ids, ms, slow flags
    timings: Dict[Tuple[str, str], Tuple[List[int], List[float], List[bool]]] = field(default_factory=dict)
    thresholds: Set[float] = field(default_factory=set)

    def add(self, record: Record) -> None:
        stream = _stream(record)
        if self.stream_filter is not None and stream != self.stream_filter:
            return
        kind = record["record_type"]
        frame_id = _int(record.get("frame_id"))
        t_ns = _int(record.get("expected_ns") if kind == "sync_delay" else record.get("t_ns"))
        if frame_id is not None or t_ns is not None:
            self.streams.add(stream)
        if frame_id is not None and frame_id < self.first_frame.get(stream, frame_id + 1):
            self.first_frame[stream] = frame_id
        if frame_id is not None and t_ns is not None:
            self.frame_times.setdefault(stream, {})[frame_id] = t_ns
        handler = getattr(self, f"_on_{kind}", None)
        if handler is not None:
            handler(record, stream, frame_id, t_ns)

    def _on_trigger_decision(self, r: Record, stream: str, frame_id: Optional[int], t_ns: Optional[int]) -> None:
        if t_ns is None:
            return
        candidates: Dict[str, float] = {}
        for c in r.get("candidates") or []:
            if isinstance(c, dict) and isinstance(c.get("reason"), str) and number(c.get("score")) is not None:
                candidates[c["reason"]] = number(c["score"])  # type: ignore[assignment]
        ewma_raw = r.get("ewma_values")
        ewma = {
            str(k): number(v) for k, v in (ewma_raw.items() if isinstance(ewma_raw, dict) else []) if number(v) is not None
        }
        gate, cooldown = r.get("gate_open"), r.get("in_cooldown")
        self.decisions.append(
            Decision(
                stream,
                frame_id,
                t_ns,
                gate if isinstance(gate, bool) else None,
                cooldown if isinstance(cooldown, bool) else None,
                candidates,
                ewma,  # type: ignore[arg-type]
            )
        )

    def _on_gate_change(self, r: Record, stream: str, frame_id: Optional[int], t_ns: Optional[int]) -> None:
        if isinstance(r.get("gate_open"), bool):
            self._need_frame_map(stream, frame_id, t_ns)
            self.gate_changes.append((stream, frame_id, t_ns, r["gate_open"]))

    def _on_trigger_fire(self, r: Record, stream: str, frame_id: Optional[int], t_ns: Optional[int]) -> None:
        self._need_frame_map(stream, frame_id, t_ns)
        reason = r.get("reason")
        self.fires.append(
            Fire(
                stream,
                frame_id,
                t_ns,
                _int(r.get("event_t_ns")),
                reason if isinstance(reason, str) and reason else "unknown",
                number(r.get("score")),
                number(r.get("pre_sec")),
                number(r.get("post_sec")),
            )
        )

    def _on_frame_drop(self, r: Record, stream: str, frame_id: Optional[int], t_ns: Optional[int]) -> None:
        ids = [i for i in (r.get("dropped_frame_ids") or []) if _int(i) is not None] if isinstance(
            r.get("dropped_frame_ids"), list
        ) else []
        if not ids:
            return
        reason = r.get("reason") if isinstance(r.get("reason"), str) else "unknown"
        extractors = [e for e in (r.get("extractors") or []) if isinstance(e, str)] if isinstance(
            r.get("extractors"), list
        ) else []
        self.frame_only_streams.add(stream)
        self.streams.add(stream)
        for label in [f"{reason}: {e}" for e in extractors] or [reason]:
            self.drops.append((stream, label, ids))

    def _on_sync_delay(self, r: Record, stream: str, frame_id: Optional[int], t_ns: Optional[int]) -> None:
        delay = number(r.get("delay_ms"))
        names = r.get("waiting_for")
        if delay is None or not isinstance(names, list):
            return
        self._need_frame_map(stream, frame_id, t_ns)
        for name in names:
            if isinstance(name, str):
                self.syncs.append((stream, frame_id, t_ns, delay, name, r.get("late") is True))

    def _on_timing(self, r: Record, stream: str, frame_id: Optional[int], t_ns: Optional[int]) -> None:
        ms = number(r.get("processing_ms"))
        component = r.get("component")
        if ms is None or frame_id is None or not isinstance(component, str):
            return
        self.frame_only_streams.add(stream)
        ids, values, slow = self.timings.setdefault((stream, component), ([], [], []))
        ids.append(frame_id)
        values.append(ms)
        slow.append(r.get("is_slow") is True)
        threshold = number(r.get("threshold_ms"))
        if threshold is not None:
            self.thresholds.add(threshold)

    def _need_frame_map(self, stream: str, frame_id: Optional[int], t_ns: Optional[int]) -> None:
        if t_ns is None and frame_id is not None:
            self.frame_only_streams.add(stream)


class Clock:
    """Maps (stream, frame_id or t_ns) to the x axis: seconds, or frame ids as a fallback."""

    def __init__(self, timeline: Timeline):
        self.known: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
        for stream, mapping in timeline.frame_times.items():
            fids = np.array(sorted(mapping), dtype=float)
            self.known[stream] = (fids, np.array([mapping[int(f)] for f in fids], dtype=float))
        self.seconds = all(len(self.known.get(s, ((), ()))[0]) >= 2 for s in timeline.frame_only_streams)
        # Zero is the earliest frame in the trace, timestamped or placed through the map.
        self.origin: Dict[str, float] = {}
        for stream, (fids, ts) in self.known.items():
            first = timeline.first_frame.get(stream)
            earliest = float(ts.min())
            if first is not None and len(fids) >= 2:
                earliest = min(earliest, float(_interp_extrapolate([first], fids, ts)[0]))
            self.origin[stream] = earliest

    @property
    def label(self) -> str:
        return "event time (s) from the first frame" if self.seconds else "frame id"

    def from_t(self, stream: str, t_ns: Sequence[float]) -> np.ndarray:
        """Event times to x; NaN where there is no way to place them."""
        t = np.asarray(t_ns, dtype=float)
        if not self.seconds or stream not in self.origin:
            return np.full(t.shape, np.nan)
        return (t - self.origin[stream]) / 1e9

    def from_frames(self, stream: str, frame_ids: Sequence[float]) -> np.ndarray:
        f = np.asarray(frame_ids, dtype=float)
        if not self.seconds:
            return f
        if stream not in self.known:
            return np.full(f.shape, np.nan)
        fids, ts = self.known[stream]
        return (_interp_extrapolate(f, fids, ts) - self.origin[stream]) / 1e9

    def place(self, stream: str, frame_id: Optional[int], t_ns: Optional[int]) -> float:
        if self.seconds and t_ns is not None:
            return float(self.from_t(stream, [t_ns])[0])
        if frame_id is not None:
            return float(self.from_frames(stream, [frame_id])[0])
        return float("nan")

    def frame_axis(self, stream: str) -> Optional[Tuple[Callable, Callable]]:
        """seconds <-> frame id for a secondary axis, when the map is monotonic."""
        if not self.seconds or stream not in self.known:
            return None
        fids, ts = self.known[stream]
        if len(fids) < 2 or np.any(np.diff(ts) <= 0):
            return None
        secs = (ts - self.origin[stream]) / 1e9
        return (lambda x: _interp_extrapolate(x, secs, fids), lambda f: _interp_extrapolate(f, fids, secs))


def _interp_extrapolate(x: Any, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if len(xp) == 1:
        return np.full(x.shape, fp[0])
    slope = (fp[-1] - fp[0]) / (xp[-1] - xp[0])
    y = np.interp(x, xp, fp)
    y = np.where(x < xp[0], fp[0] + (x - xp[0]) * slope, y)
    return np.where(x > xp[-1], fp[-1] + (x - xp[-1]) * slope, y)


def read_timeline(path: str | Path, stream: Optional[str] = None) -> Tuple[Timeline, Dict[str, Any]]:
    """One pass over the trace: the plot data and the summary (of the whole file)."""
    read = ReadStats()
    builder = SummaryBuilder()
    timeline = Timeline(stream_filter=stream)
    for record in iter_trace(path, read):
        builder.add(record)
        timeline.add(record)
    return timeline, builder.result(path, read)
