"""Declared extractor rates: an extractor runs on every Nth frame (by frame id) and
fusion carries its last result over the frames between; what fires stays the same."""

from __future__ import annotations

import json
from typing import Dict, List, Tuple

import numpy as np
import pytest
from bytewax.testing import TestingSource, run_main

from dataflows.facemoment import build_observation_flow
from facemoment.core.records import FrameDrop
from facemoment.core.config import Config, ConfigError, load_config
from facemoment.core.config.rates import Rate, extractor_rates, is_due
from facemoment.core.records import FrameCarry, as_dict
from facemoment.core.types import Extracted, Frame, FrameObservations, FramePresence, Observation
from operators.align import FrameGrouper
from operators.extraction.orchestrator import Orchestrator
from operators.fusion_step import Fuser

from test_scenarios import SCENARIOS, script


def test_rates_come_from_name_equals_n_entries_and_bad_ones_are_refused():
    cfg = load_config(env={"FACEMOMENT__EXTRACT__EVERY": "pose=2, gesture=1"})
    assert extractor_rates(cfg.extract) == {"pose": Rate(2)}
    assert extractor_rates(load_config(env={"FACEMOMENT__EXTRACT__EVERY": "gesture=3@2"}).extract) == {"gesture": Rate(3, 2)}
    for bad in ("pose", "pose=0", "pose=two", "mouth=2", "pose=2@2", "pose=2@-1", "pose=2@x"):
        with pytest.raises(ConfigError, match="extract.every"):
            load_config(env={"FACEMOMENT__EXTRACT__EVERY": bad})
    # The batch preset is full fidelity: every extractor on every frame.
    assert extractor_rates(load_config(presets=["batch"]).extract) == {}
    # lean: pose on even frames, hands on odd ones.
    assert extractor_rates(load_config(presets=["realtime", "lean"]).extract) == {"pose": Rate(2, 0), "gesture": Rate(2, 1)}
    assert extractor_rates(load_config(presets=["lean", "batch"]).extract) == {}


def test_due_frames_depend_on_the_frame_id_alone():
    assert [i for i in range(7) if is_due(i, Rate(3))] == [0, 3, 6]
    assert [i for i in range(7) if is_due(i, Rate(3, 1))] == [1, 4]
    assert all(is_due(i, Rate(1)) and is_due(i, None) for i in range(5))


class _Counting:
    def __init__(self, name: str, calls: List[int]):
        self.name, self.calls = name, calls

    def extract(self, frame: Frame) -> Observation:
        self.calls.append(frame.frame_id)
        return Observation(self.name, frame.stream_id, frame.frame_id, frame.t_src_ns)

    def close(self) -> None:
        pass


def test_the_orchestrator_runs_a_rated_extractor_on_its_frames_only_and_reports_no_timeout():
    calls: Dict[str, List[int]] = {"face": [], "pose": [], "gesture": []}
    cfg = Config()
    cfg.extract.extractors = ["face", "pose", "gesture"]
    cfg.extract.every = ["pose=2", "gesture=2@1"]
    cfg.extract.deadline_ms = 0.0
    orch = Orchestrator(cfg, lambda name, _cfg: _Counting(name, calls[name]))
    try:
        frames = [Frame("cam0", i, i * 33_333_333, np.zeros((4, 4, 3), np.uint8)) for i in range(6)]
        out = orch.run(frames)
    finally:
        orch.close()
    # Staggered: pose on even frames, hands on odd ones, never both on one frame.
    assert calls == {"face": [0, 1, 2, 3, 4, 5], "pose": [0, 2, 4], "gesture": [1, 3, 5]}
    pose = [o.frame_id for o in out if isinstance(o, Observation) and o.source == "pose"]
    assert pose == [0, 2, 4]
    assert not [r for r in out if isinstance(r, FrameDrop)]


def _extracted(source: str, frame_id: int, t_ns: int) -> Extracted:
    return FramePresence("cam0", frame_id, t_ns) if source == "frame" else Observation(source, "cam0", frame_id, t_ns)


def test_the_grouper_expects_a_rated_extractor_only_on_its_frames():
    grouper = FrameGrouper(["face", "pose"], 100.0, rates={"pose": Rate(2)})
    items = [_extracted(src, i, i * 33_333_333) for i in (0, 1) for src in ("frame", "face")]
    items.append(Observation("pose", "cam0", 0, 0))
    out = [fo for fo in grouper((0, items)) if isinstance(fo, FrameObservations)]
    assert [(fo.frame_id, fo.missing, fo.not_due) for fo in out] == [(0, (), ()), (1, (), ("pose",))]
    # On a due frame a missing result is missing, as without rates.
    only_face = [FramePresence("cam0", 2, 66_666_666), Observation("face", "cam0", 2, 66_666_666)]
    (fo,) = [fo for fo in grouper((0, only_face)) if isinstance(fo, FrameObservations)]
    assert fo.missing == ("pose",) and fo.not_due == ()


