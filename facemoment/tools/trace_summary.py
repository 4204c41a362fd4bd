"""What a trace says: processing time per component, drops, sync delays, triggers and counts, and the tables that show it."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from facemoment.runtime.why import latest_tallies
from facemoment.tools.trace_reader import ReadStats, Record, iter_trace, number, percentile

# Timing components that measure a whole frame (all extractors, in parallel), not one
# stage: never the bottleneck while a stage is listed.
TOTAL_COMPONENTS = frozenset({"orchestrator"})


# source_summary fields shown per stream, in this order.
SOURCE_FIELDS = (
    "end_reason",
    "duration_s",
    "frames_received",
    "frames_emitted",
    "dropped_backpressure",
    "lost_on_wire",
    "publisher_restarts",
    "id_jumps",
    "records_dropped",
    "malformed",
)


def _text(value: Any, default: str = "unknown") -> str:
    return value if isinstance(value, str) and value else default


def _names(value: Any) -> List[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _r(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 3)


class SummaryBuilder:
    """Accumulates the summary one record at a time."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.unusable: Counter[str] = Counter()
        self.timing: Dict[str, List[float]] = defaultdict(list)
        self.slow: Counter[str] = Counter()
        self.drop_records: Counter[str] = Counter()
        self.drop_frames: Counter[str] = Counter()
        self.timeout_by_extractor: Counter[str] = Counter()
        self.sync_late: Counter[str] = Counter()
        self.sync_missing: Counter[str] = Counter()
        self.sync_delays: Dict[str, List[float]] = defaultdict(list)
        self.trigger_count: Counter[str] = Counter()
        self.trigger_scores: Dict[str, List[float]] = defaultdict(list)
        self.decisions: Counter[str] = Counter()
        self.gate = {"changes": 0, "opened": 0, "closed": 0}
        self.fps: Dict[str, Record] = {}
        self.decisions_by_stream: Counter[str] = Counter()
        self.decision_span: Dict[str, Tuple[int, int]] = {}
        self.sources: Dict[str, Record] = {}
        self.tallies: Dict[str, Record] = {}

    def add(self, record: Record) -> None:
        kind = record["record_type"]
        self.counts[kind] += 1
        handler = getattr(self, f"_on_{kind}", None)
        if handler is not None and handler(record) is False:
            self.unusable[kind] += 1

    def _on_timing(self, r: Record) -> bool:
        ms = number(r.get("processing_ms"))
        component = r.get("component")
        if ms is None or not isinstance(component, str):
            return False
        self.timing[component].append(ms)
        if r.get("is_slow") is True:
            self.slow[component] += 1
        return True

    def _on_frame_drop(self, r: Record) -> bool:
        reason = _text(r.get("reason"))
        ids = r.get("dropped_frame_ids")
        listed = len(ids) if isinstance(ids, list) else 0
        total = number(r.get("dropped_count"))
        frames = max(listed, int(total)) if total is not None else listed
        self.drop_records[reason] += 1
        self.drop_frames[reason] += frames
        if reason == "timeout":
            for name in _names(r.get("extractors")):
                self.timeout_by_extractor[name] += frames
        return isinstance(ids, list) or total is not None

    def _on_sync_delay(self, r: Record) -> bool:
        names = _names(r.get("waiting_for"))
        late = r.get("late") is True
        delay = number(r.get("delay_ms"))
        for name in names:
            (self.sync_late if late else self.sync_missing)[name] += 1
            if delay is not None:
                self.sync_delays[name].append(delay)
        return bool(names)

    def _on_trigger_fire(self, r: Record) -> bool:
        reason = _text(r.get("reason"))
        self.trigger_count[reason] += 1
        score = number(r.get("score"))
        if score is not None:
            self.trigger_scores[reason].append(score)
        return score is not None

    def _on_trigger_decision(self, r: Record) -> bool:
        self.decisions[_text(r.get("decision"))] += 1
        stream = _text(r.get("stream"), "-")
        self.decisions_by_stream[stream] += 1
        t_ns = r.get("t_ns")
        if isinstance(t_ns, int) and not isinstance(t_ns, bool):
            first, last = self.decision_span.get(stream, (t_ns, t_ns))
            self.decision_span[stream] = (min(first, t_ns), max(last, t_ns))
        return True

    def _on_gate_change(self, r: Record) -> bool:
        self.gate["changes"] += 1
        state = r.get("gate_open")
        if state is True:
            self.gate["opened"] += 1
        elif state is False:
            self.gate["closed"] += 1
        return isinstance(state, bool)

    def _on_fps_summary(self, r: Record) -> bool:
        stream = _text(r.get("stream"), "-")
        fused = number(r.get("frames_fused"))
        if fused is None:
            return False
        # Counts are cumulative: the record with the most frames is the latest.
        previous = number(self.fps.get(stream, {}).get("frames_fused"))
        if previous is None or fused >= previous:
            self.fps[stream] = r
        return True

    def _on_gate_tally(self, r: Record) -> bool:
        latest = latest_tallies([self.tallies.get(str(r.get("stream", "-")), {}), r])
        self.tallies.update(latest)
        return bool(latest)

    def _on_source_summary(self, r: Record) -> bool:
        self.sources[_text(r.get("stream"), "-")] = r
        return True

    def result(self, path: str | Path, read: ReadStats) -> Dict[str, Any]:
        components = []
        for name, values in self.timing.items():
            values.sort()
            components.append(
                {
                    "component": name,
                    "count": len(values),
                    "avg_ms": _r(sum(values) / len(values)),
                    "p50_ms": _r(percentile(values, 0.50)),
                    "p95_ms": _r(percentile(values, 0.95)),
                    "max_ms": _r(values[-1]),
                    "slow": self.slow[name],
                }
            )
        components.sort(key=lambda c: (-c["avg_ms"], c["component"]))
        stages = [c for c in components if c["component"] not in TOTAL_COMPONENTS] or components
        bottleneck = stages[0]["component"] if stages else None
        for c in components:
            c["bottleneck"] = c["component"] == bottleneck
            c["per_frame_total"] = c["component"] in TOTAL_COMPONENTS
        sync = {}
        for name in sorted(set(self.sync_late) | set(self.sync_missing)):
            delays = self.sync_delays.get(name, [])
            sync[name] = {
                "late": self.sync_late[name],
                "missing": self.sync_missing[name],
                "total": self.sync_late[name] + self.sync_missing[name],
                "avg_delay_ms": _r(sum(delays) / len(delays)) if delays else None,
                "max_delay_ms": _r(max(delays)) if delays else None,
            }
        streams: Dict[str, Dict[str, Any]] = {}
        for stream in sorted(set(self.fps) | set(self.decisions_by_stream) | set(self.sources)):
            fps = self.fps.get(stream, {})
            source = self.sources.get(stream)
            decided = self.decisions_by_stream.get(stream, 0)
            first, last = self.decision_span.get(stream, (0, 0))
            span_s = (last - first) / 1e9
            streams[stream] = {
                "frames_fused": fps.get("frames_fused"),
                "event_fps": fps.get("event_fps"),
                "triggers": fps.get("triggers"),
                "decisions": decided,
                "span_s": _r(span_s) if decided else None,
                # Frames per second of event time, from the decisions' own timestamps.
                "decision_fps": round((decided - 1) / span_s, 2) if span_s > 0 else None,
                "source": {k: source[k] for k in SOURCE_FIELDS if k in source} if source else None,
            }
        return {
            "file": str(path),
            "read": read.as_dict(),
            "record_counts": dict(self.counts.most_common()),
            "unusable_records": dict(self.unusable.most_common()),
            "components": components,
            "bottleneck": bottleneck,
            "drops": {
                "by_reason": {
                    reason: {"records": self.drop_records[reason], "frames": frames}
                    for reason, frames in sorted(self.drop_frames.items(), key=lambda kv: (-kv[1], kv[0]))
                },
                "timeout_by_extractor": dict(sorted(self.timeout_by_extractor.items(), key=lambda kv: (-kv[1], kv[0]))),
            },
            "sync_delays": dict(sorted(sync.items(), key=lambda kv: (-kv[1]["total"], kv[0]))),
            "triggers": {
                reason: {
                    "count": count,
                    "mean_score": _r(sum(self.trigger_scores[reason]) / len(self.trigger_scores[reason]))
                    if self.trigger_scores.get(reason)
                    else None,
                }
                for reason, count in sorted(self.trigger_count.items(), key=lambda kv: (-kv[1], kv[0]))
            },
            "decisions": dict(self.decisions.most_common()),
            "gate": dict(self.gate),
            "streams": streams,
            "gate_tallies": self.tallies,
        }


