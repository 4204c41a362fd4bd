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
import time
from typing import Dict, List

from facemoment.core.config import KNOWN_EXTRACTORS, Config
from facemoment.core.types import Frame
from facemoment.formats.sample import render_frame, sample_timeline
from facemoment.tools import costs


def sample_frames(count: int) -> List[Frame]:
    timeline = sample_timeline()
    with_face = [f.index for f in timeline.frames if f.face_inside]
    without = [f.index for f in timeline.frames if f.face_box is None]
    picks = [with_face[i * len(with_face) // (count // 2)] for i in range(count // 2)]
    picks += [without[i * len(without) // (count - count // 2)] for i in range(count - count // 2)]
    return [Frame("bench", i, timeline.frames[i].t_ns, render_frame(i)) for i in picks]


def measure(name: str, frames: List[Frame], cfg: Config) -> Dict[str, float]:
    """The product's measurement (facemoment/tools/costs.py), split into person and empty frames."""
    half = len(frames) // 2
    r = costs.measure(name, frames, cfg, groups=["person"] * half + ["empty"] * (len(frames) - half))
    return {
        "person_median_ms": r["groups"]["person"],
        "empty_median_ms": r["groups"]["empty"],
        "median_ms": r["median_ms"],
        "p90_ms": r["p90_ms"],
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
