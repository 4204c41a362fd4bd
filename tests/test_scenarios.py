"""Scripted observation streams through the real align → fuse → output steps:
each trigger reason fires at its scripted time and nowhere else."""

from __future__ import annotations

import json
import math
from typing import Callable, Dict, List, Optional

import pytest
from bytewax.testing import TestingSource, run_main

from dataflows.facemoment import build_observation_flow
from facemoment.core.config import Config
from facemoment.core.types import Face, FramePresence, Hand, Observation, Pose

FPS = 30
FRAME_NS = 1_000_000_000 // FPS
T0 = 1_795_600_000_000_000_000  # a 2026 capture clock
EVENT_S = 4.0  # every scenario's event starts here, long after the gate opened
DURATION_S = 7.0


def t_of(i: int) -> int:
    return T0 + i * FRAME_NS


def frame_at(seconds: float) -> int:
    return int(round(seconds * FPS))


def face(x: float = 0.4, yaw: float = 0.0, pitch: float = 16.0, expression: float = 0.2, face_id: int = 0) -> Face:
    # pitch 16° keeps camera_gaze quiet while passing the gate (|pitch| <= 20).
    return Face(face_id, 0.95, (x, 0.3, 0.2, 0.25), yaw=yaw, pitch=pitch, expression=expression,
                inside_frame=True, area_ratio=0.05, center_distance=math.hypot(x + 0.1 - 0.5, 0.425 - 0.5))


def still_pose(wrist_x: float = 0.3) -> Pose:
    kps = [(0.5, 0.4, 0.9)] * 17
    kps[5], kps[6] = (0.4, 0.6, 0.9), (0.6, 0.6, 0.9)  # shoulders
    kps[9], kps[10] = (wrist_x, 0.8, 0.9), (0.7, 0.8, 0.9)  # wrists below them
    return Pose(0, 0.9, kps, hand_raised=False)


def script(
    faces: Callable[[int, float], List[Face]],
    pose: Optional[Callable[[int, float], Pose]] = None,
    hands: Optional[Callable[[int, float], List[Hand]]] = None,
) -> List[Observation]:
    out: List[Observation] = []
    for i in range(frame_at(DURATION_S)):
        t, s = t_of(i), i / FPS
        out.append(FramePresence("cam0", i, t))
        out.append(Observation("face", "cam0", i, t, faces=faces(i, s)))
        out.append(Observation("quality", "cam0", i, t, signals={"quality_gate": 1.0}))
        out.append(Observation("pose", "cam0", i, t, poses=[pose(i, s) if pose else still_pose()]))
        out.append(Observation("gesture", "cam0", i, t, hands=hands(i, s) if hands else []))
    return out


def run(observations: List[Observation], tmp_path) -> List[Dict]:
    cfg = Config()
    cfg.output.output_dir = str(tmp_path)
    cfg.output.trig_address = None
    run_main(build_observation_flow(cfg, TestingSource(observations, batch_size=15)))
    path = tmp_path / "triggers.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def in_episode(s: float, length: float = 0.5) -> bool:
    return EVENT_S <= s < EVENT_S + length


def hand(gesture: str, confidence: float = 0.95) -> Hand:
    return Hand(0, 0.95, "Right", [(0.5, 0.5, 0.0)] * 21, gesture=gesture, gesture_confidence=confidence)


