"""Fusion rules (moments.md "Fusion, per frame in event-time order"), driven by scripted frames at 30 fps."""

from __future__ import annotations

import copy
import json
import math
import pickle
import random
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import pytest

from facemoment.core.config import FusionConfig, load_config
from facemoment.core.records import Record
from facemoment.core.types import Face, FrameObservations, Hand, Observation, Pose, Trigger
from operators.fusion_rules import FusionRules
from operators.fusion_state import FusionState

FPS = 30
T0S = [0, 1_767_225_600_123_456_789]  # near 0 and a 2026 epoch time
STREAM = "cam0"
JsonRecord = Dict[str, Any]  # a trace record as trace.jsonl holds it

OPEN_FRAME = 21  # 21 frames at 30 fps = 0.7 s: the first frame on which the default gate is open

# A face that passes every gate condition and, at pitch 12, gives no camera-gaze candidate
# (gaze score 1 × (1 − 12/15) = 0.2).
QUIET = dict(yaw=0.0, pitch=12.0, expression=0.1)


def t_at(t0: int, i: int) -> int:
    return t0 + round(i * 1e9 / FPS)


def face(
    face_id: int = 0,
    x: float = 0.4,
    yaw: float = 0.0,
    pitch: float = 12.0,
    expression: float = 0.1,
    confidence: float = 0.95,
    inside_frame: bool = True,
    area_ratio: float = 0.05,
    center_distance: float = 0.1,
) -> Face:
    return Face(
        face_id=face_id,
        confidence=confidence,
        bbox=(x, 0.3, 0.2, 0.25),
        yaw=yaw,
        pitch=pitch,
        expression=expression,
        inside_frame=inside_frame,
        area_ratio=area_ratio,
        center_distance=center_distance,
    )


def pose_with_wrist(x: float, person_id: int = 0, conf: float = 0.9) -> Pose:
    keypoints = [(0.5, 0.5, 0.9)] * 17
    keypoints[10] = (x, 0.3, conf)
    return Pose(person_id=person_id, confidence=0.9, keypoints=keypoints)


def hand(gesture: str, confidence: float = 0.9) -> Hand:
    return Hand(
        hand_id=0, confidence=0.95, handedness="Right", landmarks=[], gesture=gesture, gesture_confidence=confidence
    )


_DEFAULT = object()


def frame(
    t0: int,
    i: int,
    faces: Any = _DEFAULT,
    quality: Optional[bool] = True,
    poses: Optional[List[Pose]] = None,
    hands: Optional[List[Hand]] = None,
    stream: str = STREAM,
    blind: Tuple[str, ...] = (),
) -> FrameObservations:
    """One frame; faces=None or quality=None leave that observation out (listed as missing);
    `blind` lists further extractors whose result is missing (a deadline, say)."""
    t_ns = t_at(t0, i)
    obs: Dict[str, Observation] = {}
    missing: List[str] = []

    def add(source: str, **kw: Any) -> None:
        obs[source] = Observation(source=source, stream_id=stream, frame_id=i, t_ns=t_ns, **kw)

    if faces is _DEFAULT:
        faces = [face(**QUIET)]
    if faces is None:
        missing.append("face")
    else:
        add("face", faces=list(faces))
    if quality is None:
        missing.append("quality")
    else:
        add("quality", signals={"quality_gate": 1.0 if quality else 0.0})
    if poses is not None:
        add("pose", poses=poses)
    if hands is not None:
        add("gesture", hands=hands)
    missing.extend(blind)
    return FrameObservations(stream_id=stream, frame_id=i, t_ns=t_ns, observations=obs, missing=tuple(missing))


def process(rules: FusionRules, state: FusionState, fo: FrameObservations) -> Tuple[Optional[Trigger], List[JsonRecord]]:
    """One frame through the rules; records as the JSON objects trace.jsonl gets."""
    trig, records = rules.process(state, fo)
    assert all(isinstance(r, Record) for r in records)
    return trig, [r.to_dict() for r in records]


class Run:
    """Feeds frames to one FusionState and keeps what came out, per frame index."""

    def __init__(self, cfg: Optional[FusionConfig] = None, t0: int = 0, level: str = "normal"):
        self.cfg = cfg or FusionConfig()
        self.rules = FusionRules(self.cfg, level)
        self.state = FusionState()
        self.t0 = t0
        self.i = 0
        self.triggers: Dict[int, Trigger] = {}
        self.records: List[JsonRecord] = []

    def step(self, **kw: Any) -> Tuple[Optional[Trigger], List[JsonRecord]]:
        trig, recs = process(self.rules, self.state, frame(self.t0, self.i, **kw))
        if trig is not None:
            self.triggers[self.i] = trig
        self.records.extend(recs)
        self.i += 1
        return trig, recs

    def steps(self, n: int, **kw: Any) -> None:
        for _ in range(n):
            self.step(**kw)

    def open_gate(self) -> None:
        """Quiet frames until the gate is open (no candidates on the way)."""
        self.steps(OPEN_FRAME + 1)
        assert self.state.gate.is_open and not self.triggers

    def t(self, i: int) -> int:
        return t_at(self.t0, i)

    def decisions(self) -> Dict[int, str]:
        return {r["frame_id"]: r["decision"] for r in self.records if r["record_type"] == "trigger_decision"}

    def of_type(self, record_type: str) -> List[JsonRecord]:
        return [r for r in self.records if r["record_type"] == record_type]


# ----------------------------------------------------------------------------- gate


