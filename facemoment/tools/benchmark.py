"""`facemoment benchmark VIDEO`: per-extractor cost and end-to-end frame rate on your own footage.

The figures are those of bench/ (facemoment/tools/costs.py measures both), taken on
the given file instead of the built-in sample.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any, Dict

from facemoment.core.config import KNOWN_EXTRACTORS, load_config


def run_benchmark(video: str, frames: int = 60, extractors=KNOWN_EXTRACTORS, e2e: bool = True) -> Dict[str, Any]:
    from facemoment.tools import costs

    cfg = load_config(env={})
    sample = costs.spread_frames(video, frames)
    result: Dict[str, Any] = {
        "video": video,
        "width": sample.width,
        "height": sample.height,
        "frames_in_video": sample.total,
        "video_fps": sample.fps,
        "frames_measured": len(sample.frames),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "extractors": {name: costs.measure(name, sample.frames, cfg) for name in extractors},
    }
    result["sum_median_ms"] = round(sum(r["median_ms"] for r in result["extractors"].values()), 2)
    if e2e:
        run = costs.end_to_end(video, list(extractors))
        fps = sample.total / run["seconds"] if run["seconds"] > 0 else None
        run["fps"] = round(fps, 2) if fps else None
        run["realtime_factor"] = round(fps / sample.fps, 2) if fps and sample.fps else None
        result["end_to_end"] = run
    return result


def format_benchmark(r: Dict[str, Any]) -> str:
    fps = f" at {r['video_fps']:.3g} fps" if r.get("video_fps") else ""
    lines = [
        f"facemoment benchmark: {r['video']} ({r['width']}x{r['height']}, {r['frames_in_video']} frames{fps}; "
        f"{r['cores']} cores, {r['cpu']})",
        "",
        f"Per-extractor cost: each alone on one thread, {r['frames_measured']} frames spread over the video",
        f"  {'extractor':<10} {'median ms':>10} {'p90 ms':>8} {'mean ms':>8}",
    ]
    for name, c in r["extractors"].items():
        lines.append(f"  {name:<10} {c['median_ms']:>10.2f} {c['p90_ms']:>8.2f} {c['mean_ms']:>8.2f}")
    lines.append(f"  {'sum':<10} {r['sum_median_ms']:>10.2f}   (CPU per frame; the extractors run in parallel)")
    e2e = r.get("end_to_end")
    if e2e:
        lines.append("")
        speed = f" = {e2e['fps']:.1f} fps" if e2e.get("fps") else ""
        real = f", {e2e['realtime_factor']:.2f}x real time" if e2e.get("realtime_factor") else ""
        lines.append(
            f"End to end (the dataflow, batch preset: every frame extracted and fused, 1 worker, "
            f"{', '.join(r['extractors'])}): "
            f"{r['frames_in_video']} frames in {e2e['seconds']:.1f} s{speed}{real}; {e2e['triggers']} triggers"
        )
    return "\n".join(lines)


def cmd_benchmark(args: argparse.Namespace) -> int:
    if not Path(args.video).exists():
        print(f"facemoment benchmark: {args.video} does not exist", file=sys.stderr)
        return 2
    names = [n.strip() for n in args.extractors.split(",") if n.strip()] if args.extractors else list(KNOWN_EXTRACTORS)
    unknown = [n for n in names if n not in KNOWN_EXTRACTORS]
    if unknown:
        print(f"facemoment benchmark: unknown extractors {unknown}; known: {', '.join(KNOWN_EXTRACTORS)}", file=sys.stderr)
        return 2
    try:
        result = run_benchmark(args.video, args.frames, names, e2e=not args.no_end_to_end)
    except ValueError as exc:
        print(f"facemoment benchmark: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else format_benchmark(result), flush=True)
    return 0


def add_benchmark_args(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = subparsers.add_parser("benchmark", help="per-extractor cost and end-to-end fps on a video file")
    p.add_argument("video", help="a video file or recording")
    p.add_argument("--frames", type=int, default=60, help="frames to time each extractor on (spread over the video)")
    p.add_argument("--extractors", help="comma-separated subset, e.g. face,quality")
    p.add_argument("--no-end-to-end", action="store_true", help="skip the full dataflow run")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    p.set_defaults(func=cmd_benchmark)
