"""The seed design's two ways of running extractors, as baselines for the dataflow.

Both take frames already in memory and the same extractor instances the benchmark
uses elsewhere (one instance per extractor), and both finish every frame with the
project's fusion (`FusionRules` on a `FusionState`) on a `FrameObservations`, so their cost is the
cost of a complete frame-in, decision-out loop.

- `sequential_loop`: each frame, every extractor in turn, then fusion.
- `thread_pool_loop`: the seed's ExtractorOrchestrator. Each frame, every extractor
  is submitted to a `ThreadPoolExecutor(max_workers=4)` and collected with
  `as_completed(timeout=0.15)`; extractors that miss the timeout are left out of
  that frame (and counted), then fusion runs. Frames go one after another: the next
  frame starts only when the current one is collected.

The extractors guard their MediaPipe graphs with a lock, so an extractor that is
still busy with a late frame when the next frame's job for it arrives makes that job
wait instead of running the same graph twice at once.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from facemoment.core.config import Config
from facemoment.core.types import Frame, FrameObservations, Observation, Trigger
from operators.fusion_rules import FusionRules
from operators.fusion_state import FusionState

SEED_POOL_WORKERS = 4
SEED_TIMEOUT_S = 0.15


@dataclass
class BaselineResult:
    name: str
    frames: int
    seconds: float
    triggers: List[Trigger] = field(default_factory=list)
    # Frames fused without an extractor's result, by extractor.
    timeouts: Dict[str, int] = field(default_factory=dict)
    # Extractor results that reported an error instead of observations.
    errors: int = 0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> Dict[str, object]:
        return {
            "name": self.name,
            "frames": self.frames,
            "seconds": round(self.seconds, 3),
            "fps": round(self.fps, 2),
            "triggers": len(self.triggers),
            "trigger_reasons": sorted(t.reason for t in self.triggers),
            "timeouts": dict(self.timeouts),
            "errors": self.errors,
        }


class _Fusion:
    """Fusion for one stream, fed one frame at a time as the baselines finish them."""

    def __init__(self, cfg: Config, expected: Sequence[str]):
        self.rules = FusionRules(cfg.fusion, "off")
        self.state = FusionState()
        self.expected = tuple(expected)
        self.triggers: List[Trigger] = []
        self.errors = 0

    def fuse(self, frame: Frame, observations: Mapping[str, Observation]) -> Optional[Trigger]:
        self.errors += sum(1 for obs in observations.values() if obs.error)
        missing = tuple(name for name in self.expected if name not in observations)
        fo = FrameObservations(
            stream_id=frame.stream_id,
            frame_id=frame.frame_id,
            t_ns=frame.t_src_ns,
            observations=dict(observations),
            missing=missing,
            extract_wall_ns=time.time_ns(),
        )
        trigger, _records = self.rules.process(self.state, fo)
        if trigger is not None:
            self.triggers.append(trigger)
        return trigger


def sequential_loop(frames: Sequence[Frame], extractors: Mapping[str, object], cfg: Config) -> BaselineResult:
    """Every extractor in turn on each frame, then fusion; one thread."""
    fusion = _Fusion(cfg, list(extractors))
    start = time.perf_counter()
    for frame in frames:
        observations = {name: ext.extract(frame) for name, ext in extractors.items()}  # type: ignore[attr-defined]
        fusion.fuse(frame, observations)
    seconds = time.perf_counter() - start
    return BaselineResult("sequential_loop", len(frames), seconds, fusion.triggers, {}, fusion.errors)


def collect_with_timeout(
    futures: Mapping[Future, str], timeout_s: float
) -> Tuple[Dict[str, Observation], List[str]]:
    """The seed's collection: results in completion order until the timeout; (results, missed)."""
    results: Dict[str, Observation] = {}
    try:
        for future in as_completed(futures, timeout=timeout_s):
            name = futures[future]
            try:
                results[name] = future.result()
            except Exception as exc:  # a failing extractor leaves an error observation, as the dataflow does
                results[name] = Observation(name, "", -1, 0, error=f"{type(exc).__name__}: {exc}")
    except TimeoutError:
        pass  # the rest missed this frame
    missed = [name for name in futures.values() if name not in results]
    return results, missed


def thread_pool_loop(
    frames: Sequence[Frame],
    extractors: Mapping[str, object],
    cfg: Config,
    max_workers: int = SEED_POOL_WORKERS,
    timeout_s: float = SEED_TIMEOUT_S,
) -> BaselineResult:
    """The seed's orchestrator: per frame, all extractors on a pool, collected with a timeout, then fusion."""
    fusion = _Fusion(cfg, list(extractors))
    timeouts: Dict[str, int] = {}
    with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="seed-pool") as pool:
        start = time.perf_counter()
        for frame in frames:
            futures = {pool.submit(ext.extract, frame): name for name, ext in extractors.items()}  # type: ignore[attr-defined]
            results, missed = collect_with_timeout(futures, timeout_s)
            for name in missed:
                timeouts[name] = timeouts.get(name, 0) + 1
            fusion.fuse(frame, results)
        seconds = time.perf_counter() - start
    return BaselineResult("thread_pool_loop", len(frames), seconds, fusion.triggers, timeouts, fusion.errors)