@pytest.mark.parametrize("t0", T0S)
def test_gate_opens_after_open_duration_and_not_before(t0: int) -> None:
    run = Run(t0=t0)
    for i in range(OPEN_FRAME):
        run.step(faces=[face(yaw=0.0, pitch=0.0)])  # camera gaze all along
        assert not run.state.gate.is_open, f"gate open at frame {i}, before 0.7 s"
    run.step(faces=[face(yaw=0.0, pitch=0.0)])
    assert run.state.gate.is_open
    changes = run.of_type("gate_change")
    assert [(c["frame_id"], c["gate_open"], c["reason"]) for c in changes] == [(OPEN_FRAME, True, "conditions_held")]
    assert changes[0]["duration_sec"] == pytest.approx(0.7)
    decisions = run.decisions()
    assert all(decisions[i] == "blocked_gate" for i in range(OPEN_FRAME))
    assert decisions[OPEN_FRAME] == "consecutive_pending"
    run.step(faces=[face(yaw=0.0, pitch=0.0)])
    assert list(run.triggers) == [OPEN_FRAME + 1]
    assert run.triggers[OPEN_FRAME + 1].reason == "camera_gaze"


@pytest.mark.parametrize(
    "failing",
    [
        dict(faces=[]),
        dict(faces=[face(0, x=0.1), face(1, x=0.4), face(2, x=0.7)]),
        dict(faces=[face(confidence=0.6)]),
        dict(faces=[face(inside_frame=False)]),
        dict(faces=[face(yaw=26.0)]),
        dict(faces=[face(yaw=-26.0)]),
        dict(faces=[face(pitch=21.0)]),
        dict(faces=[face(area_ratio=0.009)]),
        dict(faces=[face(center_distance=0.41)]),
        dict(faces=[face(0, x=0.1), face(1, x=0.6, confidence=0.5)]),
        dict(quality=False),
    ],
    ids=[
        "no_face", "three_faces", "confidence", "outside", "yaw", "neg_yaw", "pitch", "area", "center",
        "second_face_bad", "quality",
    ],
)
def test_each_gate_condition_keeps_the_gate_closed(failing: Dict[str, Any]) -> None:
    run = Run()
    run.steps(40, **failing)
    assert not run.state.gate.is_open
    # The held time counts from the first passing frame.
    run.steps(OPEN_FRAME)
    assert not run.state.gate.is_open
    run.step()
    assert run.state.gate.is_open


def test_two_faces_within_limits_open_the_gate() -> None:
    run = Run()
    run.steps(OPEN_FRAME + 1, faces=[face(0, x=0.1), face(1, x=0.6)])
    assert run.state.gate.is_open


@pytest.mark.parametrize("t0", T0S)
def test_gate_closes_after_close_duration_and_not_before(t0: int) -> None:
    run = Run(t0=t0)
    run.open_gate()
    first_fail = run.i
    for k in range(9):  # 9 frames: the 9th is 8/30 s after the first failure
        run.step(faces=[face(yaw=40.0)])
        assert run.state.gate.is_open, f"closed after {k + 1} failing frames"
    run.step(faces=[face(yaw=40.0)])  # 9/30 s = 0.3 s after the first failure
    assert not run.state.gate.is_open
    closes = [c for c in run.of_type("gate_change") if not c["gate_open"]]
    assert [(c["frame_id"], c["reason"]) for c in closes] == [(first_fail + 9, "conditions_failed")]
    assert closes[0]["duration_sec"] == pytest.approx(0.3)


def test_brief_failure_does_not_close_the_gate() -> None:
    run = Run()
    run.open_gate()
    for _ in range(3):
        run.steps(9, faces=[])  # 8/30 s of failure
        run.step()  # one passing frame resets the failure timer
        assert run.state.gate.is_open
    assert not [c for c in run.of_type("gate_change") if not c["gate_open"]]


def test_closed_gate_blocks_and_needs_to_reopen() -> None:
    run = Run()
    run.open_gate()
    run.steps(10, faces=[face(yaw=40.0)])
    assert not run.state.gate.is_open
    # Gesture present while the gate is closed: blocked, and it must stay closed for 0.7 s.
    for _ in range(OPEN_FRAME):
        run.step(hands=[hand("v_sign")])
    assert not run.triggers
    assert {run.decisions()[i] for i in range(run.i - OPEN_FRAME, run.i)} == {"blocked_gate"}
    run.steps(2, hands=[hand("v_sign")])
    assert len(run.triggers) == 1


def test_missing_face_observation_freezes_the_gate_timers() -> None:
    run = Run()
    run.steps(15)  # held for 14/30 s
    run.steps(10, faces=None)  # unknown: no open, although 0.7 s have passed since frame 0
    assert not run.state.gate.is_open
    run.step()  # frame 25: held since frame 0, 25/30 s ≥ 0.7 s
    assert run.state.gate.is_open
    # Unknown frames while open do not close it either.
    run.steps(20, faces=None)
    assert run.state.gate.is_open


def test_missing_quality_keeps_the_last_known_state() -> None:
    run = Run()
    run.steps(5)  # quality seen open
    run.steps(30, quality=None)
    assert run.state.gate.is_open
    run.steps(10, quality=False)
    assert not run.state.gate.is_open
    run.steps(40, quality=None)  # last known: closed
    assert not run.state.gate.is_open


def test_quality_never_seen_but_expected_counts_as_failed() -> None:
    run = Run()
    run.steps(40, quality=None)
    assert not run.state.gate.is_open


def test_quality_not_expected_is_not_required() -> None:
    rules, state = FusionRules(FusionConfig()), FusionState()
    for i in range(OPEN_FRAME + 1):
        fo = frame(0, i)
        del fo.observations["quality"]  # no quality extractor: neither observed nor missing
        rules.process(state, fo)
    assert state.gate.is_open


def test_require_quality_off_ignores_quality() -> None:
    cfg = FusionConfig()
    cfg.gate.require_quality = False
    run = Run(cfg)
    run.steps(OPEN_FRAME + 1, quality=False)
    assert run.state.gate.is_open


# ------------------------------------------------------------------ cooldown & confirmation


@pytest.mark.parametrize("t0", T0S)
def test_cooldown_blocks_within_and_allows_after(t0: int) -> None:
    run = Run(t0=t0)
    gaze = [face(yaw=0.0, pitch=0.0)]
    run.steps(150, faces=gaze)
    first = OPEN_FRAME + 1
    # Cooldown ends 2.0 s (60 frames) after the firing frame; the gaze held all through
    # it is confirmed already, so it fires again on the first frame after.
    assert list(run.triggers) == [first, first + 60, first + 120]
    decisions = run.decisions()
    assert all(decisions[i] == "blocked_cooldown" for i in range(first + 1, first + 60))
    assert decisions[first + 60] == "triggered"
    assert run.triggers[first + 60].t_ns - run.triggers[first].t_ns == 2_000_000_000


