"""What a multi-camera run says per camera: frames, triggers against the offline reference, the budget, CPU."""

from __future__ import annotations

import bisect
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from bench.meters import rounded
from bench.plan import Record
from bench.workloads.accounting import drop_accounting, release_latencies, timeouts

# A live trigger matches an offline one with the same reason starting within this of it.
MATCH_TOLERANCE_NS = 100_000_000
FPS = 30.0
# Schedule changes listed per missed trigger and per camera (the rest are counted).
MAX_LISTED = 5


def match_triggers(
    reference: Sequence[Mapping[str, Any]],
    live: Sequence[Mapping[str, Any]],
    tolerance_ns: int = MATCH_TOLERANCE_NS,
) -> Dict[str, Any]:
    """Pair live triggers with the offline ones: same reason, |t_start difference| <= tolerance.

    Each offline trigger takes the closest unpaired live trigger of its reason
    (offline triggers in time order); what stays unpaired is missed (offline) or extra (live).
    """
    used: set = set()
    matched: List[Dict[str, Any]] = []
    missed: List[Mapping[str, Any]] = []
    for ref in sorted(reference, key=lambda r: int(r["t_start_ns"])):
        best: Optional[Tuple[int, int]] = None
        for i, row in enumerate(live):
            if i in used or row.get("reason") != ref.get("reason"):
                continue
            diff = abs(int(row["t_start_ns"]) - int(ref["t_start_ns"]))
            if diff <= tolerance_ns and (best is None or diff < best[0]):
                best = (diff, i)
        if best is None:
            missed.append(ref)
            continue
        used.add(best[1])
        matched.append({"reason": ref.get("reason"), "t_start_ns": int(ref["t_start_ns"]),
                        "diff_ms": round(best[0] / 1e6, 1)})
    extra = [row for i, row in enumerate(live) if i not in used]
    return {
        "offline": len(reference),
        "live": len(live),
        "matched": len(matched),
        "missed": len(missed),
        "extra": len(extra),
        "max_diff_ms": max((m["diff_ms"] for m in matched), default=None),
        "missed_triggers": [_brief(r) for r in missed],
        "extra_triggers": [_brief(r) for r in extra],
    }


def _brief(row: Mapping[str, Any]) -> Dict[str, Any]:
    out = {"reason": row.get("reason"), "t_start_s": round(int(row["t_start_ns"]) / 1e9, 3),
           "t_end_s": round(int(row["t_end_ns"]) / 1e9, 3) if row.get("t_end_ns") is not None else None}
    if row.get("frame_id") is not None:
        # The frame it fired on, in the cameras' 30 fps time base: when the decision fell.
        out["fired_s"] = round(int(row["frame_id"]) / FPS, 3)
    return out


def for_stream(records: Iterable[Record], stream: str) -> List[Record]:
    return [r for r in records if r.get("stream") == stream]


def budget_history(records: Iterable[Record]) -> List[Dict[str, Any]]:
    """One camera's camera_rates records, briefly: when (event s), occupancy, level, rates."""
    return [
        {"t_s": round(int(r["t_ns"]) / 1e9, 3), "occupied": r.get("occupied"), "level": r.get("level"),
         "reason": r.get("reason"), "rates_fps": r.get("rates_fps")}
        for r in records if r.get("record_type") == "camera_rates"
    ]


def explain_missed(missed: Sequence[Mapping[str, Any]], history: Sequence[Mapping[str, Any]],
                   look_back_s: float = 2.0) -> List[Dict[str, Any]]:
    """For each missed offline trigger: what the budget did on its camera around it.

    The schedule in force when the offline run fired it (the last camera_rates record
    at or before its firing frame; its start without one) and every change from
    `look_back_s` before its start to its firing: which rates the budget lowered
    (level > 0) and when. `lowered_by_budget` says whether the budget lowered them meanwhile
    (load, or the camera's allowance: the `reason` of each record).
    """
    out = []
    for trig in missed:
        start = trig["t_start_s"]
        end = trig.get("fired_s", trig["t_start_s"])
        before = [h for h in history if h["t_s"] <= end]
        around = [h for h in history if start - look_back_s <= h["t_s"] <= end]
        in_force = before[-1] if before else None
        window = ([in_force] if in_force and in_force not in around else []) + around
        lowered = [h for h in window if (h.get("level") or 0) > 0]
        out.append({**trig, "in_force": in_force, "changes": len(around), "first_changes": around[:MAX_LISTED],
                    "lowered_by_budget": bool(lowered),
                    "max_level": max((h.get("level") or 0 for h in window), default=0)})
    return out


