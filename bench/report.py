"""results.md from the results, and writing results.json and results.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, List, Mapping, Sequence, Tuple

from bench.plan import RSS_PERIOD_S
from bench.targets import percent_text, share_of
from bench.workloads.camera_accounting import describe_others


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "none"
    return str(value).replace("|", "\\|")  # a bare pipe would split the table cell


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def render_markdown(results: Mapping[str, Any]) -> str:
    """results.md from a results dict; sections for measurements that did not run are left out."""
    m = results.get("machine") or {}
    lines = [
        "# FaceMoment benchmark results",
        "",
        f"- date: {results.get('date')}",
        f"- command: `{results.get('command')}` ({'quick' if results.get('quick') else 'full'} mode, "
        f"{results.get('duration_s')} s)",
        f"- machine: {m.get('platform')}; {m.get('cpu_model')}, {m.get('cores')} cores, {m.get('memory_gb')} GB",
        f"- software: Python {m.get('python')}, bytewax {m.get('bytewax')}, mediapipe {m.get('mediapipe')}, "
        f"numpy {m.get('numpy')}, opencv {m.get('opencv')}, pyzmq {m.get('pyzmq')}",
        f"- load average (1, 5, 15 min) before: {_cell(results.get('load_before'))}, after: {_cell(results.get('load_after'))}"
        + (f" — {results['load_note']}" if results.get("load_note") else ""),
        "",
    ]
    head = results.get("headline")
    if head:
        lines += ["## Headline: do all four extractors keep up with a live 30 fps 640x480 stream?", "", head["text"], ""]
    targets = results.get("targets") or []
    if targets:
        lines += ["## Targets", ""]
        lines += _table(
            ["target", "goal", "measured", "met", "missed by", "why"],
            [(t["name"], t["target"], t["measured"], t["met"], t["shortfall"], t["why"]) for t in targets],
        )
        lines.append("")
    bare = results.get("bare")
    if bare:
        lines += [f"## 1. Extractors alone ({bare['frames']} frames, 640x480, no Bytewax)", ""]
        lines += _table(
            ["extractor", "mean ms", "median ms", "p90 ms", "pipelined lane s"],
            [(n, v["mean_ms"], v["median_ms"], v["p90_ms"], bare["pipelined_lane_s"].get(n)) for n, v in bare["per_extractor"].items()],
        )
        lines += [
            "",
            f"- sequential, one thread (sum of per-extractor costs, {bare['sum_mean_ms']} ms/frame): "
            f"**{bare['sequential_fps']} fps**",
            f"- pipelined, one thread per extractor over all frames (the limit on this machine): "
            f"**{bare['pipelined_fps']} fps** (median {bare['pipelined_s']} s of runs {bare['pipelined_runs_s']}, "
            f"{bare['pipelined_cores_used']} cores busy)",
            f"- all {m.get('cores')} cores with the summed cost split perfectly would give {bare['ideal_fps_all_cores']} fps",
            "",
        ]
    df = results.get("dataflow")
    if df:
        lines += [
            "## 2. The dataflow, 1 worker (batch preset, trace, clips and TRIG off)",
            "",
            f"- {df['frames']} frames from a video file in {df['seconds']} s (median of runs {df['runs_s']}): "
            f"**{df['fps']} fps**, {df['cores_used']} cores busy",
            f"- overhead ratio (dataflow time / bare pipelined time): **{df['overhead_ratio']}** "
            f"(per run: {df['overhead_ratio_runs']})",
            f"- decoding the video alone: {df['decode']['ms_per_frame']} ms/frame",
            f"- method: {df['method']}",
        ]
        fast = df.get("fast_path")
        if fast:
            lines.append(
                f"- fast path (preset {fast['preset']}: {', '.join(fast['every'])}, no deadline): {fast['seconds']} s "
                f"(runs {fast['runs_s']}): **{fast['fps']} fps**, {fast['cores_used']} cores busy; "
                f"{fast['triggers']} triggers, the same as at full fidelity: "
                f"{'yes' if fast['same_triggers_as_full_fidelity'] else 'no'}")
        lines.append("")
    procs = results.get("processes")
    if procs:
        lines += ["## 3. Processes and workers (`python -m bytewax.run dataflows.facemoment`)", ""]
        lines += _table(
            ["layout", "fps", "speed-up vs 1 process", "cores busy", "seconds (median)", "runs s"],
            [(name, v["fps"], v.get("speedup_vs_1_process"), v.get("cores_used"), v["seconds"], v["runs_s"])
             for name, v in procs["layouts"].items()],
        )
        lines += ["", f"- method: {procs['method']}", ""]
    base = results.get("baselines")
    if base:
        lines += ["## 4. The seed's loops on the same frames and models", ""]
        lines += _table(
            ["baseline", "fps", "dataflow speed-up", "same triggers as the dataflow", "fast path speed-up",
             "same triggers as the fast path", "triggers", "timeouts", "runs s"],
            [(n, v["fps"], v["dataflow_speedup"], v["same_triggers_as_dataflow"], v.get("fast_path_speedup"),
              v.get("same_triggers_as_fast_path"), v["triggers"], v["timeouts"], v.get("runs_s"))
             for n, v in base.items()],
        )
        lines += ["", "- sequential_loop: each frame, every extractor in turn, then fusion; thread_pool_loop: the seed's "
                  "ExtractorOrchestrator, ThreadPoolExecutor(max_workers=4) and as_completed(timeout=0.15) per frame, "
                  "then fusion (bench/baselines.py)", ""]
    for key, title in (("latency", "5. Trigger latency, 30 fps paced input (realtime preset)"),
                       ("overload", "6. Overload: 30 fps paced input")):
        run = results.get(key)
        if not run:
            continue
        acc = run["accounting"]
        lines += [f"## {title}", ""]
        lines += [
            f"- frame size {run['frame_size']}, {acc['frames_attempted']} frames over {run['stream_seconds']} s"
            + (f" ({run['frame_size_reason']})" if run.get("frame_size_reason") else ""),
            f"- fused {run['fused_fps']} fps, fused with all four extractors {run['complete_fps']} fps",
            f"- publisher: sent {run['publisher']['sent']}, dropped at its high-water mark "
            f"{run['publisher']['dropped_at_hwm']}, max lag behind schedule {run['publisher']['max_schedule_lag_ms']} ms",
            f"- frames: fused {acc['fused']} + dropped {_cell(acc['dropped_by_reason'])} + late {acc['late_frames_not_fused']}"
            f" = {acc['frames_attempted'] - acc['unaccounted']} of {acc['frames_attempted']} sent"
            f" (unaccounted {acc['unaccounted']})",
            f"- partial frames (an extractor missed the deadline): {acc['partial_frames_timeout']}; "
            f"by extractor: {_cell(acc['timeouts_by_extractor'])}",
        ]
        late = run.get("late_frames_capture_to_alignment") or {}
        if late.get("count"):
            lines.append(f"- whole frames late at alignment: {late['count']}, reaching it {late['min_ms']}-{late['max_ms']} ms "
                         f"(median {late['p50_ms']} ms) after capture")
        if run.get("timings"):
            lines.append("- per-frame processing from the trace (median / p99 ms): "
                         + ", ".join(f"{k} {v['median_ms']} / {v['p99_ms']}" for k, v in run["timings"].items()))
        lat = run.get("latency")
        if lat:
            line = (f"- TRIG latency (receive time minus the send time of the frame it fired on), "
                    f"{lat['count']} triggers: **p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms**, max {lat['max_ms']} ms")
            parts = run.get("target_parts_ms")
            if parts:
                line += (f"; target {run['target_ms']} ms (window {parts['window']} + two frames "
                         f"{parts['two_frames']} + extraction p99 {parts.get('extraction_p99')})")
            lines.append(line)
        release = run.get("trig_release")
        if release and release.get("count"):
            lines.append(
                f"- TRIG timing {_cell(release['timing'])} ({_cell(release['causes'])}), {release['count']} triggers: "
                f"to the decision p50 {release['decision']['p50_ms']} ms, p99 {release['decision']['p99_ms']} ms; "
                f"to the send p50 {release['release']['p50_ms']} ms, p99 {release['release']['p99_ms']} ms "
                f"(held until the stream reached the clip's end, see docs/interop.md)"
            )
        rss = run.get("rss")
        if rss:
            lines.append(
                f"- dataflow RSS while streaming ({rss['samples']} samples every {RSS_PERIOD_S} s): "
                f"min {rss['min_mb']} MB, max {rss['max_mb']} MB, slope {rss['slope_mb_per_min']} MB/min over the "
                f"whole stream; after the first {rss['warmup_s']:.0f} s: **{rss['slope_after_warmup_mb_per_min']} MB/min**, "
                f"range {rss['range_after_warmup_mb']} MB; last third of the run: range {rss['range_last_third_mb']} MB"
            )
        lines.append("")
    ingest = results.get("ingest")
    if ingest:
        pipe, src = ingest["raw_pipe"], ingest["zmq_frame_source"]
        lines += [
            f"## 7. ZMQ ingest of raw {ingest['frame_size']} frames ({ingest['mb_per_frame']} MB each)",
            "",
            f"- ZmqFrameSource in a Bytewax flow (count only): **{src['fps']} fps, {src['mb_per_s']} MB/s**; "
            f"{src['frames']} of {ingest['frames_published']} frames, buffer drops "
            f"{(src.get('source_stats') or {}).get('dropped_backpressure')}",
            f"- the pipe alone (plain SUB, no copy): {pipe['fps']} fps, {pipe['mb_per_s']} MB/s",
            f"- publisher send loop (blocking, lossless): {pipe['publisher']['fps']} fps with the plain SUB, "
            f"{src['publisher']['fps']} fps with the source, waiting in send for the subscriber "
            f"{percent_text(share_of(src['publisher'].get('send_call_s'), src['publisher'].get('seconds')))} of its time "
            "(so the subscriber, not the publisher, sets the rate)",
            "",
        ]
    if results.get("extraction_cpu"):
        from bench.workloads.extraction_cpu import render as render_extraction_cpu

        lines += render_extraction_cpu(results["extraction_cpu"])
    fuzz = results.get("fuzz")
    if fuzz:
        from bench.workloads.fuzz import fuzz_rows

        lines += ["## 9. Hostile messages among a live stream (ZmqFrameSource, lossless publisher)", ""]
        lines += _table(["", "value"], fuzz_rows(fuzz))
        lines.append("")
    if results.get("cameras"):
        lines += render_cameras(results["cameras"])
    chaos = results.get("chaos")
    if chaos:
        from bench.workloads.chaos import chaos_rows

        lines += [f"## 11. Chaos soak: {chaos['seconds'] / 60:g} minutes live at 30 fps under recovery, faults on a seeded schedule", ""]
        if chaos.get("command"):
            lines += [f"Run alone: `{chaos['command']}` ({chaos.get('date')}).", ""]
        lines += _table(["", "value"], chaos_rows(chaos))
        lines.append("")
        if chaos.get("note"):
            lines += [chaos["note"], ""]
    cpu = results.get("cpu") or {}
    if cpu:
        lines += ["## CPU during each measurement (average cores busy)", ""]
        lines += _table(
            ["measurement", "seconds", "all processes", "the benchmark and its children", "other processes", "steal"],
            [(name, c["seconds"], c["system_cores"], c["own_cores"], c["foreign_cores"], c["steal_cores"]) for name, c in cpu.items()],
        )
        lines.append("")
    notes = results.get("notes") or []
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def render_cameras(cams: Mapping[str, Any]) -> List[str]:
    """Section 10: per layout, per camera."""
    lines = [f"## 10. Several cameras in one flow process (preset {cams['preset']}, {cams['frames_per_camera']} frames "
             "per camera, 30 fps)", ""]
    if cams.get("date"):
        lines.append(f"- measured {cams['date']} with `{cams.get('command')}` ({cams.get('duration_s')} s); the other "
                     "sections' figures are from the run named at the top")
    lines += [
        f"- load average (1, 5, 15 min) before: {_cell(cams.get('load_before'))}, after: {_cell(cams.get('load_after'))}",
        f"- offline references (batch preset, every extractor on every frame, from the camera's video file): "
        f"{_cell(cams.get('references'))} triggers",
        "- complete: fused with every extractor's result, fresh or carried within its rate, + frames complete but "
        "for pose and hands, which the budget does not run while the camera is empty; shed: backpressure "
        "drops at the source buffer; lost on the wire: frames the publisher's ZMQ queue gave up on (a gap in frame "
        "ids); triggers: matched / offline (+ extra), same reason and t_start within 100 ms; decision p99: from the "
        "frame's send to the TRIG decision (trig_release); CPU: cores per camera-second; deferred runs: due extractor "
        "runs the budget left off a frame because the lane could not finish them before the deadline (their last "
        "result carried)",
        "",
    ]
    rows = []
    for name, layout in (cams.get("layouts") or {}).items():
        for stream, c in layout["per_camera"].items():
            t = c["triggers"]
            rows.append((name, stream, c["kind"], f"{c['fused_complete']} + {c['unscheduled_empty']} = "
                         f"{c['fused_complete_or_empty']}/{c['frames_sent']}", c["shed"],
                         c["dropped_by_reason"].get("queue_full", 0),
                         c["late_frames_not_fused"], c["unaccounted"], f"{t['matched']}/{t['offline']}", t["missed"],
                         t["extra"], c["decision_p99_ms"], c.get("cpu_cores"),
                         f"{c['budget']['occupied_frames']}/{c['budget']['frames']}", c["budget"]["max_level"],
                         sum((c["budget"].get("deferred") or {}).values())))
    lines += _table(["layout", "camera", "kind", "complete", "shed", "lost on the wire", "late", "unaccounted", "triggers", "missed",
                     "extra", "decision p99 ms", "CPU cores", "occupied frames", "budget max level", "deferred runs"], rows)
    lines.append("")
    for name, layout in (cams.get("layouts") or {}).items():
        lines.append(f"- {name}: {layout['stream_seconds']} s, the process {layout['process_cpu_cores']} cores "
                     f"(fixed share {layout['fixed_share']}), {layout['trig_received']} TRIG received"
                     f"{describe_others(layout.get('others'))}")
        emitted = {s: c["fused"] + c["late_frames_not_fused"] for s, c in layout["per_camera"].items()}
        if len(emitted) > 1 and max(emitted.values()) >= 4 * max(1, min(emitted.values())):
            lines.append("  - uneven: frames that got past the source per camera "
                         + ", ".join(f"{s} {n}" for s, n in emitted.items())
                         + " (a camera's source buffer sheds while another's is served)")
        clips = layout.get("clips")
        if clips:
            lines.append(f"  - clips: {clips['clips']} for {clips['triggers']} triggers, full size "
                         f"{_cell(clips['full_size'])}, full length {_cell(clips['full_length'])} (clip seconds "
                         f"{clips['clip_seconds']}, trigger spans {clips['trigger_spans_s']})")
        for stream, c in layout["per_camera"].items():
            for m in c.get("missed_explained") or []:
                force = m.get("in_force") or {}
                lines.append(f"  - {stream} missed {m['reason']} at {m['t_start_s']} s (fired offline at "
                             f"{m.get('fired_s')} s): budget level then "
                             f"{force.get('level')} ({force.get('reason')}), rates {_cell(force.get('rates_fps'))}; "
                             f"schedule changes from 2 s before its start to its firing: {m.get('changes')}, load "
                             f"level up to {m.get('max_level')}, lowered by the budget: "
                             f"{_cell(m.get('lowered_by_budget'))}")
            for e in c["triggers"].get("extra_triggers") or []:
                lines.append(f"  - {stream} extra {e['reason']} at {e['t_start_s']} s")
    if cams.get("empty_camera_alone_cores") is not None:
        lines.append(f"- an empty camera alone (the flow process with one empty camera, all its costs, the process's "
                     f"own included): {cams['empty_camera_alone_cores']} cores")
    if cams.get("empty_camera_added_cores") is not None:
        lines.append("- what an empty camera adds to a process (3 empty cameras minus 1, halved): "
                     f"{cams['empty_camera_added_cores']} cores")
    if cams.get("empty_camera_by_difference_cores") is not None:
        lines.append(f"- an empty camera by difference (2 cameras minus 1): {cams['empty_camera_by_difference_cores']} cores")
    seed = cams.get("seed_thread_pool")
    if seed:
        lines += ["", f"Baseline: the seed's thread-pool loop on the 4 cameras' frames: **{seed['fps']} fps** against "
                  f"{seed['needed_fps']:.0f} fps sent ({seed['cameras_kept_up']} cameras' worth)", ""]
        lines += _table(["camera", "kind", "fps", "triggers", "missed", "extra", "timeouts", "CPU s per camera-second"],
                        [(s, c["kind"], c["fps"], f"{c['triggers']['matched']}/{c['triggers']['offline']}",
                          c["triggers"]["missed"], c["triggers"]["extra"], c["timeouts"], c["cpu_s_per_camera_s"])
                         for s, c in seed["per_camera"].items()])
        lines += ["", f"- method: {seed['method']}"]
    lines += [f"- CPU method: {cams.get('cpu_method')}", ""]
    choice = cams.get("preset_choice")
    if choice:
        lines += [f"Preset choice: the 1-camera layout under each preset ({choice['when']}, load average "
                  f"{_cell(choice.get('load'))})", ""]
        lines += _table(["preset", "process cores", "complete", "shed", "deadline missed", "triggers (+ extra)",
                         "fired vs offline ms", "t_start vs offline ms", "decision p99 ms"],
                        [(p, r["cores"], r["complete"], r["shed"], r["timeouts"],
                          f"{r['triggers']['matched']}/{r['triggers']['matched'] + r['triggers']['missed']} "
                          f"(+{r['triggers']['extra']})", r.get("fired_shift_ms"), r.get("start_shift_ms"), r["p99"])
                         for p, r in choice["runs"].items()])
        lines += ["", f"- {choice['why']}", ""]
    return lines


def write_results(results: Mapping[str, Any], out: Path) -> Tuple[Path, Path]:
    """results.json (every figure) and results.md (the report) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "results.json", out / "results.md"
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    md_path.write_text(render_markdown(results))
    return json_path, md_path