def test_a_reason_that_starts_in_the_cooldown_is_confirmed_only_after_holding() -> None:
    run = Run()
    run.open_gate()
    run.steps(2, hands=[hand("v_sign")])
    (first,) = run.triggers
    run.steps(58)  # the cooldown's last frame is first + 59
    run.step(hands=[hand("thumbs_up")])  # first + 59: held 1/30 s, inside the cooldown
    trig, _ = run.step(hands=[hand("thumbs_up")])  # first + 60: cooldown over, held 2/30 s
    assert trig is not None and trig.reason == "gesture_thumbsup" and list(run.triggers) == [first, first + 60]
    run.steps(70)
    run.step(hands=[hand("v_sign")])  # past the cooldown: one frame is not enough
    assert run.decisions()[run.i - 1] == "consecutive_pending"


def test_cooldown_measured_in_event_time() -> None:
    # Frames 1 s apart: cooldown 2.0 s lets the frame exactly 2.0 s later count again.
    cfg = FusionConfig(confirm_sec=0.0)
    cfg.gate.open_duration_sec = 0.0
    rules, state = FusionRules(cfg), FusionState()
    fired = []
    for k in range(6):
        fo = frame(0, 0, faces=[face(yaw=0.0, pitch=0.0)])
        fo.frame_id, fo.t_ns = k, k * 1_000_000_000
        trig, _ = rules.process(state, fo)
        fired.append(trig is not None)
    assert fired == [True, False, True, False, True, False]


@pytest.mark.parametrize("t0", T0S)
def test_confirmation_takes_two_frames_at_30_fps(t0: int) -> None:
    run = Run(t0=t0)
    run.open_gate()
    trig, _ = run.step(hands=[hand("v_sign", 0.7)])
    assert trig is None and run.decisions()[run.i - 1] == "consecutive_pending"
    trig, _ = run.step(hands=[hand("v_sign", 0.9)])
    assert trig is not None and trig.reason == "gesture_vsign"
    assert trig.score == pytest.approx(0.9)  # max over the confirming frames


def _timed(rules: FusionRules, state: FusionState, t_s: float, **kw: Any) -> Tuple[Optional[Trigger], List[JsonRecord]]:
    """One frame at event time t_s (seconds), whatever the frame rate."""
    fo = frame(0, 0, **kw)
    fo.t_ns = round(t_s * 1e9)
    fo.frame_id = round(t_s * 1000)
    for obs in fo.observations.values():
        obs.t_ns, obs.frame_id = fo.t_ns, fo.frame_id
    return process(rules, state, fo)


@pytest.mark.parametrize(
    "times, fires_at",
    [
        ([0.0, 1 / 30, 2 / 30, 3 / 30], 2 / 30),  # 30 fps: held 0.033 s on the first frame, 0.067 s on the second
        ([0.0, 1 / 15, 2 / 15], 1 / 15),  # 15 fps: one frame holds it 0.067 s
        ([0.0, 0.1, 0.2], 0.1),  # 10 fps
        ([0.0, 0.02, 0.04, 0.07, 0.08], 0.07),  # an irregular rate: held 0.02, 0.04, then 0.07 s
    ],
)
def test_confirmation_is_a_time_held_whatever_the_frame_rate(times: List[float], fires_at: float) -> None:
    cfg = FusionConfig()
    cfg.gate.open_duration_sec = 0.0
    rules, state = FusionRules(cfg), FusionState()
    _timed(rules, state, times[0])  # the gate opens; nothing in play
    fired = [t for t in times[1:] if _timed(rules, state, t, hands=[hand("v_sign")])[0] is not None]
    assert fired == [fires_at]


def test_the_trace_reports_the_time_held_and_the_frames_it_takes() -> None:
    cfg = FusionConfig()
    cfg.gate.open_duration_sec = 0.0
    rules, state = FusionRules(cfg), FusionState()
    _timed(rules, state, 0.0)
    _, first = _timed(rules, state, 1 / 30, hands=[hand("v_sign")])
    (decision,) = [r for r in first if r["record_type"] == "trigger_decision"]
    assert decision["decision"] == "consecutive_pending"
    assert (decision["consecutive_count"], decision["consecutive_required"]) == (1, 2)
    assert decision["held_sec"] == pytest.approx(1 / 30, abs=1e-6) and decision["confirm_sec"] == 0.05
    rules, state = FusionRules(cfg), FusionState()
    _timed(rules, state, 0.0)
    _, slow = _timed(rules, state, 0.1, hands=[hand("v_sign")])  # 10 fps: one frame is enough
    (decision,) = [r for r in slow if r["record_type"] == "trigger_decision"]
    assert decision["decision"] == "triggered" and decision["consecutive_required"] == 1


def test_reason_change_restarts_the_count() -> None:
    run = Run()
    run.open_gate()
    run.step(hands=[hand("v_sign")])
    run.step(hands=[hand("thumbs_up")])
    assert not run.triggers
    decision = [r for r in run.of_type("trigger_decision") if r["frame_id"] == run.i - 1][0]
    assert decision["consecutive_count"] == 1 and decision["consecutive_required"] == 2
    run.step(hands=[hand("thumbs_up")])
    assert [t.reason for t in run.triggers.values()] == ["gesture_thumbsup"]


def test_no_candidate_restarts_the_count() -> None:
    run = Run()
    run.open_gate()
    run.step(hands=[hand("v_sign")])
    run.step()
    run.step(hands=[hand("v_sign")])
    assert not run.triggers
    run.step(hands=[hand("v_sign")])
    assert len(run.triggers) == 1


