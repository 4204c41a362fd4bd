"""The cascade (`extract.cascade`): pose and hands wait for the frame's face result and
run only when a face was found. What it saves and what it can change in what fires."""

from __future__ import annotations

import json
import math
from typing import Dict, List, Tuple

import numpy as np
import pytest
from bytewax.testing import TestingSource, run_main

from dataflows.facemoment import build_observation_flow
from facemoment.core.config import Config, load_config
from facemoment.core.config.rates import extractor_rates
from facemoment.core.records import FrameSkip, as_dict
from facemoment.core.types import Face, Frame, FramePresence, Observation
from operators.extraction.orchestrator import SKIPPED_NO_FACE, Orchestrator, found_nobody

from test_rates import LEAN, thinned
from test_scenarios import FPS, SCENARIOS, face, hand, script, still_pose


class _Fake:
    """Face finds someone on even frames and fails on frame 3; the others count calls."""

    def __init__(self, name: str, calls: List[int]):
        self.name, self.calls = name, calls

    def extract(self, frame: Frame) -> Observation:
        self.calls.append(frame.frame_id)
        if self.name == "face" and frame.frame_id == 3:
            raise RuntimeError("bad frame")
        faces = [Face(0, 0.9, (0.4, 0.3, 0.2, 0.2))] if self.name == "face" and frame.frame_id % 2 == 0 else []
        return Observation(self.name, frame.stream_id, frame.frame_id, frame.t_src_ns, faces=faces)

    def close(self) -> None:
        pass


def _run(cascade: bool) -> Tuple[Dict[str, List[int]], List[object]]:
    calls: Dict[str, List[int]] = {"face": [], "pose": [], "gesture": [], "quality": []}
    cfg = Config()
    cfg.extract.cascade = cascade
    cfg.extract.deadline_ms = 0.0
    orch = Orchestrator(cfg, lambda name, _cfg: _Fake(name, calls[name]))
    try:
        out = orch.run([Frame("cam0", i, i * 33_333_333, np.zeros((4, 4, 3), np.uint8)) for i in range(6)])
    finally:
        orch.close()
    return {k: sorted(v) for k, v in calls.items()}, out


def test_pose_and_hands_run_only_where_face_found_someone_or_could_not_tell():
    calls, out = _run(cascade=True)
    # Frames 0, 2, 4 have a face; frame 3's face result failed, which is not "nobody".
    assert calls["pose"] == calls["gesture"] == [0, 2, 3, 4]
    assert calls["face"] == calls["quality"] == [0, 1, 2, 3, 4, 5]
    skipped = sorted((o.source, o.frame_id) for o in out if isinstance(o, Observation) and SKIPPED_NO_FACE in o.signals)
    assert skipped == [("gesture", 1), ("gesture", 5), ("pose", 1), ("pose", 5)]
    assert all(not o.poses and not o.hands for o in out if isinstance(o, Observation) and SKIPPED_NO_FACE in o.signals)
    records = sorted((r.source, r.frame_id, r.reason) for r in out if isinstance(r, FrameSkip))
    assert records == [("gesture", 1, "no_face"), ("gesture", 5, "no_face"), ("pose", 1, "no_face"), ("pose", 5, "no_face")]


def test_without_the_cascade_every_extractor_runs_on_every_frame():
    calls, out = _run(cascade=False)
    assert calls["pose"] == calls["gesture"] == [0, 1, 2, 3, 4, 5]
    assert not [r for r in out if isinstance(r, FrameSkip)]


def test_the_cascade_is_a_setting_off_by_default():
    assert load_config(env={}).extract.cascade is False
    assert load_config(env={"FACEMOMENT__EXTRACT__CASCADE": "true"}).extract.cascade is True


# --- what fires -------------------------------------------------------------------

def cascaded(observations: List[Observation]) -> List[Observation]:
    """What the orchestrator hands on with the cascade: empty pose and hands where face found nobody."""
    nobody = {o.frame_id for o in observations if o.source == "face" and found_nobody(o)}
    out = []
    for o in observations:
        if o.source in ("pose", "gesture") and o.frame_id in nobody:
            o = Observation(o.source, o.stream_id, o.frame_id, o.t_ns, signals={SKIPPED_NO_FACE: 1.0})
        out.append(o)
    return out