def summarize_trace(path: str | Path) -> Dict[str, Any]:
    """The summary of one trace file as a JSON-ready dict; raises TraceFileError if unreadable."""
    read = ReadStats()
    builder = SummaryBuilder()
    for record in iter_trace(path, read):
        builder.add(record)
    return builder.result(path, read)


@dataclass
class Table:
    title: str
    headers: List[str]
    rows: List[List[Any]]
    note: str = ""


def summary_tables(summary: Dict[str, Any]) -> List[Table]:
    """The summary as titled tables, shared by the text and the HTML report."""
    tables = []
    tables.append(
        Table(
            "Processing time by component (slowest first)",
            ["component", "count", "avg_ms", "p50_ms", "p95_ms", "max_ms", "slow", ""],
            [
                [c["component"], c["count"], c["avg_ms"], c["p50_ms"], c["p95_ms"], c["max_ms"], c["slow"],
                 "<- bottleneck" if c["bottleneck"] else "(per-frame total)" if c["per_frame_total"] else ""]
                for c in summary["components"]
            ],
            note="slow: records marked is_slow, i.e. over threshold_ms",
        )
    )
    drops = summary["drops"]
    tables.append(
        Table(
            "Frame drops by reason",
            ["reason", "records", "frames"],
            [[reason, d["records"], d["frames"]] for reason, d in drops["by_reason"].items()],
        )
    )
    if drops["timeout_by_extractor"]:
        tables.append(_counts("Timeout drops by extractor", ["extractor", "frames"], drops["timeout_by_extractor"]))
    tables.append(
        Table(
            "Sync delays by extractor",
            ["extractor", "late", "missing", "total", "avg_delay_ms", "max_delay_ms"],
            [[name, s["late"], s["missing"], s["total"], s["avg_delay_ms"], s["max_delay_ms"]]
             for name, s in summary["sync_delays"].items()],
            note="late: arrived after its window closed; missing: absent when the frame was fused",
        )
    )
    tables.append(
        Table(
            "Triggers by reason",
            ["reason", "count", "mean_score"],
            [[reason, t["count"], t["mean_score"]] for reason, t in summary["triggers"].items()],
        )
    )
    tables.append(_counts("Trigger decisions", ["decision", "frames"], summary["decisions"]))
    gate = summary["gate"]
    tables.append(
        Table(
            "Gate changes",
            ["changes", "opened", "closed"],
            [[gate["changes"], gate["opened"], gate["closed"]]] if gate["changes"] else [],
        )
    )
    streams = summary["streams"]
    tables.append(
        Table(
            "Frames by stream",
            ["stream", "frames_fused", "event_fps", "triggers", "decisions", "span_s", "decision_fps"],
            [[name, s["frames_fused"], s["event_fps"], s["triggers"], s["decisions"], s["span_s"], s["decision_fps"]]
             for name, s in streams.items()],
            note="frames_fused, event_fps, triggers: last fps_summary; decisions, span_s, decision_fps: "
            "trigger_decision records",
        )
    )
    sources = [(name, s["source"]) for name, s in streams.items() if s["source"]]
    if sources:
        fields = [f for f in SOURCE_FIELDS if any(f in src for _, src in sources)]
        tables.append(
            Table(
                "Source summary",
                ["stream", *fields],
                [[name, *[_cell(src.get(f)) for f in fields]] for name, src in sources],
            )
        )
    tables.append(_counts("Records by type", ["record_type", "count"], summary["record_counts"]))
    if summary["unusable_records"]:
        tables.append(
            _counts("Records with missing or wrong-typed fields (skipped)", ["record_type", "count"], summary["unusable_records"])
        )
    return tables


def _counts(title: str, header: List[str], counts: Dict[str, Any]) -> Table:
    """A two-column table: one row per name and its count."""
    return Table(title, header, [[name, n] for name, n in counts.items()])


def _cell(value: Any) -> Any:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return value


def read_line(summary: Dict[str, Any]) -> str:
    read = summary["read"]
    text = f"{read['lines']} lines, {read['records']} records, {read['bad_lines']} unreadable"
    if read["bad_lines"]:
        parts = []
        if read["not_json"]:
            parts.append(f"{read['not_json']} not JSON")
        if read["not_record"]:
            parts.append(f"{read['not_record']} not a record")
        if read["torn_last_line"]:
            parts.append("torn last line")
        text += f" ({', '.join(parts)})"
    return text