def test_highest_score_wins_the_frame() -> None:
    run = Run()
    run.open_gate()
    for _ in range(2):
        run.step(hands=[hand("v_sign", 0.6), hand("thumbs_up", 0.95)])
    (trig,) = run.triggers.values()
    assert trig.reason == "gesture_thumbsup" and trig.score == pytest.approx(0.95)
    decision = run.of_type("trigger_decision")[-1]
    assert decision["candidates"] == [
        {"reason": "gesture_thumbsup", "score": pytest.approx(0.95)},
        {"reason": "gesture_vsign", "score": pytest.approx(0.6)},
    ]


def test_reasons_not_configured_are_ignored() -> None:
    cfg = FusionConfig(reasons=["gesture_thumbsup"])
    run = Run(cfg)
    run.open_gate()
    run.steps(5, faces=[face(yaw=0.0, pitch=0.0)], hands=[hand("v_sign")])
    assert not run.triggers
    run.steps(2, hands=[hand("thumbs_up")])
    assert [t.reason for t in run.triggers.values()] == ["gesture_thumbsup"]


# ------------------------------------------------------------------------ expression


def reference_z_scores(
    xs: Sequence[float], tau: float = 0.3164, init_var: float = 0.01, min_std: float = 0.05, fps: float = FPS
):
    """z of each sample against the history before it, and the mean after it (None for the first)."""
    zs: List[Optional[float]] = []
    means: List[float] = []
    mean = var = 0.0
    for k, x in enumerate(xs):
        if k == 0:
            mean, var = x, init_var
            zs.append(None)
        else:
            dt = (round(k * 1e9 / fps) - round((k - 1) * 1e9 / fps)) / 1e9
            alpha = 1 - math.exp(-dt / tau)
            std = max(min_std, var ** 0.5)
            zs.append((x - mean) / std)
            new_mean = (1 - alpha) * mean + alpha * x
            var = (1 - alpha) * (var + alpha * (x - mean) ** 2)
            mean = new_mean
        means.append(mean)
    return zs, means


def test_ewma_and_spike_scores_match_an_independent_computation() -> None:
    rng = random.Random(7)
    xs = [0.1 + 0.05 * rng.random() for _ in range(60)]
    xs += [0.8, 0.85, 0.3, 0.2] + [0.15 + 0.3 * rng.random() for _ in range(40)] + [0.95, 0.9, 0.6]
    zs, means = reference_z_scores(xs)
    run = Run(level="verbose")
    for x in xs:
        run.step(faces=[face(expression=x)])
    decisions = run.of_type("trigger_decision")
    assert len(decisions) == len(xs)
    spikes = 0
    for k, rec in enumerate(decisions):
        assert rec["ewma_values"]["0"] == pytest.approx(means[k], rel=1e-12)
        got = {c["reason"]: c["score"] for c in rec["candidates"]}
        z = zs[k]
        if z is not None and z > 2.0 and xs[k] > 0.5:
            spikes += 1
            assert got["expression_spike"] == pytest.approx(min(1.0, z / 4.0))
        else:
            assert "expression_spike" not in got
    assert spikes >= 3  # the script really contains spikes


def test_z_uses_the_history_before_the_sample() -> None:
    # After a flat baseline, the std floor applies: z = (0.9 − 0.1) / 0.05 = 16 → score 1.
    # Against the mean after the update (0.18) and its std (≈0.24) it would be ≈3.
    run = Run(level="verbose")
    run.steps(60)
    run.step(faces=[face(expression=0.9)])
    first = run.of_type("trigger_decision")[-1]
    assert {c["reason"]: c["score"] for c in first["candidates"]} == {"expression_spike": 1.0}
    zs, _ = reference_z_scores([0.1] * 60 + [0.9, 0.9])
    run.step(faces=[face(expression=0.9)])
    assert run.triggers[61].score == 1.0
    # τ = 0.3164 s weighs a sample 1/30 s after the last by α = 0.1 (to 1e-5).
    assert zs[61] == pytest.approx((0.9 - 0.18) / math.sqrt(0.9 * (0.01 * 0.9**59 + 0.1 * 0.64)), rel=1e-4)


@pytest.mark.parametrize("t0", T0S)
def test_sudden_smile_fires_expression_spike(t0: int) -> None:
    run = Run(t0=t0)
    run.steps(60)
    smile_at = run.i
    run.steps(3, faces=[face(expression=0.9)])
    assert list(run.triggers) == [smile_at + 1]
    trig = run.triggers[smile_at + 1]
    assert trig.reason == "expression_spike"
    assert trig.event_t_ns == run.t(smile_at)
    assert trig.face_count == 1 and trig.stream_id == STREAM and trig.label == "highlight"
    assert (trig.pre_sec, trig.post_sec) == (2.0, 2.0)


def test_slowly_rising_expression_does_not_spike() -> None:
    run = Run(level="verbose")
    run.steps(60)
    for k in range(90):  # 0.1 → 0.9 over 3 s
        run.step(faces=[face(expression=0.1 + 0.8 * (k + 1) / 90)])
    run.steps(30, faces=[face(expression=0.9)])
    assert not run.triggers
    assert not any(
        c["reason"] == "expression_spike" for r in run.of_type("trigger_decision") for c in r["candidates"]
    )


def test_low_expression_jump_is_not_a_spike() -> None:
    # z is huge, but the expression stays below spike_min_expression (0.5).
    run = Run()
    run.steps(60, faces=[face(expression=0.0)])
    run.steps(3, faces=[face(expression=0.45)])
    assert not run.triggers


