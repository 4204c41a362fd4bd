"""The per-frame deadline: slow extractors are left behind, never waited for past it."""

from __future__ import annotations

import threading
from typing import List

import numpy as np

from facemoment.core.config import Config
from facemoment.core.records import FrameDrop, Record, Timing
from facemoment.core.types import Frame, FramePresence, Observation
from operators.extraction.orchestrator import Orchestrator


class _Fast:
    name = "fast"

    def extract(self, frame: Frame) -> Observation:
        return Observation("fast", frame.stream_id, frame.frame_id, frame.t_src_ns, signals={"v": 1.0})

    def close(self) -> None:
        pass


class _Blocking:
    """Blocks on its first call until the test releases it."""

    name = "slow"

    def __init__(self, release: threading.Event, started: threading.Event, calls: List[int]):
        self.release, self.started, self.calls = release, started, calls

    def extract(self, frame: Frame) -> Observation:
        self.calls.append(frame.frame_id)
        self.started.set()
        assert self.release.wait(30)
        return Observation("slow", frame.stream_id, frame.frame_id, frame.t_src_ns)

    def close(self) -> None:
        pass


def _setup(deadline_ms: float):
    release, started, calls = threading.Event(), threading.Event(), []
    cfg = Config()
    cfg.extract.extractors = ["fast", "slow"]
    cfg.extract.deadline_ms = deadline_ms

    def factory(name, _cfg):
        return _Fast() if name == "fast" else _Blocking(release, started, calls)

    return Orchestrator(cfg, factory), release, started, calls


def _frame(i: int) -> Frame:
    return Frame("cam0", i, i * 33_333_333, np.zeros((4, 4, 3), np.uint8))


def test_missed_deadline_fuses_without_the_slow_extractor_and_says_so():
    orch, release, _started, calls = _setup(deadline_ms=50)
    try:
        out = orch.run([_frame(0)])
        sources = [o.source for o in out if isinstance(o, (Observation, FramePresence))]
        assert sorted(sources) == ["fast", "frame"]
        records = [r.to_dict() for r in out if isinstance(r, Record)]
        drops = [r for r in records if r["record_type"] == "frame_drop"]
        assert drops == [
            {
                "record_type": "frame_drop",
                "frame_id": 0,
                "stream": "cam0",
                "dropped_frame_ids": [0],
                "reason": "timeout",
                "extractors": ["slow"],
                "queue_depth": 0,
                "threshold_ms": 50,
            }
        ]
        timing = {r["component"]: r for r in records if r["record_type"] == "timing"}
        assert set(timing) == {"fast", "orchestrator"}
        # Frames queued behind the blocked lane pass their deadline and are skipped
        # unrun, so the lane catches up instead of falling further behind.
        out = orch.run([_frame(1), _frame(2)])
        assert sorted(o.frame_id for o in out if isinstance(o, Observation) and o.source == "slow") == []
        release.set()
        out = orch.run([_frame(3)])
        assert [o.frame_id for o in out if isinstance(o, Observation) and o.source == "slow"] == [3]
        late = [r.to_dict() for r in out if isinstance(r, Timing) and r.late]
        assert [(r["frame_id"], r["component"], r["is_slow"]) for r in late] == [(0, "slow", True)]
        assert calls == [0, 3]
    finally:
        release.set()
        orch.close()


def test_without_a_deadline_the_frame_waits_for_every_extractor():
    orch, release, started, _calls = _setup(deadline_ms=0)
    result: List = []
    runner = threading.Thread(target=lambda: result.extend(orch.run([_frame(0)])))
    try:
        runner.start()
        assert started.wait(30)
        assert runner.is_alive()  # blocked on the slow extractor, not given up
        release.set()
        runner.join(30)
        assert sorted(o.source for o in result if isinstance(o, (Observation, FramePresence))) == ["fast", "frame", "slow"]
        assert not [r for r in result if isinstance(r, FrameDrop)]
    finally:
        release.set()
        orch.close()


def test_extractor_that_cannot_start_reports_errors_not_crashes():
    cfg = Config()
    cfg.extract.extractors = ["broken"]

    def factory(name, _cfg):
        raise FileNotFoundError("model file /models/x.onnx is missing")

    orch = Orchestrator(cfg, factory)
    try:
        out = orch.run([_frame(0), _frame(1)])
        errors = [o for o in out if isinstance(o, Observation) and o.source == "broken"]
        assert [o.frame_id for o in errors] == [0, 1]
        assert all("x.onnx" in o.error for o in errors)
    finally:
        orch.close()


class _AlwaysSlow:
    """Costs 40 ms on every frame (simulated model cost), more than the deadline allows."""

    name = "slow"

    def __init__(self, calls: List[int]):
        self.calls = calls

    def extract(self, frame: Frame) -> Observation:
        self.calls.append(frame.frame_id)
        threading.Event().wait(0.04)
        return Observation("slow", frame.stream_id, frame.frame_id, frame.t_src_ns)

    def close(self) -> None:
        pass


def test_an_extractor_skipped_for_its_cost_keeps_being_tried():
    calls: List[int] = []
    cfg = Config()
    cfg.extract.extractors = ["slow"]
    cfg.extract.deadline_ms = 30  # below its cost: once the estimate learns that, frames look hopeless
    orch = Orchestrator(cfg, lambda _n, _c: _AlwaysSlow(calls))
    try:
        for i in range(80):
            orch.run([_frame(i)])
        # Skipped frames let the estimate fade, so the lane keeps trying now and then
        # instead of switching the extractor off for good.
        assert [c for c in calls if c >= 40], calls
        assert len(calls) < 80  # and hopeless frames are skipped, not all run
    finally:
        orch.close()


class _Pixels:
    """Reports the frame's first pixel, so a result shows which frame it came from."""

    name = "pixels"

    def extract(self, frame: Frame) -> Observation:
        return Observation("pixels", frame.stream_id, frame.frame_id, frame.t_src_ns,
                           signals={"pixel": float(frame.image.flat[0])})

    def close(self) -> None:
        pass


def test_a_duplicate_frame_id_with_other_pixels_gets_its_own_observations():
    cfg = Config()
    cfg.extract.extractors = ["pixels"]
    cfg.extract.deadline_ms = 0
    orch = Orchestrator(cfg, lambda _name, _cfg: _Pixels())
    try:
        first = Frame("cam0", 7, 100, np.full((4, 4, 3), 11, np.uint8))
        second = Frame("cam0", 7, 200, np.full((4, 4, 3), 22, np.uint8))  # same id, other frame
        orch.prefetch(first)
        orch.prefetch(second)
        dropped = Frame("cam0", 7, 300, np.full((4, 4, 3), 33, np.uint8))
        orch.prefetch(dropped)
        orch.discard("cam0", 7, dropped)  # the source dropped this one only
        out = [o for o in orch.run([first, second]) if isinstance(o, Observation) and o.source == "pixels"]
        assert [(o.t_ns, o.signals["pixel"]) for o in out] == [(100, 11.0), (200, 22.0)]
        assert orch._prefetched == {}  # nothing left behind
        # Without prefetching, the same frames still get their own results.
        out = [o for o in orch.run([second, first]) if isinstance(o, Observation) and o.source == "pixels"]
        assert [o.signals["pixel"] for o in out] == [22.0, 11.0]
    finally:
        orch.close()
