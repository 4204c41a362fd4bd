"""The short summary printed when a run ends, read back from its outputs."""

from __future__ import annotations

import atexit
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List

from facemoment.core.config import Config
from facemoment.runtime import cluster, output_losses
from facemoment.runtime.why import latest_tallies, why_lines


def read_jsonl(path: Path) -> List[Dict[str, Any]]:
    """Rows of a JSONL file; a missing file is empty, an unreadable line is skipped."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def summarize(out_dir: Path, trace_path: Path) -> str:
    triggers = read_jsonl(out_dir / "triggers.jsonl")
    clips = read_jsonl(out_dir / "clips" / "clips.jsonl")
    trace = read_jsonl(trace_path)
    reasons = Counter(t.get("reason") for t in triggers)
    sources = [r for r in trace if r.get("record_type") == "source_summary"]
    drops = Counter()
    partial = Counter()
    carried = Counter()
    uncarried = Counter()
    cascaded = Counter()
    for r in trace:
        if r.get("record_type") == "frame_skip":
            cascaded[r.get("source")] += 1
        elif r.get("record_type") == "frame_carry":
            (carried if r.get("from_frame_id") is not None else uncarried)[r.get("source")] += 1
        elif r.get("record_type") == "frame_drop":
            if r.get("reason") == "timeout":
                for name in r.get("extractors") or ["?"]:
                    partial[name] += 1
            else:
                drops[r.get("reason")] += r.get("dropped_count") or len(r.get("dropped_frame_ids") or [])
    ok_clips = [c for c in clips if c.get("status") == "ok"]
    sends = Counter(row.get("status") for row in read_jsonl(out_dir / "trig_sends.jsonl"))
    lines = ["", "FaceMoment run summary", "----------------------"]
    for s in sources:
        detail = ", ".join(f"{k}={v}" for k, v in s.items() if k not in ("record_type",))
        lines.append(f"source: {detail}")
    lines.append(f"triggers: {len(triggers)}" + (f" ({', '.join(f'{k} {v}' for k, v in reasons.items())})" if reasons else ""))
    for t in triggers:
        lines.append(f"  {t.get('message')}")
    if sends:
        lines.append("TRIG sends: " + ", ".join(f"{k} {v}" for k, v in sorted(sends.items())))
    clips_dir = out_dir / "clips"
    if clips_dir.is_dir():  # the clip sink makes it when the run starts
        lines.append(f"clips: {len(ok_clips)} written, {len(clips) - len(ok_clips)} failed -> {clips_dir}")
    else:
        lines.append("clips: off")
    lines.extend(trace_loss_lines(trace, output_losses.trace_losses()))
    if drops:
        lines.append("dropped frames: " + ", ".join(f"{k} {v}" for k, v in drops.items()))
    if partial:
        lines.append(
            "frames fused without an extractor that missed its deadline: "
            + ", ".join(f"{k} {v}" for k, v in partial.most_common())
        )
    if carried or uncarried:
        lines.append(
            "frames an extractor skipped for its declared rate: "
            + ", ".join(f"{k} {carried[k]} carried" + (f", {uncarried[k]} with nothing to carry" if uncarried[k] else "")
                        for k, _n in (carried + uncarried).most_common())
        )
    if cascaded:
        lines.append(
            "frames the cascade skipped (face found nobody): "
            + ", ".join(f"{k} {v}" for k, v in cascaded.most_common())
        )
    lines.extend(camera_lines(trace, triggers))
    lines.extend(why_lines(latest_tallies(trace), len(triggers)))
    written = [path for path in (out_dir / "triggers.jsonl", trace_path) if path.exists()]
    lines.append("outputs: " + (", ".join(str(path) for path in written) or "none"))
    return "\n".join(lines)


def trace_loss_lines(trace: List[Dict[str, Any]], losses: Dict[str, output_losses.TraceLoss]) -> List[str]:
    """One line per trace file that lost records: from its `trace_degraded` records and
    from this process's sink (which knows of losses no later write could record)."""
    lost: Dict[str, output_losses.TraceLoss] = {}
    for r in trace:
        if r.get("record_type") == "trace_degraded" and isinstance(r.get("lost_total"), int):
            path = str(r.get("path"))
            if path not in lost or r["lost_total"] >= lost[path].lost_total:
                lost[path] = output_losses.TraceLoss(r["lost_total"], str(r.get("error")))
    for path, loss in losses.items():
        if path not in lost or loss.lost_total >= lost[path].lost_total:
            lost[path] = loss
    return [
        f"trace degraded: {loss.lost_total} records lost to failed writes ({loss.error}) -> {path}"
        for path, loss in sorted(lost.items())
    ]