@pytest.mark.parametrize("x", [0.9, 0.1])
def test_the_ewma_moves_alike_at_30_and_15_fps(x: float) -> None:
    """Two samples 1/30 s apart weigh as much as one sample 1/15 s later (α from the time constant)."""
    rules30, rules15 = FusionRules(FusionConfig(), "verbose"), FusionRules(FusionConfig(), "verbose")
    fast, slow = FusionState(), FusionState()
    _timed(rules30, fast, 0.0, faces=[face(expression=0.4)])
    _timed(rules15, slow, 0.0, faces=[face(expression=0.4)])
    _timed(rules30, fast, 1 / 30, faces=[face(expression=x)])
    _timed(rules30, fast, 2 / 30, faces=[face(expression=x)])
    _timed(rules15, slow, 2 / 30, faces=[face(expression=x)])
    assert fast.expression[0].ewma == pytest.approx(slow.expression[0].ewma, rel=1e-9)
    # And by the seed's α = 0.1 per 30 fps frame: 0.4 + (x − 0.4)(1 − 0.9²).
    assert fast.expression[0].ewma == pytest.approx(0.4 + (x - 0.4) * (1 - 0.9**2), rel=1e-4)


def test_ewma_updates_while_the_gate_is_closed() -> None:
    run = Run(level="verbose")
    run.steps(10, faces=[face(yaw=40.0, expression=0.3)])
    assert not run.state.gate.is_open
    assert run.of_type("trigger_decision")[-1]["ewma_values"]["0"] == pytest.approx(0.3)


def test_expression_state_is_kept_per_face() -> None:
    run = Run()
    two = lambda e0, e1: [face(0, x=0.1, expression=e0), face(1, x=0.6, expression=e1)]  # noqa: E731
    run.steps(60, faces=two(0.1, 0.1))
    run.steps(2, faces=two(0.1, 0.9))
    (trig,) = run.triggers.values()
    assert trig.reason == "expression_spike" and trig.face_count == 2
    assert run.state.expression[0].ewma == pytest.approx(0.1)
    assert run.state.expression[1].ewma > 0.1


# ------------------------------------------------------------------------ head turn


def turn(run: Run, start: float, deg_per_frame: float, frames: int) -> None:
    for k in range(frames):
        run.step(faces=[face(yaw=start + deg_per_frame * (k + 1), pitch=12.0)])


@pytest.mark.parametrize("t0", T0S)
def test_head_turn_fires_above_threshold(t0: int) -> None:
    run = Run(t0=t0)
    run.steps(OPEN_FRAME + 1, faces=[face(yaw=-20.0)])
    start = run.i
    turn(run, -20.0, 1.5, 4)  # 45 °/s
    assert list(run.triggers) == [start + 1]
    trig = run.triggers[start + 1]
    assert trig.reason == "head_turn"
    assert trig.score == pytest.approx(45.0 / 60.0)
    # head_turn: event start three observations back from the firing frame.
    assert trig.event_t_ns == run.t(start + 1 - 3)


def test_head_turn_not_below_threshold() -> None:
    run = Run(level="verbose")
    run.steps(OPEN_FRAME + 1, faces=[face(yaw=-20.0)])
    turn(run, -20.0, 0.8, 40)  # 24 °/s
    assert not run.triggers
    assert not any(c["reason"] == "head_turn" for r in run.of_type("trigger_decision") for c in r["candidates"])


def test_head_turn_score_saturates() -> None:
    run = Run()
    run.steps(OPEN_FRAME + 1, faces=[face(yaw=-20.0)])
    turn(run, -20.0, 4.0, 2)  # 120 °/s
    (trig,) = run.triggers.values()
    assert trig.score == 1.0


@pytest.mark.parametrize("gap_frames,expect_turn", [(18, False), (12, True)])
def test_head_turn_not_across_a_long_gap(gap_frames: int, expect_turn: bool) -> None:
    # The face vanishes for a while and comes back turned by 40°: over 19 frames (0.63 s)
    # that is not a head turn; over 13 frames (0.43 s) it is (≈92 °/s).
    run = Run(level="verbose")
    run.steps(OPEN_FRAME + 1, faces=[face(yaw=-20.0)])
    run.steps(gap_frames, faces=None)
    run.step(faces=[face(yaw=20.0)])
    last = run.of_type("trigger_decision")[-1]
    assert ("head_turn" in {c["reason"] for c in last["candidates"]}) == expect_turn


# ------------------------------------------------------------- gaze, passenger, gestures


@pytest.mark.parametrize(
    "yaw,pitch,score",
    [(3.0, -3.0, 0.7 * 0.8), (0.0, 0.0, 1.0), (6.0, 3.0, None), (0.0, 8.0, None)],
    ids=["near", "straight", "yaw_too_far", "pitch_too_far"],
)
def test_camera_gaze(yaw: float, pitch: float, score: Optional[float]) -> None:
    # The face holds still from the start, so no head turn competes.
    run = Run()
    run.steps(OPEN_FRAME + 2, faces=[face(yaw=yaw, pitch=pitch)])
    if score is None:  # 0.4 × 0.8 = 0.32 and 1 × (1 − 8/15) ≈ 0.47: below 0.5
        assert not run.triggers
    else:
        assert [(t.reason, t.score) for t in run.triggers.values()] == [("camera_gaze", pytest.approx(score))]


def test_camera_gaze_takes_the_best_face() -> None:
    run = Run()
    run.steps(OPEN_FRAME + 2, faces=[face(0, x=0.1, yaw=8.0, pitch=0.0), face(1, x=0.6, yaw=1.0, pitch=0.0)])
    (trig,) = run.triggers.values()
    assert trig.reason == "camera_gaze" and trig.score == pytest.approx(0.9)


@pytest.mark.parametrize("listed_right_first", [False, True])
def test_passenger_interaction(listed_right_first: bool) -> None:
    left = face(0, x=0.1, yaw=20.0)
    right = face(1, x=0.6, yaw=-22.0)
    faces = [right, left] if listed_right_first else [left, right]
    run = Run()
    run.steps(OPEN_FRAME + 2, faces=faces)
    (trig,) = run.triggers.values()
    assert trig.reason == "passenger_interaction"
    assert trig.score == pytest.approx((20 / 45 + 22 / 45) / 2)
    assert trig.face_count == 2