class _Schedule:
    """One camera's camera_rates records by frame: the one in force at any frame (the
    last at or before it; {} before the first)."""

    def __init__(self, records: Iterable[Record]) -> None:
        rates = sorted(((int(r["frame_id"]), r) for r in records
                        if r.get("record_type") == "camera_rates" and r.get("frame_id") is not None),
                       key=lambda x: x[0])
        self._ids = [fid for fid, _ in rates]
        self._records = [r for _, r in rates]

    def at(self, frame_id: int) -> Mapping[str, Any]:
        i = bisect.bisect_right(self._ids, frame_id)
        return self._records[i - 1] if i else {}


def wire_losses(records: Sequence[Record]) -> List[Dict[str, Any]]:
    """Each run of frames lost on the wire (a `queue_full` gap): its frame ids, when in the
    stream (the cameras' 30 fps time base) and the budget's schedule in force then
    (occupied, level), so a reader sees whether losses fall at the stream's start, where a
    rider enters, or anywhere."""
    schedule = _Schedule(records)
    out = []
    for r in records:
        if r.get("record_type") != "frame_drop" or r.get("reason") != "queue_full":
            continue
        first, last = (r.get("dropped_range") or [r.get("frame_id"), r.get("frame_id")])[:2]
        if first is None:
            continue
        in_force = schedule.at(int(first))
        out.append({"first": int(first), "last": int(last), "count": int(r.get("dropped_count") or 1),
                    "t_s": round(int(first) / FPS, 2), "occupied": in_force.get("occupied"),
                    "level": in_force.get("level")})
    return sorted(out, key=lambda x: x["first"])


def describe_wire_losses(losses: Sequence[Mapping[str, Any]], limit: int = MAX_LISTED) -> str:
    """`frames 7-22 at 0.23 s (empty, level 0); ...` for the first `limit` runs of losses."""
    parts = []
    for gap in losses[:limit]:
        ids = str(gap["first"]) if gap["first"] == gap["last"] else f"{gap['first']}-{gap['last']}"
        state = "no schedule yet" if gap["occupied"] is None else (
            f"{'occupied' if gap['occupied'] else 'empty'}, level {gap['level']}")
        parts.append(f"frame{'' if gap['first'] == gap['last'] else 's'} {ids} at {gap['t_s']} s ({state})")
    if len(losses) > limit:
        parts.append(f"{len(losses) - limit} more")
    return "; ".join(parts)


def describe_others(others: Optional[Mapping[str, Any]]) -> str:
    """`; other processes took 0.05 cores on average (0.6 in the second from 0.25 s), steal 0.01`, or ''."""
    if not others:
        return ""
    return (f"; other processes took {others['mean_cores']} cores on average ({others['busiest_second_cores']} in "
            f"the second from {others['busiest_second_at_s']} s), steal {others['steal_cores']}")


def extraction_ms(records: Iterable[Record]) -> Dict[str, float]:
    """Summed extractor processing time (frame_extract records) per stream."""
    out: Dict[str, float] = {}
    for r in records:
        if r.get("record_type") == "frame_extract" and isinstance(r.get("processing_ms"), (int, float)):
            stream = str(r.get("stream"))
            out[stream] = out.get(stream, 0.0) + float(r["processing_ms"])
    return out


def split_cpu(total_cpu_s: float, weights: Mapping[str, float], frames: Mapping[str, int],
              fixed_share: float) -> Dict[str, float]:
    """The process's CPU seconds split over its cameras.

    `fixed_share` of the CPU (what every frame costs whatever runs on it: reading,
    scaling, the motion check, Bytewax's steps, alignment, fusion) goes by frames;
    the rest by each camera's summed extractor processing time.
    """
    total_w = sum(weights.values())
    total_f = sum(frames.values())
    out = {}
    for cam in frames:
        by_frames = frames[cam] / total_f if total_f else 0.0
        by_work = weights.get(cam, 0.0) / total_w if total_w else by_frames
        out[cam] = total_cpu_s * (fixed_share * by_frames + (1.0 - fixed_share) * by_work)
    return out