def print_summary_at_exit(cfg: Config) -> None:
    """Print the summary when the process ends, triggers or not; in the first
    process of a cluster only (the outputs are shared)."""
    out_dir = Path(cfg.output.output_dir)
    trace_path = Path(cfg.output.trace_path) if cfg.output.trace_path else out_dir / "trace.jsonl"

    def _print() -> None:
        if cluster.process_index() == 0:
            print(summarize(out_dir, trace_path), file=sys.stderr, flush=True)
        else:  # the trace's sink may run here; the first process cannot know what it lost
            for line in trace_loss_lines([], output_losses.trace_losses()):
                print(line, file=sys.stderr, flush=True)

    atexit.register(_print)


# Frames a source shed (its buffer full) and frames that never reached it.
_SHED_REASONS = ("backpressure", "queue_full")
_LOST_WHERE = ("wire", "while_down")


def _share(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.0f}%" if whole else "-"


def camera_lines(trace: List[Dict[str, Any]], triggers: List[Dict[str, Any]]) -> List[str]:
    """One line per camera: frames fused and how many had every extractor's result
    (fresh or carried), frames shed and lost, triggers, and with the CPU budget its
    share of occupied frames and its effective rates (the stream's last camera_rates)."""
    fused: Dict[str, int] = {}
    incomplete: Dict[str, set] = {}
    shed: Counter = Counter()
    lost: Counter = Counter()
    rates: Dict[str, Dict[str, Any]] = {}
    for r in trace:
        kind, stream = r.get("record_type"), r.get("stream")
        if not isinstance(stream, str):
            continue
        if kind == "gate_tally" and isinstance(r.get("frames"), int):
            fused[stream] = max(fused.get(stream, 0), r["frames"])
        elif kind == "fps_summary" and isinstance(r.get("frames_fused"), int):
            fused[stream] = max(fused.get(stream, 0), r["frames_fused"])
        elif kind == "sync_delay" and not r.get("late") and r.get("waiting_for"):
            incomplete.setdefault(stream, set()).add(r.get("frame_id"))
        elif kind == "frame_carry" and r.get("from_frame_id") is None:
            incomplete.setdefault(stream, set()).add(r.get("frame_id"))
        elif kind == "frame_drop":
            count = r.get("dropped_count") or len(r.get("dropped_frame_ids") or []) or 1
            if r.get("reason") == "timeout":
                incomplete.setdefault(stream, set()).add(r.get("frame_id"))
            elif r.get("where") in _LOST_WHERE:
                lost[stream] += count
            elif r.get("reason") in _SHED_REASONS:
                shed[stream] += count
        elif kind == "camera_rates":
            rates[stream] = r  # the last one is the camera's latest schedule
    fired = Counter(str(t.get("stream")) for t in triggers)
    streams = sorted(set(fused) | set(shed) | set(lost) | set(rates) | set(fired))
    if not streams:
        return []
    lines = ["cameras:"]
    for stream in streams:
        frames = fused.get(stream, 0)
        complete = max(0, frames - len(incomplete.get(stream, ())))
        n = fired[stream]
        line = (
            f"  {stream}: {frames} frames fused, {complete} with every extractor ({_share(complete, frames)}), "
            f"{shed[stream]} shed, {lost[stream]} lost, {n} trigger{'' if n == 1 else 's'}"
        )
        last = rates.get(stream)
        if last is not None:
            fps = ", ".join(
                f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}"
                for k, v in sorted((last.get("rates_fps") or {}).items())
            )
            line += f"; occupied {_share(last.get('occupied_frames') or 0, last.get('frames') or 0)} of its frames, rates {fps or 'none'} fps"
        lines.append(line)
    return lines