@pytest.mark.parametrize(
    "yaws", [(-20.0, 22.0), (20.0, 10.0), (14.0, -20.0)], ids=["mirrored", "right_not_turned", "left_too_little"]
)
def test_no_passenger_interaction(yaws: Tuple[float, float]) -> None:
    run = Run(level="verbose")
    run.steps(OPEN_FRAME + 5, faces=[face(0, x=0.1, yaw=yaws[0]), face(1, x=0.6, yaw=yaws[1])])
    assert run.state.gate.is_open
    assert not any(
        c["reason"] == "passenger_interaction" for r in run.of_type("trigger_decision") for c in r["candidates"]
    )


def test_passenger_interaction_needs_exactly_two_faces() -> None:
    cfg = FusionConfig()
    cfg.gate.max_faces = 3
    run = Run(cfg, level="verbose")
    faces = [face(0, x=0.05, yaw=20.0), face(1, x=0.4, yaw=-20.0), face(2, x=0.7, yaw=-20.0)]
    run.steps(OPEN_FRAME + 3, faces=faces)
    assert run.state.gate.is_open
    assert not any(
        c["reason"] == "passenger_interaction" for r in run.of_type("trigger_decision") for c in r["candidates"]
    )


@pytest.mark.parametrize(
    "gesture,reason",
    [
        ("v_sign", "gesture_vsign"),
        ("thumbs_up", "gesture_thumbsup"),
        ("ok_sign", "gesture_ok"),
        ("open_palm", "gesture_openpalm"),
    ],
)
def test_each_gesture_reason(gesture: str, reason: str) -> None:
    run = Run()
    run.open_gate()
    run.steps(2, hands=[hand(gesture, 0.8)])
    (trig,) = run.triggers.values()
    assert trig.reason == reason and trig.score == pytest.approx(0.8)


@pytest.mark.parametrize("gesture,confidence", [("fist", 0.9), ("pointing", 0.9), ("none", 0.9), ("v_sign", 0.49)])
def test_gestures_that_do_not_count(gesture: str, confidence: float) -> None:
    run = Run()
    run.open_gate()
    run.steps(5, hands=[hand(gesture, confidence)])
    assert not run.triggers


# ------------------------------------------------------------------------ hand wave


def wave_x(i: int, hz: float, amplitude: float) -> float:
    return 0.5 + amplitude * math.sin(2 * math.pi * hz * i / FPS + 0.7)


@pytest.mark.parametrize("t0", T0S)
def test_hand_wave_fires_for_a_three_hz_wave(t0: int) -> None:
    run = Run(t0=t0)
    run.open_gate()
    for k in range(30):
        run.step(poses=[pose_with_wrist(wave_x(k, 3.0, 0.1))])
    assert run.triggers
    trig = next(iter(run.triggers.values()))
    assert trig.reason == "hand_wave" and 0.5 < trig.score <= 1.0


@pytest.mark.parametrize("hz,amplitude", [(0.5, 0.1), (8.0, 0.1), (3.0, 0.01)], ids=["slow", "fast", "tiny"])
def test_hand_wave_does_not_fire(hz: float, amplitude: float) -> None:
    run = Run()
    run.open_gate()
    for k in range(90):
        run.step(poses=[pose_with_wrist(wave_x(k, hz, amplitude))])
    assert not run.triggers


def test_hand_wave_ignores_unconfident_wrists() -> None:
    run = Run()
    run.open_gate()
    for k in range(60):
        run.step(poses=[pose_with_wrist(wave_x(k, 3.0, 0.1), conf=0.4)])
    assert not run.triggers


# -------------------------------------------------------------------------- look-back


@pytest.mark.parametrize("t0", T0S)
def test_event_start_is_the_first_frame_of_the_signal(t0: int) -> None:
    # The gesture shows from frame 10, while the gate is still closed; it fires on frame 22.
    run = Run(t0=t0)
    run.steps(10)
    run.steps(20, hands=[hand("v_sign")])
    (fired_at,) = run.triggers
    assert fired_at == OPEN_FRAME + 1
    assert run.triggers[fired_at].event_t_ns == run.t(10)
    fire = run.of_type("trigger_fire")[0]
    assert fire["event_t_ns"] == run.t(10) and fire["frame_id"] == fired_at


def test_a_frame_without_a_face_result_neither_breaks_nor_starts_the_look_back_run() -> None:
    # A gaze from frame 10; frames 14 and 15 lost their face result (a live deadline).
    # The offline run, which has every result, starts the event at frame 10: so must this one.
    gaze = dict(yaw=0.0, pitch=0.0)
    full, gappy = Run(), Run()
    for run in (full, gappy):
        run.steps(10)
    full.steps(20, faces=[face(**gaze)])
    for i in range(10, 30):
        gappy.step(faces=None if i in (14, 15) else [face(**gaze)])
    assert list(full.triggers) == list(gappy.triggers) == [OPEN_FRAME + 1]
    assert gappy.triggers[OPEN_FRAME + 1].event_t_ns == full.triggers[OPEN_FRAME + 1].event_t_ns == full.t(10)


def test_a_frame_where_the_signal_was_seen_absent_still_breaks_the_run() -> None:
    gaze = dict(yaw=0.0, pitch=0.0)
    run = Run()
    run.steps(10)
    for i in range(10, 30):
        run.step(faces=[face(**(QUIET if i == 15 else gaze))])
    (fired_at,) = run.triggers
    assert run.triggers[fired_at].event_t_ns == run.t(16)


def test_a_frame_without_the_pending_reasons_result_leaves_the_count_standing() -> None:
    # Gesture pending on one frame, then a frame whose gesture result is missing, then
    # the gesture again: confirmed, as with every frame seen (test_no_candidate_restarts_the_count
    # shows a frame that saw no gesture restarting it).
    run = Run()
    run.open_gate()
    run.step(hands=[hand("v_sign")])
    run.step(blind=("gesture",))
    assert run.decisions()[run.i - 1] == "consecutive_pending" and not run.triggers
    run.step(hands=[hand("v_sign")])
    assert len(run.triggers) == 1
    decision = run.of_type("trigger_decision")[-1]
    assert decision["consecutive_count"] == 2


