"""What a live run's outputs say: trigger latency, where every frame went, per-extractor timings."""

from __future__ import annotations

from collections import Counter
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from bench.meters import percentile, rounded
from bench.plan import Record


def trigger_latencies(
    send_wall_ns: Mapping[int, int],
    received: Sequence[Tuple[int, str]],
    trigger_rows: Sequence[Record],
) -> Dict[str, Any]:
    """Latency of every TRIG message received: receive wall time minus the send time of its frame.

    `received` holds (wall-clock ns, TRIG text) as the subscriber got them;
    `trigger_rows` are triggers.jsonl rows, whose `message` is that TRIG text and
    whose `frame_id` is the frame the trigger fired on. Rows are matched to messages
    in order, so identical texts pair up one to one.
    """
    rows_by_message: Dict[str, List[Record]] = {}
    for row in trigger_rows:
        rows_by_message.setdefault(str(row.get("message")), []).append(row)
    items: List[Dict[str, Any]] = []
    unmatched: List[str] = []
    for wall_ns, text in received:
        candidates = rows_by_message.get(text)
        if not candidates:
            unmatched.append(text)
            continue
        row = candidates.pop(0)
        frame_id = int(row["frame_id"])
        sent = send_wall_ns.get(frame_id)
        if sent is None:
            unmatched.append(text)
            continue
        items.append(
            {
                "frame_id": frame_id,
                "reason": row.get("reason"),
                "latency_ms": round((wall_ns - sent) / 1e6, 3),
            }
        )
    latencies = [item["latency_ms"] for item in items]
    return {
        "count": len(items),
        "p50_ms": rounded(percentile(latencies, 50)),
        "p99_ms": rounded(percentile(latencies, 99)),
        "max_ms": rounded(max(latencies) if latencies else None),
        "triggers": items,
        "unmatched_messages": unmatched,
        "not_received": sum(len(rows) for rows in rows_by_message.values()),
    }


def release_latencies(
    send_wall_ns: Mapping[int, int],
    trace: Iterable[Record],
    trigger_rows: Sequence[Record],
) -> Dict[str, Any]:
    """Latency to the decision and to the release of every TRIG, from `trig_release` records.

    Both are wall-clock times minus the send time of the frame the trigger fired on
    (`frame_id` of its triggers.jsonl row, matched by key). With TRIG timing `end`
    (the default for live sources) a TRIG is held until its stream reached the
    clip's end, so the release comes about `post_sec` after the decision.
    """
    frame_of = {str(row.get("key")): int(row["frame_id"]) for row in trigger_rows if "frame_id" in row}
    decided: List[float] = []
    released: List[float] = []
    timings: Counter = Counter()
    causes: Counter = Counter()
    for record in trace:
        if record.get("record_type") != "trig_release":
            continue
        sent = send_wall_ns.get(frame_of.get(str(record.get("key")), -1))
        if sent is None:
            continue
        decided.append(round((int(record["decided_ns"]) - sent) / 1e6, 3))
        released.append(round((int(record["released_ns"]) - sent) / 1e6, 3))
        timings[str(record.get("timing"))] += 1
        causes[str(record.get("cause"))] += 1

    def stats(values: List[float]) -> Dict[str, Any]:
        return {
            "p50_ms": rounded(percentile(values, 50)),
            "p99_ms": rounded(percentile(values, 99)),
            "max_ms": rounded(max(values) if values else None),
        }

    return {
        "count": len(decided),
        "decision": stats(decided),
        "release": stats(released),
        "timing": dict(timings),
        "causes": dict(causes),
    }


def _dropped_count(record: Record) -> int:
    if isinstance(record.get("dropped_count"), int):
        return int(record["dropped_count"])
    return len(record.get("dropped_frame_ids") or [])


def timeouts(records: Iterable[Record]) -> Tuple[Dict[Any, set], set]:
    """The frames with a `timeout` drop (frame id -> the extractors that missed), and
    those of them still partial: fusion did not carry every one of those extractors
    (a `frame_carry` record with `missed` names the result it used, under the budget)."""
    timed_out: Dict[Any, set] = {}
    carried: Dict[Any, set] = {}
    for r in records:
        kind = r.get("record_type")
        if kind == "frame_drop" and r.get("reason") == "timeout":
            timed_out.setdefault(r.get("frame_id"), set()).update(r.get("extractors") or [])
        elif kind == "frame_carry" and r.get("missed") and r.get("from_frame_id") is not None:
            carried.setdefault(r.get("frame_id"), set()).add(str(r.get("source")))
    return timed_out, {f for f, names in timed_out.items() if not names <= carried.get(f, set())}