def _fo(frame_id: int, sources: Tuple[str, ...], not_due: Tuple[str, ...] = ()) -> FrameObservations:
    t = frame_id * 33_333_333
    return FrameObservations(
        "cam0", frame_id, t, {s: Observation(s, "cam0", frame_id, t, signals={"from": float(frame_id)}) for s in sources},
        not_due=not_due,
    )


def test_fusion_carries_the_last_result_within_the_rate_and_says_so():
    cfg = Config()
    cfg.extract.every = ["pose=3"]
    fuser = Fuser(cfg)
    state = None
    frames = [
        _fo(0, ("face", "pose")),
        _fo(1, ("face",), ("pose",)),
        _fo(2, ("face",), ("pose",)),
        _fo(3, ("face",)),  # due, but its pose result is missing (e.g. a timeout)
        _fo(4, ("face",), ("pose",)),
    ]
    carries = []
    for fo in frames:
        state, out = fuser(state, fo)
        carries += [as_dict(r) for r in out if isinstance(r, FrameCarry)]
    pose_from = [fo.observations["pose"].signals["from"] if "pose" in fo.observations else None for fo in frames]
    # Frame 4's carry would be 4 frames old, beyond the rate of 3: pose is missing there.
    assert pose_from == [0.0, 0.0, 0.0, None, None]
    assert [fo.observations["pose"].frame_id for fo in frames if "pose" in fo.observations] == [0, 1, 2]
    assert frames[4].missing == ("pose",) and frames[3].missing == ()
    assert [(c["frame_id"], c["source"], c["from_frame_id"], c["every"]) for c in carries] == [
        (1, "pose", 0, 3),
        (2, "pose", 0, 3),
        (4, "pose", None, 3),
    ]


# --- what fires: full fidelity against declared rates ----------------------------

def _triggers(observations: List[Observation], tmp_path, every: List[str]) -> List[Tuple[str, int, int]]:
    cfg = Config()
    cfg.output.output_dir = str(tmp_path)
    cfg.output.trig_address = None
    cfg.extract.every = list(every)
    run_main(build_observation_flow(cfg, TestingSource(observations, batch_size=15)))
    path = tmp_path / "triggers.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [(r["reason"], r["t_start_ns"], r["t_end_ns"]) for r in rows]


def thinned(observations: List[Observation], rates: Dict[str, Rate]) -> List[Observation]:
    """What the orchestrator hands on with these rates: rated extractors on their frames only."""
    return [o for o in observations if is_due(o.frame_id, rates.get(o.source))]


@pytest.mark.parametrize("reason", sorted(SCENARIOS))
def test_pose_every_second_frame_fires_the_same_triggers_on_every_scenario(reason, tmp_path):
    observations = script(**SCENARIOS[reason])
    full = _triggers(observations, tmp_path / "full", [])
    fast = _triggers(thinned(observations, {"pose": Rate(2)}), tmp_path / "fast", ["pose=2"])
    assert full and [t[0] for t in full] == [reason]
    assert fast == full


# Where declared rates can change what fires, by design: a wave or a gesture is seen
# only on the frames its extractor runs on, so its trigger can start a frame or two
# later. These sweeps count that; the settings' defaults keep every frame.

def _wave(start: int, hz: float, amp: float):
    import math

    from test_scenarios import FPS, face, still_pose

    s0 = start / FPS
    return dict(
        faces=lambda i, s: [face()],
        pose=lambda i, s: still_pose(0.3 + (amp * math.sin(2 * math.pi * hz * (s - s0)) if s0 <= s < s0 + 1.0 else 0.0)),
    )


def _gesture(start: int, length: int):
    from test_scenarios import face, hand

    return dict(faces=lambda i, s: [face()], hands=lambda i, s: [hand("v_sign")] if start <= i < start + length else [])


def _shift_frames(full, fast) -> List[int]:
    assert [t[0] for t in fast] == [t[0] for t in full]  # the same moments, in the same order
    return [round((b[1] - a[1]) / 33_333_333) for a, b in zip(full, fast)]


def test_waves_sampled_every_second_frame_fire_the_same_waves_at_most_three_frames_later(tmp_path):
    shifts = []
    for n, (start, hz) in enumerate((s, hz) for s in (120, 121, 122, 123) for hz in (3.0, 4.0)):
        observations = script(**_wave(start, hz, 0.1))
        full = _triggers(observations, tmp_path / f"full{n}", [])
        fast = _triggers(thinned(observations, {"pose": Rate(2)}), tmp_path / f"fast{n}", ["pose=2"])
        assert len(full) == 1
        shifts += _shift_frames(full, fast)
    assert all(0 <= s <= 3 for s in shifts), shifts
    assert 0 in shifts and max(shifts) > 0  # some identical, some later: the difference is real