def test_event_start_defaults_when_the_signal_fills_the_look_back() -> None:
    # Present for more than 30 observations: no onset in view, so three frames back.
    run = Run()
    run.steps(40, hands=[hand("v_sign")], quality=False)  # gate closed by quality
    run.steps(OPEN_FRAME + 2, hands=[hand("v_sign")])
    (fired_at,) = run.triggers
    assert run.triggers[fired_at].event_t_ns == run.t(fired_at - 3)


def test_look_back_uses_the_configured_length() -> None:
    cfg = FusionConfig(lookback_sec=0.15, lookback_default_sec=0.1)  # 5 frames, 3 back at 30 fps
    run = Run(cfg)
    run.steps(10)
    run.steps(20, hands=[hand("v_sign")])
    (fired_at,) = run.triggers
    assert run.triggers[fired_at].event_t_ns == run.t(fired_at - 3)


# --------------------------------------------------------------------------- presets


def test_high_sensitivity_fires_on_one_frame() -> None:
    cfg = load_config(env={}, presets=["high_sensitivity"]).fusion
    run = Run(cfg)
    run.steps(OPEN_FRAME)
    trig, _ = run.step(hands=[hand("v_sign")])
    assert trig is not None and run.i - 1 == OPEN_FRAME


def test_high_sensitivity_head_turn_and_spike_thresholds() -> None:
    default, sensitive = Run(), Run(load_config(env={}, presets=["high_sensitivity"]).fusion)
    for run in (default, sensitive):
        run.steps(OPEN_FRAME + 1, faces=[face(yaw=-20.0)])
        turn(run, -20.0, 0.8, 5)  # 24 °/s: between 20 and 30
    assert not default.triggers
    assert [t.reason for t in sensitive.triggers.values()] == ["head_turn"]


def test_conservative_preset() -> None:
    cfg = load_config(env={}, presets=["conservative"]).fusion
    run = Run(cfg)
    run.steps(60, faces=[face(yaw=0.0, pitch=0.0)])
    # Gate open after 1.0 s (frame 30), three confirming frames → frame 32.
    assert list(run.triggers) == [32]


# ------------------------------------------------------------------- trace records


def mixed_script(t0: int) -> List[FrameObservations]:
    """A varied stream: gate opening and closing, smiles, turns, gestures, a wave, gaps."""
    frames: List[FrameObservations] = []
    i = 0

    def add(n: int, **kw: Any) -> None:
        nonlocal i
        for _ in range(n):
            frames.append(frame(t0, i, **kw))
            i += 1

    add(40)
    add(3, faces=[face(expression=0.9)])
    add(70)
    for k in range(6):
        add(1, faces=[face(yaw=-20.0 + 2.0 * k)])
    add(70, faces=[face(yaw=-10.0)])
    add(4, hands=[hand("thumbs_up")])
    add(12, faces=None)
    add(15, faces=[face(yaw=40.0)])
    add(30)
    for k in range(30):
        add(1, poses=[pose_with_wrist(wave_x(k, 3.0, 0.1))])
    add(70, faces=[face(0, x=0.1), face(1, x=0.6)], quality=None)
    add(4, faces=[face(0, x=0.1, yaw=20.0), face(1, x=0.6, yaw=-20.0)])
    add(100, faces=[face(yaw=0.0, pitch=0.0)])
    return frames


def run_frames(rules: FusionRules, state: FusionState, frames: Iterable[FrameObservations]):
    return [process(rules, state, fo) for fo in frames]


@pytest.mark.parametrize("t0", T0S)
def test_mixed_script_fires_each_kind(t0: int) -> None:
    results = run_frames(FusionRules(FusionConfig()), FusionState(), mixed_script(t0))
    reasons = [t.reason for t, _ in results if t is not None]
    expected = ("expression_spike", "head_turn", "gesture_thumbsup", "hand_wave", "passenger_interaction", "camera_gaze")
    for reason in expected:
        assert reason in reasons, reasons


@pytest.mark.parametrize("level", ["off", "minimal", "normal", "verbose"])
def test_trace_levels(level: str) -> None:
    frames = mixed_script(T0S[1])
    results = run_frames(FusionRules(FusionConfig(), level), FusionState(), frames)
    records = [r for _, recs in results for r in recs]
    types = {r["record_type"] for r in records}
    fired = [t for t, _ in results if t is not None]
    assert fired  # triggers come out at every level
    for r in records:
        assert next(iter(r)) == "record_type"
        assert json.loads(json.dumps(r)) == r
    if level == "off":
        assert records == []
    elif level == "minimal":
        assert types == {"trigger_fire"} and len(records) == len(fired)
    elif level == "normal":
        assert types == {"trigger_fire", "trigger_decision", "gate_change"}
        decisions = [r for r in records if r["record_type"] == "trigger_decision"]
        assert 0 < len(decisions) < len(frames)
        for r in decisions:
            assert r["candidates"] or r["decision"] not in ("no_trigger", "blocked_gate")
    else:
        assert {"trigger_fire", "trigger_decision", "gate_change", "gate_condition"} <= types
        assert len([r for r in records if r["record_type"] == "trigger_decision"]) == len(frames)
        assert len([r for r in records if r["record_type"] == "gate_condition"]) == len(frames)


def test_trigger_decision_and_fire_fields() -> None:
    run = Run(level="verbose")
    run.steps(OPEN_FRAME + 2, faces=[face(yaw=0.0, pitch=0.0)])
    decision = run.of_type("trigger_decision")[-1]
    for key in (
        "frame_id", "t_ns", "stream", "gate_open", "in_cooldown", "candidates", "consecutive_count",
        "consecutive_required", "decision", "ewma_values",
    ):
        assert key in decision
    assert decision["decision"] == "triggered" and decision["stream"] == STREAM
    (fire,) = run.of_type("trigger_fire")
    trig = run.triggers[OPEN_FRAME + 1]
    assert fire == {
        "record_type": "trigger_fire",
        "stream": STREAM,
        "frame_id": trig.frame_id,
        "t_ns": trig.t_ns,
        "event_t_ns": trig.event_t_ns,
        "reason": "camera_gaze",
        "score": trig.score,
        "pre_sec": 2.0,
        "post_sec": 2.0,
        "face_count": 1,
        "label": "highlight",
    }
    condition = run.of_type("gate_condition")[0]
    assert condition["conditions"]["yaw"] == {"value": 0.0, "pass": True}
    assert condition["conditions"]["quality"]["status"] == "observed"


