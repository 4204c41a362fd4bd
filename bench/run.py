"""FaceMoment's benchmark: every figure measured side by side in one run on this machine.

    .venv/bin/python bench/run.py [--quick] [--out bench/]
    .venv/bin/python -m bench [--quick] [--out bench/]
    .venv/bin/python bench/run.py --only chaos [--chaos-minutes 30]   # the chaos soak alone

Writes results.json and results.md into --out. All figures use 640x480 frames of the
built-in sample (the ingest figure uses raw 1080p frames). What each measurement
does and how its time is taken is in bench/README.md and in each function's doc.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

# Run as a script, bench/ is not on the path: make the `bench` package importable.
if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.meters import CpuMeter, load_average, machine_info, wait_for_quiet  # noqa: E402
from bench.plan import FOREIGN_LOAD_NOTE, INGEST_SIZE, OVERLOAD_LARGE_SIZE, REPO, Plan, Progress  # noqa: E402
from bench.report import write_results  # noqa: E402
from bench.targets import evaluate_targets, headline  # noqa: E402
from bench.workloads.accounting import kept_up  # noqa: E402
from bench.workloads.chaos import measure_chaos  # noqa: E402
from bench.workloads.extraction_cpu import measure_extraction_cpu  # noqa: E402
from bench.workloads.in_process import load_extractors, measure_in_process  # noqa: E402
from bench.workloads.fuzz import measure_fuzz  # noqa: E402
from bench.workloads.ingest import measure_ingest, serve_raw_frames  # noqa: E402
from bench.workloads.inputs import prepare_inputs  # noqa: E402
from bench.workloads.live import measure_latency, measure_overload  # noqa: E402
from bench.workloads.processes import measure_processes  # noqa: E402
from bench.workloads.cameras import DEFAULT_PRESET as CAMERAS_PRESET, LAYOUTS, QUICK_LAYOUTS, measure_cameras  # noqa: E402
from facemoment.core.config import Config  # noqa: E402


def _parse_size(text: str) -> Tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}")
    return int(width), int(height)


def run_chaos(minutes: float, work: Path, log: Progress) -> Dict[str, Any]:
    """10: the chaos soak on the sample's frames (bench/workloads/chaos.py)."""
    from bench.workloads.inputs import decode_video
    from facemoment.formats.sample import ensure_sample_video

    images = [f.image for f in decode_video(ensure_sample_video())]
    return measure_chaos(images, minutes * 60.0, work, log)


def run_only_chaos(minutes: float, out: Path, command: str, log: Progress) -> Dict[str, Any]:
    """The soak alone: its section replaces the one in ``out``/results.json, the others stay."""
    previous = out / "results.json"
    results: Dict[str, Any] = json.loads(previous.read_text()) if previous.exists() else {}
    with tempfile.TemporaryDirectory(prefix="facemoment-chaos-") as tmp:
        chaos = run_chaos(minutes, Path(tmp), log)
    chaos["command"] = command
    chaos["date"] = datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
    results["chaos"] = chaos
    results["targets"] = evaluate_targets(results)
    return results