SCENARIOS = {
    # A sudden smile after a calm baseline.
    "expression_spike": dict(
        faces=lambda i, s: [face(expression=0.9 if in_episode(s, 0.2) else 0.2 + 0.01 * (i % 3))],
    ),
    # Yaw 0 → 20° in 0.2 s (100 °/s).
    "head_turn": dict(
        faces=lambda i, s: [face(yaw=min(20.0, max(0.0, (s - EVENT_S + 1 / FPS) * 100.0)))],
    ),
    # The left wrist swings at 3 Hz, amplitude 0.1, for 1 s.
    "hand_wave": dict(
        faces=lambda i, s: [face()],
        pose=lambda i, s: still_pose(0.3 + (0.05 * math.sin(2 * math.pi * 3 * (s - EVENT_S)) if in_episode(s, 1.0) else 0.0)),
    ),
    # Looking straight into the camera: pitch 16° → 0.
    "camera_gaze": dict(
        faces=lambda i, s: [face(pitch=0.0 if in_episode(s) else 16.0)],
    ),
    # Two riders turn to each other, slowly (10 °/s, below head_turn).
    "passenger_interaction": dict(
        faces=lambda i, s: [
            face(x=0.2, yaw=max(0.0, min(20.0, (s - EVENT_S + 1.5) * 10.0)) if s < EVENT_S + 0.5 else 0.0, face_id=0),
            face(x=0.6, yaw=-max(0.0, min(20.0, (s - EVENT_S + 1.5) * 10.0)) if s < EVENT_S + 0.5 else 0.0, face_id=1),
        ],
    ),
    "gesture_vsign": dict(faces=lambda i, s: [face()], hands=lambda i, s: [hand("v_sign")] if in_episode(s) else []),
    "gesture_thumbsup": dict(faces=lambda i, s: [face()], hands=lambda i, s: [hand("thumbs_up")] if in_episode(s) else []),
    "gesture_ok": dict(faces=lambda i, s: [face()], hands=lambda i, s: [hand("ok_sign")] if in_episode(s) else []),
    "gesture_openpalm": dict(faces=lambda i, s: [face()], hands=lambda i, s: [hand("open_palm")] if in_episode(s) else []),
}


def scripted_fire_frame(reason: str, observations: List[Observation]) -> int:
    """The frame the rules must fire on: the second consecutive frame whose signal holds."""
    if reason == "passenger_interaction":
        # first frame where both yaws exceed 15°
        onset = next(o.frame_id for o in observations if o.source == "face" and len(o.faces) == 2
                     and o.faces[0].yaw > 15 and o.faces[1].yaw < -15)
    elif reason == "hand_wave":
        return -1  # checked by window below: needs a wave history first
    else:
        onset = frame_at(EVENT_S)
    # confirm_sec (0.05 s) is held on the second frame: each frame stands for the 1/30 s since the one before.
    return onset + 1


@pytest.mark.parametrize("reason", sorted(SCENARIOS))
def test_each_reason_fires_at_its_scripted_time_and_nowhere_else(reason, tmp_path):
    observations = script(**SCENARIOS[reason])
    triggers = run(observations, tmp_path)
    assert [t["reason"] for t in triggers] == [reason], triggers
    fired = triggers[0]["frame_id"]
    if reason == "hand_wave":
        # A wave needs >= 5 samples spanning >= 0.2 s of history: it fires within the
        # first half-second of waving.
        assert frame_at(EVENT_S) + 5 <= fired <= frame_at(EVENT_S + 0.5)
    else:
        assert fired == scripted_fire_frame(reason, observations)
    assert triggers[0]["t_ns"] == t_of(fired)


def test_the_baseline_alone_never_fires(tmp_path):
    observations = script(faces=lambda i, s: [face(expression=0.2 + 0.01 * (i % 3))])
    assert run(observations, tmp_path) == []


def test_observations_jsonl_carries_visualbase_obs_text(tmp_path):
    from facemoment.formats.obs import parse_obs

    observations = script(faces=lambda i, s: [face(yaw=12.0)])[:50]
    cfg = Config()
    cfg.output.output_dir = str(tmp_path)
    cfg.output.trig_address = None
    cfg.output.observations = True
    run_main(build_observation_flow(cfg, TestingSource(observations)))
    rows = [json.loads(line) for line in (tmp_path / "observations.jsonl").read_text().splitlines()]
    assert sorted({r["source"] for r in rows}) == ["face", "gesture", "pose", "quality"]
    assert len(rows) == 4 * 10
    face_rows = [r for r in rows if r["source"] == "face"]
    assert [r["frame_id"] for r in face_rows] == list(range(10))
    parsed = parse_obs(face_rows[3]["obs"])
    assert parsed.frame_id == 3 and parsed.t_ns == t_of(3)
    assert parsed.faces[0].yaw == pytest.approx(12.0) and parsed.faces[0].confidence == pytest.approx(0.95)