def test_unknown_trace_level_is_rejected() -> None:
    with pytest.raises(ValueError):
        FusionRules(FusionConfig(), "chatty")


# ----------------------------------------------------------------- order & bad input


def test_out_of_order_frame_is_reported_and_ignored() -> None:
    frames = mixed_script(T0S[1])
    rules = FusionRules(FusionConfig())
    clean = run_frames(rules, FusionState(), frames)
    state = FusionState()
    disturbed = []
    for k, fo in enumerate(frames):
        disturbed.append(process(rules, state, fo))
        if k in (41, 150):
            stale = copy.deepcopy(frames[k - 5])
            stale.observations["face"].faces[0].expression = 1.0
            trig, recs = process(rules, state, stale)
            assert trig is None
            assert [r["record_type"] for r in recs] == ["out_of_order"]
            assert recs[0]["frame_id"] == frames[k - 5].frame_id and recs[0]["last_t_ns"] == fo.t_ns
    assert disturbed == clean
    assert state.out_of_order == 2


def test_bad_face_values_are_recorded_not_fatal() -> None:
    run = Run()
    run.open_gate()
    trig, recs = run.step(faces=[face(yaw=float("nan"))])
    assert trig is None
    bad = [r for r in recs if r["record_type"] == "invalid_observation"]
    assert bad and "yaw" in bad[0]["problems"][0]
    assert run.state.gate.is_open  # treated as unknown, not as a failure
    assert run.state.invalid_observations == 1
    # Malformed keypoints and gesture confidences are skipped.
    broken_pose = Pose(person_id=0, confidence=0.9, keypoints=[(0.1, 0.2)] * 5)
    run.step(poses=[broken_pose], hands=[hand("v_sign", float("nan"))])
    run.steps(2, hands=[hand("v_sign")])
    assert [t.reason for t in run.triggers.values()] == ["gesture_vsign"]


def test_observation_with_error_counts_as_missing() -> None:
    run = Run()
    run.open_gate()
    fo = frame(0, run.i, faces=[face(yaw=40.0)])
    fo.observations["face"].error = "timeout"
    run.rules.process(run.state, fo)
    run.i += 1
    run.steps(8, faces=[face(yaw=40.0)])
    assert run.state.gate.is_open  # the errored frame did not start the failure timer


# --------------------------------------------------------------------------- pickle


@pytest.mark.parametrize("split", [30, 42, 120, 200, 300])
def test_restored_state_continues_identically(split: int) -> None:
    frames = mixed_script(T0S[1])
    rules = FusionRules(FusionConfig(), "verbose")
    uninterrupted = run_frames(rules, FusionState(), frames)
    state = FusionState()
    head = run_frames(rules, state, frames[:split])
    restored = pickle.loads(pickle.dumps(state))
    tail = run_frames(FusionRules(FusionConfig(), "verbose"), restored, frames[split:])
    assert head + tail == uninterrupted
    assert sum(t is not None for t, _ in tail) >= 1


def test_snapshot_holds_no_settings_and_a_resume_uses_the_new_ones() -> None:
    """A stream restored from a snapshot follows the configuration of the run that resumes."""
    gaze = [face(yaw=0.0, pitch=0.0)]
    first = OPEN_FRAME + 1
    old = Run()  # cooldown 2.0 s: 60 frames
    old.steps(first + 1, faces=gaze)
    assert list(old.triggers) == [first]
    snapshot = pickle.dumps(old.state)
    assert b"FusionConfig" not in snapshot and b"cooldown" not in snapshot

    def resumed(cooldown_sec: float) -> List[int]:
        run = Run(FusionConfig(cooldown_sec=cooldown_sec))
        run.state, run.i = pickle.loads(snapshot), old.i
        run.steps(40, faces=gaze)
        return list(run.triggers)

    assert resumed(2.0) == []  # still cooling down for the whole stretch
    # 0.5 s (15 frames) after each firing frame the cooldown is over; the gaze held
    # through it fires at once.
    assert resumed(0.5) == [first + 15, first + 30]


def test_a_snapshot_from_when_the_rules_counted_frames_resumes() -> None:
    """Its look-back had a frame count, its baselines no time and it held no pending start."""
    from collections import deque

    run = Run()
    run.open_gate()
    run.step(faces=[face(expression=0.1)], hands=[hand("v_sign")])
    old = pickle.loads(pickle.dumps(run.state))
    old.lookback = deque(old.lookback, maxlen=30)
    del old.__dict__["pending_since_ns"]
    for baseline in old.expression.values():
        del baseline.__dict__["t_ns"]
    run.state = old
    run.step(faces=[face(expression=0.1)], hands=[hand("v_sign")])  # the pending count restarts
    trig, _ = run.step(faces=[face(expression=0.1)], hands=[hand("v_sign")])
    assert trig is not None and trig.reason == "gesture_vsign"
    assert run.state.lookback.maxlen is None and run.state.expression[0].t_ns == run.t(run.i - 1)


def test_gesture_at_exactly_the_minimum_confidence_is_a_candidate() -> None:
    """moments.md: detected when gesture_confidence >= min_gesture_confidence, as in the extractor."""
    cfg = FusionConfig(min_gesture_confidence=0.6)
    at, below = Run(cfg), Run(cfg)
    for run, confidence in ((at, 0.6), (below, 0.6 - 1e-9)):
        run.open_gate()
        run.steps(2, hands=[hand("thumbs_up", confidence)])
    assert [t.reason for t in at.triggers.values()] == ["gesture_thumbsup"]
    assert not below.triggers