def run_benchmark(plan: Plan, out: Path, command: str, overload_size: Optional[Tuple[int, int]], log: Progress,
                  chaos_minutes: Optional[float] = None) -> Dict[str, Any]:
    results: Dict[str, Any] = {
        "date": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
        "command": command,
        "quick": plan.quick,
        "machine": machine_info(),
        "load_before": load_average(),
        "plan": {"frames": plan.frames, "repeats": plan.repeats, "latency_s": plan.latency_s,
                 "overload_s": plan.overload_s, "ingest_frames": plan.ingest_frames},
    }
    log(f"machine: {results['machine']['cpu_model']}, {results['machine']['cores']} cores; "
        f"load average {results['load_before']}")

    def measured(name: str, fn: Callable[[], Any]) -> Any:
        """Run one measurement after a bounded wait for a quiet machine; record the CPU it saw."""
        wait_for_quiet(log, plan.quiet_wait_s)
        with CpuMeter() as meter:
            value = fn()
        results.setdefault("cpu", {})[name] = meter.result
        log(f"{name}: cores busy {meter.result['system_cores']}, ours {meter.result['own_cores']}, "
            f"other processes {meter.result['foreign_cores']}")
        return value

    with tempfile.TemporaryDirectory(prefix="facemoment-bench-") as tmp:
        work = Path(tmp)
        inputs = prepare_inputs(plan, work, log)
        extractors = load_extractors(Config(), inputs.frames[0])
        try:
            results["bare"], results["dataflow"], results["baselines"] = measured(
                "in_process", lambda: measure_in_process(inputs, extractors, work, plan.repeats, log)
            )
        finally:
            for extractor in extractors.values():
                extractor.close()
        results["extraction_cpu"] = measured("extraction_cpu", lambda: measure_extraction_cpu(inputs.frames, log))
        results["processes"] = measured("processes", lambda: measure_processes(inputs, work, plan.repeats, log))
        results["latency"] = measured("latency", lambda: measure_latency(inputs, plan, work, log))
        if overload_size is None:
            if kept_up(results["latency"]):
                overload_size = OVERLOAD_LARGE_SIZE
                why = "640x480 kept up in the latency run, so larger frames make the processing slower than 30 fps"
            else:
                overload_size = (640, 480)
                why = "640x480 is already more than this machine processes completely at 30 fps (see 5.)"
        else:
            why = "frame size chosen on the command line"
        results["overload"] = measured(
            "overload", lambda: measure_overload(inputs, plan, work, overload_size, why, log)
        )
        results["ingest"] = measured("ingest", lambda: measure_ingest(plan, work, log))
        results["fuzz"] = measured("fuzz", lambda: measure_fuzz(plan, log))
        if chaos_minutes is not None:
            results["chaos"] = measured("chaos", lambda: run_chaos(chaos_minutes, work, log))
    results["load_after"] = load_average()
    results["duration_s"] = round(time.monotonic() - log.started, 1)
    results["headline"] = headline(results)
    results["targets"] = evaluate_targets(results)
    foreign = max((c["foreign_cores"] for c in results["cpu"].values()), default=0.0)
    results["load_note"] = (
        f"other processes used up to {foreign} cores on average during a measurement (see the CPU table)"
        if foreign >= FOREIGN_LOAD_NOTE else "the machine was otherwise quiet during the measurements"
    )
    results["notes"] = [
        "All figures come from this one run; the dataflow, bare and baseline figures use the same 640x480 frames "
        "(decoded from the same encoded video).",
        f"Live runs (5, 6) use the {plan.live_preset} preset (realtime: 150 ms extractor deadline, 100 ms window, "
        "200 ms allowed lateness), trace level normal (the drop accounting comes from it) and clips off: TRIG goes to "
        "visualbase, which cuts the clips; the in-process live ring buffer would add a JPEG encode per frame.",
        "Before each measurement the benchmark waits (up to "
        f"{plan.quiet_wait_s:.0f} s) for other processes to leave the cores; the CPU table shows what they still used.",
    ]
    return results


def measure_cameras_section(plan: Plan, layouts: List[str], preset: str, log: Progress,
                            results: Dict[str, Any]) -> Dict[str, Any]:
    """10. the multi-camera section, after a bounded wait for a quiet machine; the load it saw."""
    wait_for_quiet(log, plan.quiet_wait_s)
    load = load_average()
    with tempfile.TemporaryDirectory(prefix="facemoment-bench-cameras-") as tmp, CpuMeter() as meter:
        section = measure_cameras(layouts, preset, Path(tmp), log, baseline=not plan.quick or "4 cameras" in layouts,
                                  quiet_wait_s=plan.quiet_wait_s)
    section["load_before"] = load
    section["load_after"] = load_average()
    results.setdefault("cpu", {})["cameras"] = meter.result
    return section