def _triggers(observations: List[Observation], tmp_path, every: List[str] = ()) -> List[Tuple[str, int, int]]:
    cfg = Config()
    cfg.extract.every = list(every)
    cfg.output.output_dir = str(tmp_path)
    cfg.output.trig_address = None
    run_main(build_observation_flow(cfg, TestingSource(observations, batch_size=15)))
    path = tmp_path / "triggers.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [(r["reason"], r["t_start_ns"], r["t_end_ns"]) for r in rows]


def test_every_scenario_fires_the_same_with_the_cascade(tmp_path):
    for n, reason in enumerate(sorted(SCENARIOS)):
        observations = script(**SCENARIOS[reason])
        assert _triggers(cascaded(observations), tmp_path / f"c{n}") == _triggers(observations, tmp_path / f"f{n}")


def rider_corpus() -> List[Observation]:
    """20 s of a rider who is not always found: what the cascade can and cannot change.

    - 0-3 s: no face; the rider waves and shows a V-sign (the gate is closed);
    - 3-5 s: face found, the wave goes on (fires once the gate has opened);
    - 8 s: a thumbs-up with the face in view;
    - 12 s: the face is lost for 6 frames (under the gate's 0.3 s close delay) while
      an open palm is shown only then;
    - 16 s: the face leaves for good, an OK sign follows without a face.
    """
    out: List[Observation] = []

    def waving(s: float) -> bool:
        return s < 5.0

    for i in range(20 * FPS):
        t, s = 1_795_600_000_000_000_000 + i * (1_000_000_000 // FPS), i / FPS
        found = 3.0 <= s < 16.0 and not 360 <= i < 366
        wrist = 0.3 + 0.08 * math.sin(2 * math.pi * 3.0 * s) if waving(s) else 0.3
        hands = []
        if s < 2.0:
            hands = [hand("v_sign")]
        elif 240 <= i < 252:
            hands = [hand("thumbs_up")]
        elif 361 <= i < 365:
            hands = [hand("open_palm")]
        elif 17.0 <= s < 17.5:
            hands = [hand("ok_sign")]
        out.append(FramePresence("cam0", i, t))
        out.append(Observation("face", "cam0", i, t, faces=[face()] if found else []))
        out.append(Observation("quality", "cam0", i, t, signals={"quality_gate": 1.0}))
        out.append(Observation("pose", "cam0", i, t, poses=[still_pose(wrist)]))
        out.append(Observation("gesture", "cam0", i, t, hands=hands))
    return out


@pytest.mark.parametrize("every", [[], LEAN], ids=["every_frame", "lean"])
def test_the_cascade_on_a_rider_who_is_not_always_found_keeps_what_a_face_is_needed_for(every, tmp_path):
    observations = rider_corpus()
    nobody = {o.frame_id for o in observations if o.source == "face" and not o.faces}
    rates = extractor_rates(load_config(env={"FACEMOMENT__EXTRACT__EVERY": ",".join(every)}).extract)
    # Against the same rates without the cascade (tests/test_rates.py counts what rates change).
    full = _triggers(thinned(observations, rates), tmp_path / "full", every)
    fast = _triggers(cascaded(thinned(observations, rates)), tmp_path / "fast", every)
    # Nothing fires without the gate: the V-sign before the face and the OK sign after it.
    assert [t[0] for t in full] == ["hand_wave", "gesture_thumbsup", "gesture_openpalm"]
    # Pose and hands skip the 216 frames (36%) without a face.
    assert len(nobody) == 216
    # The wave that began before the face was found fires identically (the gate opens
    # 0.7 s after the face, longer than the wave history's 15 samples), and so does the
    # thumbs-up. The difference by design: a gesture shown only while the face is lost
    # inside the gate's close delay fires at full fidelity and not with the cascade.
    assert fast == full[:2]


def test_the_run_summary_counts_the_frames_the_cascade_skipped(tmp_path):
    from facemoment.runtime.summary import summarize

    records = [FrameSkip("cam0", i, source, "no_face") for i in (1, 5) for source in ("pose", "gesture")]
    records.append(FrameSkip("cam0", 7, "pose", "no_face"))
    trace = tmp_path / "trace.jsonl"
    trace.write_text("".join(json.dumps(as_dict(r)) + "\n" for r in records))
    assert "frames the cascade skipped (face found nobody): pose 3, gesture 2" in summarize(tmp_path, trace)