def drop_accounting(records: Iterable[Record], frames_attempted: int, publisher_dropped: int = 0) -> Dict[str, Any]:
    """Where every published frame went, from a normal-level trace.

    A frame is fused (its fusion `timing` record), dropped before extraction
    (`frame_drop` with reason `backpressure`: the source buffer; `queue_full`: lost at
    the publisher's high-water mark, seen as a gap in frame ids), or lost after
    extraction because its whole frame arrived after its window closed (a late
    `sync_delay` for `frame`). `timeout` drops are different: the frame is still
    fused, without the extractors that missed the deadline; they are counted per
    extractor, and the frame as partial unless fusion carried every one of them
    (a `frame_carry` record with `missed`, under the budget).
    """
    records = list(records)
    timed_out, partial = timeouts(records)
    fused: set = set()
    drops: Counter = Counter()
    timeout_by_extractor: Counter = Counter()
    late_frames: set = set()
    uncarried: set = set()  # a declared rate's frame with nothing within the rate to carry
    carried_by_extractor: Counter = Counter()
    uncarried_by_extractor: Counter = Counter()
    waiting: Counter = Counter()
    out_of_order = 0
    summary: Optional[Record] = None
    for r in records:
        kind = r.get("record_type")
        if kind == "timing" and r.get("component") == "fusion_process":
            fused.add(r.get("frame_id"))
        elif kind == "frame_drop":
            reason = str(r.get("reason"))
            if reason == "timeout":
                timeout_by_extractor.update(r.get("extractors") or [])
            else:
                drops[reason] += _dropped_count(r)
        elif kind == "sync_delay":
            if r.get("late") and "frame" in (r.get("waiting_for") or []):
                late_frames.add(r.get("frame_id"))
            elif not r.get("late"):
                waiting.update(r.get("waiting_for") or [])
        elif kind == "frame_carry" and not r.get("missed"):  # a missed deadline's carry: see `timeouts`
            if r.get("from_frame_id") is None:
                uncarried.add(r.get("frame_id"))
                uncarried_by_extractor[str(r.get("source"))] += 1
            else:
                carried_by_extractor[str(r.get("source"))] += 1
        elif kind == "out_of_order":
            out_of_order += 1
        elif kind == "source_summary":
            summary = r
    late_unfused = late_frames - fused
    accounted = len(fused) + sum(drops.values()) + len(late_unfused)
    return {
        "frames_attempted": frames_attempted,
        "publisher_dropped": publisher_dropped,
        "fused": len(fused),
        # Every extractor's result, fresh or carried within its declared rate (or,
        # under the budget, over a missed deadline within its floor).
        "fused_complete": len(fused - partial - uncarried),
        "carried_by_extractor": dict(sorted(carried_by_extractor.items())),
        "not_carried_by_extractor": dict(sorted(uncarried_by_extractor.items())),
        "dropped_by_reason": dict(sorted(drops.items())),
        "partial_frames_timeout": len(timed_out),
        "timeout_frames_carried": len(set(timed_out) - partial),
        "timeouts_by_extractor": dict(sorted(timeout_by_extractor.items())),
        "missing_at_fusion_by_extractor": dict(sorted(waiting.items())),
        "late_frames_not_fused": len(late_unfused),
        "out_of_order": out_of_order,
        "unaccounted": frames_attempted - accounted,
        "source_summary": summary,
    }


def trace_timings(records: Sequence[Record]) -> Dict[str, Any]:
    """Per-extractor processing time and the orchestrator's per-frame wait, from timing records."""
    by_component: Dict[str, List[float]] = {}
    for r in records:
        if r.get("record_type") == "timing" and isinstance(r.get("processing_ms"), (int, float)) and not r.get("late"):
            by_component.setdefault(str(r.get("component")), []).append(float(r["processing_ms"]))
    return {
        name: {"median_ms": rounded(percentile(v, 50)), "p99_ms": rounded(percentile(v, 99)), "count": len(v)}
        for name, v in sorted(by_component.items())
        if name != "fusion_process"
    }


def late_frame_delays(records: Iterable[Record], send_wall_ns: Mapping[int, int]) -> Dict[str, Any]:
    """Capture-to-alignment time of whole frames that reached alignment late (ms)."""
    delays = []
    for r in records:
        if (r.get("record_type") == "sync_delay" and r.get("late") and "frame" in (r.get("waiting_for") or [])
                and isinstance(r.get("actual_ns"), int) and r.get("frame_id") in send_wall_ns):
            delays.append((r["actual_ns"] - send_wall_ns[r["frame_id"]]) / 1e6)
    return {"count": len(delays), "p50_ms": rounded(percentile(delays, 50)),
            "min_ms": rounded(min(delays) if delays else None), "max_ms": rounded(max(delays) if delays else None)}


def kept_up(live: Mapping[str, Any]) -> bool:
    """Every frame fused with every extractor: no frame lost, none partial."""
    acc = live["accounting"]
    lost = sum(acc["dropped_by_reason"].values()) + acc["publisher_dropped"] + acc["late_frames_not_fused"]
    return lost == 0 and acc["partial_frames_timeout"] == 0 and acc["unaccounted"] == 0