def complete_frames(records: Sequence[Record]) -> Dict[str, int]:
    """One camera's fused frames by how complete they are.

    `complete`: every extractor's result fresh or carried within its rate, no deadline
    missed but one fusion carried over within the extractor's floor.
    `unscheduled_empty`: otherwise complete, but an extractor the budget does not
    run on an empty camera (rate 0 in the camera_rates record in force: pose and hands
    while nobody is there) had nothing to carry. `incomplete`: the rest.
    """
    fused = {r.get("frame_id") for r in records
             if r.get("record_type") == "timing" and r.get("component") == "fusion_process"}
    _timed_out, partial = timeouts(records)
    uncarried: Dict[Any, set] = {}
    for r in records:
        if r.get("record_type") == "frame_carry" and not r.get("missed") and r.get("from_frame_id") is None:
            uncarried.setdefault(r.get("frame_id"), set()).add(str(r.get("source")))
    schedule = _Schedule(records)
    counts = {"complete": 0, "unscheduled_empty": 0, "incomplete": 0}
    for frame_id in fused:
        missing = uncarried.get(frame_id, set())
        if frame_id in partial:
            counts["incomplete"] += 1
        elif not missing:
            counts["complete"] += 1
        else:
            in_force = schedule.at(frame_id).get("rates_fps") or {}
            if in_force and all(in_force.get(name, 1) == 0 for name in missing):
                counts["unscheduled_empty"] += 1
            else:
                counts["incomplete"] += 1
    return counts


def camera_summary(
    trace: Sequence[Record],
    rows: Sequence[Record],
    stream: str,
    reference: Sequence[Mapping[str, Any]],
    publisher: Mapping[str, Any],
) -> Dict[str, Any]:
    """Everything the section reports for one camera of a live run."""
    mine = for_stream(trace, stream)
    my_rows = [r for r in rows if r.get("stream") == stream]
    frames = int(publisher.get("frames") or 0)
    acc = drop_accounting(mine, frames, int(publisher.get("dropped") or 0))
    send = {i: ns for i, ns in enumerate(publisher.get("send_wall_ns") or [])}
    release = release_latencies(send, mine, my_rows)
    match = match_triggers(reference, my_rows)
    history = budget_history(mine)
    rates = [r for r in mine if r.get("record_type") == "camera_rates"]
    last = rates[-1] if rates else {}
    complete = complete_frames(mine)
    return {
        # Complete, counting pose and hands the budget does not run while nobody is there.
        "fused_complete_or_empty": complete["complete"] + complete["unscheduled_empty"],
        "unscheduled_empty": complete["unscheduled_empty"],
        "frames_sent": frames,
        "fused": acc["fused"],
        "fused_complete": acc["fused_complete"],
        "fused_complete_share": rounded(acc["fused_complete"] / frames, 4) if frames else None,
        "fused_complete_or_empty_share": rounded((complete["complete"] + complete["unscheduled_empty"]) / frames, 4)
        if frames else None,
        "shed": acc["dropped_by_reason"].get("backpressure", 0),
        "dropped_by_reason": acc["dropped_by_reason"],
        "late_frames_not_fused": acc["late_frames_not_fused"],
        "partial_frames_timeout": acc["partial_frames_timeout"],
        "timeout_frames_carried": acc["timeout_frames_carried"],
        "not_carried_by_extractor": acc["not_carried_by_extractor"],
        "unaccounted": acc["unaccounted"],
        "publisher_dropped": acc["publisher_dropped"],
        "wire_losses": wire_losses(mine),
        # How late the publisher itself sent against its 30 fps schedule (a late publisher sends in bursts).
        "publisher_max_lag_ms": publisher.get("max_schedule_lag_ms"),
        "triggers": match,
        "missed_explained": explain_missed(match["missed_triggers"], history),
        "decision_p99_ms": release["decision"]["p99_ms"],
        "decision_count": release["count"],
        "budget": {
            "changes": len(history),
            "max_level": max((h.get("level") or 0 for h in history), default=0),
            "frames": last.get("frames"),
            "occupied_frames": last.get("occupied_frames"),
            "runs": last.get("runs"),
            "deferred": last.get("deferred") or {},
            "lowered_by_budget": [h for h in history if (h.get("level") or 0) > 0][:MAX_LISTED],
        },
    }