def test_gestures_sampled_every_second_frame_can_fire_on_a_single_frame_gesture(tmp_path):
    observations = script(**_gesture(120, 1))  # one frame: never two consecutive
    assert _triggers(observations, tmp_path / "full", []) == []
    fast = _triggers(thinned(observations, {"gesture": Rate(2)}), tmp_path / "fast", ["gesture=2"])
    assert [t[0] for t in fast] == ["gesture_vsign"]  # carried to frame 121: it fires
    held = script(**_gesture(121, 10))  # starts on a frame gesture does not run on
    full = _triggers(held, tmp_path / "full2", [])
    fast = _triggers(thinned(held, {"gesture": Rate(2)}), tmp_path / "fast2", ["gesture=2"])
    assert _shift_frames(full, fast) == [1]


def test_the_run_summary_counts_carried_and_uncarried_frames(tmp_path):
    from facemoment.runtime.summary import summarize

    records = [
        {"record_type": "frame_carry", "stream": "cam0", "frame_id": 1, "source": "pose", "from_frame_id": 0, "every": 2},
        {"record_type": "frame_carry", "stream": "cam0", "frame_id": 3, "source": "pose", "from_frame_id": 2, "every": 2},
        {"record_type": "frame_carry", "stream": "cam0", "frame_id": 5, "source": "pose", "from_frame_id": None, "every": 2},
        {"record_type": "frame_carry", "stream": "cam0", "frame_id": 5, "source": "gesture", "from_frame_id": 4, "every": 2},
    ]
    trace = tmp_path / "trace.jsonl"
    trace.write_text("".join(json.dumps(r) + "\n" for r in records))
    text = summarize(tmp_path, trace)
    assert "frames an extractor skipped for its declared rate: pose 2 carried, 1 with nothing to carry, gesture 1 carried" in text


# --- a generated corpus: waves, raised hands and each gesture in one stream -------

def corpus() -> List[Observation]:
    """20 s of one rider: a wave, a raised hand, then each gesture, 2.5 s apart (past
    the cooldown), starting on even and odd frames alike."""
    import math

    from test_scenarios import FPS, face, hand, still_pose

    gestures = {frame: name for frame, name in zip((241, 316, 391, 466, 541), ("v_sign", "thumbs_up", "ok_sign", "open_palm", "v_sign"))}

    def pose(i: int, s: float):
        if 121 <= i < 151:  # a 3 Hz wave for 1 s
            return still_pose(0.3 + 0.08 * math.sin(2 * math.pi * 3.0 * (s - 121 / FPS)))
        if 181 <= i < 211:  # the left wrist raised above its shoulder, held still
            raised = still_pose()
            raised.keypoints[9] = (0.3, 0.4, 0.9)
            raised.hand_raised = True
            return raised
        return still_pose()

    def hands(i: int, _s: float):
        for start, name in gestures.items():
            if start <= i < start + 12 + (start % 3):
                return [hand(name)]
        return []

    out: List[Observation] = []
    for i in range(20 * FPS):
        t, s = 1_795_600_000_000_000_000 + i * (1_000_000_000 // FPS), i / FPS
        out.append(FramePresence("cam0", i, t))
        out.append(Observation("face", "cam0", i, t, faces=[face()]))
        out.append(Observation("quality", "cam0", i, t, signals={"quality_gate": 1.0}))
        out.append(Observation("pose", "cam0", i, t, poses=[pose(i, s)]))
        out.append(Observation("gesture", "cam0", i, t, hands=hands(i, s)))
    return out


LEAN = load_config(presets=["lean"]).extract.every


@pytest.mark.parametrize("every", [["pose=2"], ["pose=2", "gesture=2"], LEAN], ids=["pose2", "both_even", "lean"])
def test_the_corpus_fires_the_same_moments_with_rates_each_at_most_three_frames_later(every, tmp_path):
    observations = corpus()
    full = _triggers(observations, tmp_path / "full", [])
    rates = extractor_rates(load_config(env={"FACEMOMENT__EXTRACT__EVERY": ",".join(every)}).extract)
    fast = _triggers(thinned(observations, rates), tmp_path / "fast", every)
    assert [t[0] for t in full] == [
        "hand_wave", "gesture_vsign", "gesture_thumbsup", "gesture_ok", "gesture_openpalm", "gesture_vsign",
    ]
    shifts = _shift_frames(full, fast)
    assert all(0 <= s <= 3 for s in shifts), shifts
    if every == ["pose=2"]:
        assert shifts[1:] == [0] * 5  # gestures untouched when only pose is rated
