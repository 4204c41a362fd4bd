"""What FaceMoment costs on given frames: per-extractor time and end-to-end frame rate.

Shared by `facemoment benchmark VIDEO` (any footage) and bench/extractor_costs.py
(the sample), so both report the same figures measured the same way: each extractor
alone on one thread over the same frames, after a first call that loads its models.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from facemoment.core.config import Config
from facemoment.core.types import Frame
from operators.extraction.registry import build_extractor


def percentile_ms(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


def warm_up(extractor: Any, frame: Frame) -> None:
    """Load the extractor's models and run it once: first-call costs are not per-frame costs."""
    load = getattr(extractor, "load", None)
    if load is not None:
        load()
    extractor.extract(frame)


def frame_costs_ms(name: str, extractor: Any, frames: Sequence[Frame]) -> List[float]:
    """Milliseconds `extractor` takes on each frame, one after the other on this thread.

    A frame it fails on ends the measurement: a failing model's time means nothing.
    """
    times: List[float] = []
    for frame in frames:
        start = time.perf_counter_ns()
        obs = extractor.extract(frame)
        times.append((time.perf_counter_ns() - start) / 1e6)
        if obs.error:
            raise RuntimeError(f"{name} extractor failed on frame {frame.frame_id}: {obs.error}")
    return times


def measure(name: str, frames: Sequence[Frame], cfg: Config, groups: Optional[Sequence[str]] = None) -> Dict[str, object]:
    """Milliseconds per frame of extractor `name`: median, p90, mean, and the median per group label."""
    if not frames:
        raise ValueError("no frames to measure on")
    extractor = build_extractor(name, cfg)
    try:
        warm_up(extractor, frames[0])
        times = frame_costs_ms(name, extractor, frames)
    finally:
        extractor.close()
    by_group: Dict[str, List[float]] = {}
    for label, ms in zip(groups or (), times):
        by_group.setdefault(label, []).append(ms)
    return {
        "median_ms": round(statistics.median(times), 2),
        "p90_ms": round(percentile_ms(times, 0.9), 2),
        "mean_ms": round(statistics.fmean(times), 2),
        "frames": len(times),
        "groups": {label: round(statistics.median(v), 2) for label, v in by_group.items()},
    }


@dataclass
class VideoFrames:
    """An evenly spread sample of a video's frames, and what the whole video is."""

    frames: List[Frame]
    total: int
    fps: Optional[float]
    width: int
    height: int


def spread_frames(source: str, count: int) -> VideoFrames:
    """Up to `count` frames spread over the whole video (the video is read once, kept only in part)."""
    from facemoment.formats.frames import open_frames

    reader = open_frames(source)
    expected = int(getattr(reader, "frame_count", 0) or 0)
    stride = max(1, math.ceil(expected / count)) if expected > 0 else 1
    kept: List[Frame] = []
    total = 0
    try:
        for frame_id, t_ns, image in reader:
            if total % stride == 0 and len(kept) < count:
                kept.append(Frame("benchmark", frame_id, t_ns, image))
            total += 1
    finally:
        close = getattr(reader, "close", None)
        if close is not None:
            close()
    if not kept:
        raise ValueError(f"{source}: no frame could be decoded")
    fps = getattr(reader, "source_fps", None)
    height, width = kept[0].image.shape[:2]
    return VideoFrames(kept, total, fps, width, height)


def end_to_end(source: str, extractors: Sequence[str], presets: Sequence[str] = ("batch",)) -> Dict[str, float]:
    """The real dataflow on the whole file: every frame extracted and fused, wall time measured."""
    from facemoment.tools.api import MomentDetector

    with tempfile.TemporaryDirectory(prefix="facemoment-benchmark-") as out:
        detector = MomentDetector(
            presets=list(presets), output_dir=out, clips=False, trace="minimal", extractors=list(extractors)
        )
        start = time.perf_counter()
        triggers = detector.process_file(source)
        seconds = time.perf_counter() - start
        tally_frames = _frames_fused(Path(out) / "trace.jsonl")
    return {"seconds": round(seconds, 2), "triggers": len(triggers), "frames_fused": tally_frames}


def _frames_fused(trace: Path) -> Optional[int]:
    from facemoment.runtime.summary import read_jsonl

    counts = [r.get("frames_fused") for r in read_jsonl(trace) if r.get("record_type") == "fps_summary"]
    counts += [r.get("frames") for r in read_jsonl(trace) if r.get("record_type") == "gate_tally"]
    numbers = [c for c in counts if isinstance(c, int)]
    return max(numbers) if numbers else None