def run_cameras_only(plan: Plan, out: Path, command: str, layouts: List[str], preset: str,
                     log: Progress) -> Dict[str, Any]:
    """Only the multi-camera section; every other figure is taken from out/results.json as it is."""
    previous = out / "results.json"
    results: Dict[str, Any] = json.loads(previous.read_text()) if previous.exists() else {
        "date": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"), "command": command,
        "quick": plan.quick, "machine": machine_info(), "load_before": load_average()}
    started = time.monotonic()
    results["cameras"] = measure_cameras_section(plan, layouts, preset, log, results)
    results["cameras"]["date"] = datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
    results["cameras"]["command"] = command
    results["cameras"]["duration_s"] = round(time.monotonic() - started, 1)
    results["targets"] = evaluate_targets(results)
    return results


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller runs, under 3 minutes")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="where results.json/md go")
    parser.add_argument("--overload-size", type=_parse_size, default=None,
                        help="frame size for the overload run (default: 640x480 unless it kept up, then 1920x1080)")
    parser.add_argument("--overload-seconds", type=float, default=None,
                        help="length of the overload run (default: 180, 15 with --quick); 1080p frames in "
                             "flight swing RSS by about 90 MB, so a longer run resolves a smaller memory trend")
    parser.add_argument("--only", choices=["cameras", "chaos"], default=None,
                        help="run only this section; the other sections' figures in --out's results.json are kept")
    parser.add_argument("--cameras-preset", default=CAMERAS_PRESET,
                        help=f"preset(s) of the multi-camera runs (default: {CAMERAS_PRESET})")
    parser.add_argument("--cameras-layouts", default=None,
                        help="comma-separated layouts of the multi-camera section (default: all; --quick: "
                             f"{', '.join(QUICK_LAYOUTS)}); known: {', '.join(LAYOUTS)}")
    parser.add_argument("--live-preset", default="realtime",
                        help="preset(s) of the live runs, e.g. realtime,lean (default: realtime)")
    parser.add_argument("--chaos", action="store_true",
                        help="also run the chaos soak (11; off by default: it takes --chaos-minutes and an offline run)")
    parser.add_argument("--chaos-minutes", type=float, default=30.0, help="length of the chaos soak (default: 30)")
    # The raw frame publisher for the ingest measurement runs as a child process of the benchmark.
    parser.add_argument("--serve-raw-frames", metavar="ADDRESS", help=argparse.SUPPRESS)
    parser.add_argument("--serve-count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--serve-size", type=_parse_size, default=INGEST_SIZE, help=argparse.SUPPRESS)
    parser.add_argument("--serve-result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_raw_frames:
        result = serve_raw_frames(args.serve_raw_frames, args.serve_count, args.serve_size)
        args.serve_result.write_text(json.dumps(result))
        return 0

    log = Progress()
    plan = dataclasses.replace(Plan.for_mode(args.quick), live_preset=args.live_preset)
    if args.overload_seconds is not None:
        if args.overload_seconds <= 0:
            parser.error("--overload-seconds must be positive")
        plan = dataclasses.replace(plan, overload_s=args.overload_seconds)
    if args.chaos_minutes <= 0:
        parser.error("--chaos-minutes must be positive")
    python = os.path.relpath(sys.executable) if sys.executable.startswith(str(REPO)) else sys.executable
    script = os.path.relpath(__file__) if __file__.startswith(os.getcwd()) else __file__
    entry = ["-m", "bench"] if sys.argv[0].endswith("__main__.py") else [script]
    command = shlex.join([python, *entry, *(argv if argv is not None else sys.argv[1:])])
    layouts = [x.strip() for x in args.cameras_layouts.split(",")] if args.cameras_layouts else (
        list(QUICK_LAYOUTS) if args.quick else list(LAYOUTS))
    unknown = [x for x in layouts if x not in LAYOUTS]
    if unknown:
        parser.error(f"unknown layout(s) {', '.join(unknown)}; known: {', '.join(LAYOUTS)}")
    if args.only == "cameras":
        results = run_cameras_only(plan, args.out, command, layouts, args.cameras_preset, log)
    elif args.only == "chaos":
        results = run_only_chaos(args.chaos_minutes, args.out, command, log)
    else:
        results = run_benchmark(plan, args.out, command, args.overload_size, log,
                                args.chaos_minutes if args.chaos else None)
        results["cameras"] = measure_cameras_section(plan, layouts, args.cameras_preset, log, results)
        results["targets"] = evaluate_targets(results)
    json_path, md_path = write_results(results, args.out)
    log(f"wrote {json_path} and {md_path}")
    if "headline" in results:
        print(results["headline"]["text"], flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
