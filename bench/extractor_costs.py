"""Per-extractor cost on 640x480 frames of the built-in sample, one extractor at a time.

    .venv/bin/python bench/extractor_costs.py [--frames N] [--markdown]

Each extractor runs alone on one thread over the same frames (half with the face
centred, half background only); the table gives the median and p90 milliseconds per
frame, which is what README's cost table shows.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from typing import Dict, List

from facemoment.core.config import KNOWN_EXTRACTORS, Config
from facemoment.core.types import Frame
from facemoment.formats.sample import render_frame, sample_timeline
from operators.extraction.registry import build_extractor


def sample_frames(count: int) -> List[Frame]:
    timeline = sample_timeline()
    with_face = [f.index for f in timeline.frames if f.face_inside]
    without = [f.index for f in timeline.frames if f.face_box is None]
    picks = [with_face[i * len(with_face) // (count // 2)] for i in range(count // 2)]
    picks += [without[i * len(without) // (count - count // 2)] for i in range(count - count // 2)]
    return [Frame("bench", i, timeline.frames[i].t_ns, render_frame(i)) for i in picks]


def measure(name: str, frames: List[Frame], cfg: Config) -> Dict[str, float]:
    extractor = build_extractor(name, cfg)
    load = getattr(extractor, "load", None)
    if load is not None:
        load()
    extractor.extract(frames[0])  # first-call costs are not per-frame costs
    with_face: List[float] = []
    without: List[float] = []
    half = len(frames) // 2
    for i, frame in enumerate(frames):
        start = time.perf_counter_ns()
        obs = extractor.extract(frame)
        ms = (time.perf_counter_ns() - start) / 1e6
        if obs.error:
            raise RuntimeError(f"{name}: {obs.error}")
        (with_face if i < half else without).append(ms)
    extractor.close()
    both = with_face + without
    return {
        "person_median_ms": round(statistics.median(with_face), 2),
        "empty_median_ms": round(statistics.median(without), 2),
        "median_ms": round(statistics.median(both), 2),
        "p90_ms": round(sorted(both)[int(0.9 * (len(both) - 1))], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    cfg = Config()
    frames = sample_frames(args.frames)
    results = {name: measure(name, frames, cfg) for name in KNOWN_EXTRACTORS}
    if not args.markdown:
        print(json.dumps(results, indent=2))
        return 0
    print(f"Per-extractor cost, 640x480, {args.frames} sample frames, one thread, "
          f"{platform.processor() or platform.machine()}, {time.strftime('%Y-%m-%d')}:\n")
    print("| extractor | with a person (median ms) | empty frame (median ms) | all (median ms) | p90 ms |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['person_median_ms']} | {r['empty_median_ms']} | {r['median_ms']} | {r['p90_ms']} |")
    total = sum(r["person_median_ms"] for r in results.values())
    print(f"| **sum** | {round(total, 2)} | {round(sum(r['empty_median_ms'] for r in results.values()), 2)} | | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
