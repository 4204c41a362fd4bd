"""Fusion: aligned observations of one stream in, highlight triggers out (moments.md).

Per frame, in event-time order: cooldown, gate with hysteresis, candidates (the best
score wins the frame), confirmation once a reason has won for long enough, then a point
trigger whose event start is found by look-back. All numbers come from `FusionConfig`.

Every temporal rule is set in event time (the `t_ns` of each fused frame), never in
frames, so a stream analysed at 10, 15 or 30 fps fires the same reasons at the same
times within one analysis frame; the analysis rate may also vary along the stream.

`FusionRules` carries the settings and is built from the step's configuration on every
start; the temporal state of a stream is a `FusionState` (operators/fusion_state.py),
which holds no settings, so a run resumed with changed settings uses them.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Dict, FrozenSet, List, Optional, Sequence, Tuple

from facemoment.core.config import FusionConfig, GateConfig
from facemoment.core.records import (
    GateChange,
    GateCondition,
    InvalidObservation,
    Level,
    OutOfOrder,
    TriggerDecision,
    TriggerFire,
)
from facemoment.core.types import Face, FrameObservations, Observation, Pose, TraceRecord, Trigger
from operators.extraction.gesture_rules import meets_gesture_confidence
from operators.fusion_state import ExpressionBaseline, FusionState, lookback_horizon_ns
from operators.wave import WaveDetector

GESTURE_REASONS = {
    "v_sign": "gesture_vsign",
    "thumbs_up": "gesture_thumbsup",
    "ok_sign": "gesture_ok",
    "open_palm": "gesture_openpalm",
}

# The extractor whose result each reason's signal is read from.
FACE_REASONS = frozenset({"expression_spike", "head_turn", "camera_gaze", "passenger_interaction"})
POSE_REASONS = frozenset({"hand_wave"})
GESTURE_REASON_SET = frozenset(GESTURE_REASONS.values())

# Score normalisers from moments.md: they shape scores, never whether a candidate exists.
SPIKE_FULL_Z = 4.0
HEAD_TURN_FULL_DEG_PER_SEC = 60.0
PASSENGER_FULL_YAW_DEG = 45.0

# COCO keypoint indices of the wrists, and the confidence a wrist needs to be tracked.
WRISTS = (9, 10)
WRIST_MIN_CONFIDENCE = 0.5

# The fallback event start takes the time of a frame this close to it (clock rounding).
SNAP_NS = 1_000_000

_FACE_NUMBERS = ("confidence", "yaw", "pitch", "expression", "area_ratio", "center_distance")


def _ns(seconds: float) -> int:
    return int(round(seconds * 1e9))


def gate_conditions(
    faces: Sequence[Face], quality_ok: bool, quality_status: str, gate: GateConfig
) -> Tuple[bool, Dict[str, Dict[str, Any]]]:
    """Each gate condition's value and whether it passes; per-face values are the worst face's."""
    n = len(faces)
    conditions: Dict[str, Dict[str, Any]] = {
        "face_count": {"value": n, "pass": gate.min_faces <= n <= gate.max_faces},
    }
    if faces:
        worst = {
            "confidence": min(f.confidence for f in faces),
            "inside_frame": all(f.inside_frame for f in faces),
            "yaw": max(abs(f.yaw) for f in faces),
            "pitch": max(abs(f.pitch) for f in faces),
            "area_ratio": min(f.area_ratio for f in faces),
            "center_distance": max(f.center_distance for f in faces),
        }
        conditions["confidence"] = {"value": worst["confidence"], "pass": worst["confidence"] >= gate.min_confidence}
        conditions["inside_frame"] = {"value": worst["inside_frame"], "pass": worst["inside_frame"]}
        conditions["yaw"] = {"value": worst["yaw"], "pass": worst["yaw"] <= gate.max_yaw}
        conditions["pitch"] = {"value": worst["pitch"], "pass": worst["pitch"] <= gate.max_pitch}
        conditions["area_ratio"] = {"value": worst["area_ratio"], "pass": worst["area_ratio"] >= gate.min_area_ratio}
        conditions["center_distance"] = {
            "value": worst["center_distance"],
            "pass": worst["center_distance"] <= gate.max_center_distance,
        }
    if gate.require_quality:
        conditions["quality"] = {"value": quality_ok, "pass": quality_ok, "status": quality_status}
    return all(c["pass"] for c in conditions.values()), conditions


def _usable(fo: FrameObservations, source: str) -> Optional[Observation]:
    obs = fo.observations.get(source)
    if obs is None or obs.error is not None:
        return None
    return obs


def _unknown_reasons(fo: FrameObservations, faces: Optional[List[Face]]) -> FrozenSet[str]:
    """Reasons this frame cannot see, present or not: their extractor's result is
    missing (deadline, dropped, not carried), failed, or unusable."""
    unknown: FrozenSet[str] = frozenset()
    if faces is None:
        unknown |= FACE_REASONS
    if _blind(fo, "pose"):
        unknown |= POSE_REASONS
    if _blind(fo, "gesture"):
        unknown |= GESTURE_REASON_SET
    return unknown


def _blind(fo: FrameObservations, source: str) -> bool:
    # An extractor the flow does not run at all is neither listed as missing nor observed.
    obs = fo.observations.get(source)
    return source in fo.missing or (obs is not None and obs.error is not None)


def _unseen(state: FusionState, unknown: FrozenSet[str]) -> bool:
    """Whether this frame cannot see the pending reason's signal."""
    return state.pending_reason is not None and state.pending_reason in unknown


def _unknown_of(entry: Tuple[Any, ...]) -> FrozenSet[str]:
    # Look-back entries from a snapshot taken before they held the unknown reasons.
    return entry[2] if len(entry) > 2 else frozenset()


def _face_problem(face: Face) -> Optional[str]:
    if isinstance(face.face_id, bool) or not isinstance(face.face_id, int):
        try:
            if int(face.face_id) != face.face_id:
                return f"face_id {face.face_id!r} is not an integer"
        except (TypeError, ValueError):
            return f"face_id {face.face_id!r} is not an integer"
    for name in _FACE_NUMBERS:
        value = getattr(face, name)
        try:
            if not math.isfinite(float(value)):
                return f"face {face.face_id}: {name} is not finite"
        except (TypeError, ValueError):
            return f"face {face.face_id}: {name} is not a number"
    try:
        if len(face.bbox) != 4 or not all(math.isfinite(float(v)) for v in face.bbox):
            return f"face {face.face_id}: bbox is not four finite numbers"
    except (TypeError, ValueError):
        return f"face {face.face_id}: bbox is not four finite numbers"
    return None


def _finite_or(value: Any, default: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _wrist_x(person: Pose, wrist: int) -> Optional[float]:
    """The wrist's x when it is confidently seen, else None (malformed keypoints included)."""
    try:
        x, _y, conf = person.keypoints[wrist][:3]
    except (IndexError, TypeError, ValueError):
        return None
    if _finite_or(conf, 0.0) < WRIST_MIN_CONFIDENCE:
        return None
    number = _finite_or(x, math.nan)
    return number if math.isfinite(number) else None


def _plain_face(face: Face) -> Face:
    """A copy with plain Python numbers, so state and trace records never hold numpy scalars."""
    return Face(
        face_id=int(face.face_id),
        confidence=float(face.confidence),
        bbox=tuple(float(v) for v in face.bbox),  # type: ignore[arg-type]
        yaw=float(face.yaw),
        pitch=float(face.pitch),
        roll=_finite_or(face.roll, 0.0),
        expression=float(face.expression),
        inside_frame=bool(face.inside_frame),
        area_ratio=float(face.area_ratio),
        center_distance=float(face.center_distance),
    )


class FusionRules:
    """The rules of moments.md with their settings; `process` is called once per frame of
    one stream, in event-time order, with that stream's `FusionState`."""

    def __init__(self, cfg: FusionConfig, trace_level: "str | Level" = "normal"):
        self.level = Level.parse(trace_level)
        for name in ("confirm_sec", "ewma_tau_sec", "lookback_sec", "lookback_default_sec", "wave_window_sec"):
            value = getattr(cfg, name)
            if not (math.isfinite(value) and value >= 0) or (value == 0 and name in ("ewma_tau_sec", "wave_window_sec")):
                raise ValueError(f"fusion.{name} = {value!r} is not a usable duration")
        self.cfg = cfg
        self._horizon_ns = lookback_horizon_ns(cfg)
        self._confirm_ns = _ns(cfg.confirm_sec)
        self._default_back_ns = _ns(cfg.lookback_default_sec)
        self._order = {reason: i for i, reason in enumerate(cfg.reasons)}

    # ----------------------------------------------------------------- helpers
    @staticmethod
    def _quality(state: FusionState, fo: FrameObservations) -> Tuple[bool, str]:
        """The quality condition for this frame and where it came from.

        A frame without a usable quality observation keeps the last observed state.
        Before any has arrived, an expected but missing quality counts as failed, while
        a stream that does not run the quality extractor at all (not observed and not
        listed as missing) has nothing to require, so the condition passes.
        """
        obs = _usable(fo, "quality")
        value = obs.signals.get("quality_gate") if obs is not None else None
        if value is not None:
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = math.nan
            if math.isfinite(number):
                state.quality_ok = number >= 0.5
                return state.quality_ok, "observed"
        if state.quality_ok is not None:
            return state.quality_ok, "last_known"
        expected = "quality" in fo.observations or "quality" in fo.missing
        return (False, "unknown") if expected else (True, "not_expected")

    def _faces(self, state: FusionState, fo: FrameObservations, records: List[TraceRecord]) -> Optional[List[Face]]:
        """The frame's faces, or None when the face observation is missing or unusable."""
        obs = _usable(fo, "face")
        if obs is None:
            return None
        problems = [p for p in (_face_problem(f) for f in obs.faces) if p]
        if problems:
            state.invalid_observations += 1
            if self.level >= InvalidObservation.LEVEL:
                records.append(
                    InvalidObservation(
                        stream=fo.stream_id, frame_id=fo.frame_id, t_ns=fo.t_ns, source="face", problems=problems
                    )
                )
            return None
        return [_plain_face(f) for f in obs.faces]

    # -------------------------------------------------------------- candidates
    def _candidates(self, state: FusionState, fo: FrameObservations, faces: Optional[List[Face]]) -> Dict[str, float]:
        """Every reason whose signal is present on this frame, with its best score.

        Signal history (EWMA, previous yaw, wrist tracks) is updated here on every frame,
        whatever the gate and cooldown say, so history exists when the gate opens.
        """
        cfg = self.cfg
        wanted = set(cfg.reasons)
        found: Dict[str, float] = {}

        def offer(reason: str, score: float) -> None:
            if reason in wanted and score > found.get(reason, -math.inf):
                found[reason] = float(score)

        t_ns = fo.t_ns
        for face in faces or []:
            baseline = state.expression.get(face.face_id)
            if baseline is None:
                # No history yet: the first sample only starts the baseline.
                state.expression[face.face_id] = ExpressionBaseline(face.expression, cfg.ewma_initial_var, t_ns)
            else:
                z = baseline.z_then_update(face.expression, t_ns, cfg.ewma_tau_sec, cfg.spike_min_std)
                if z > cfg.spike_z and face.expression > cfg.spike_min_expression:
                    offer("expression_spike", min(1.0, z / SPIKE_FULL_Z))

            previous = state.last_yaw.get(face.face_id)
            if previous is not None:
                dt_s = (t_ns - previous[0]) / 1e9
                if 0 < dt_s < cfg.head_turn_max_dt_sec:
                    speed = abs(face.yaw - previous[1]) / dt_s
                    if speed > cfg.head_turn_deg_per_sec:
                        offer("head_turn", min(1.0, speed / HEAD_TURN_FULL_DEG_PER_SEC))
            state.last_yaw[face.face_id] = (t_ns, face.yaw)

            gaze = max(0.0, 1.0 - abs(face.yaw) / cfg.camera_gaze_yaw_deg) * max(
                0.0, 1.0 - abs(face.pitch) / cfg.camera_gaze_pitch_deg
            )
            if gaze > cfg.camera_gaze_threshold:
                offer("camera_gaze", gaze)

        if faces is not None and len(faces) == 2:
            left, right = sorted(faces, key=lambda f: f.bbox[0])
            if left.yaw > cfg.passenger_yaw_deg and right.yaw < -cfg.passenger_yaw_deg:
                score = (
                    min(abs(left.yaw) / PASSENGER_FULL_YAW_DEG, 1.0) + min(abs(right.yaw) / PASSENGER_FULL_YAW_DEG, 1.0)
                ) / 2.0
                offer("passenger_interaction", score)

        pose = _usable(fo, "pose")
        for person in pose.poses if pose is not None else []:
            for wrist in WRISTS:
                x = _wrist_x(person, wrist)
                if x is None:
                    continue
                key = (int(person.person_id), wrist)
                detector = WaveDetector.from_config(cfg, state.waves.get(key, ()))
                result = detector.update(t_ns, x)
                state.waves[key] = detector.samples
                if result.waving:
                    offer("hand_wave", result.score)

        gesture = _usable(fo, "gesture")
        for hand in gesture.hands if gesture is not None else []:
            reason = GESTURE_REASONS.get(hand.gesture)
            confidence = _finite_or(hand.gesture_confidence, 0.0)
            if reason is not None and meets_gesture_confidence(confidence, cfg.min_gesture_confidence):
                offer(reason, confidence)
        return found

    def _event_start(self, state: FusionState, reason: str) -> int:
        """Event time of the first frame of the signal's current run (look-back).

        A frame that could not tell whether the signal was there (its extractor's
        result missing) neither breaks the run nor starts it: a live frame whose face
        result missed its deadline must not move the start later than the offline run."""
        frames = list(state.lookback)  # oldest first; the last one is the current frame
        if reason != "head_turn":
            run_start: Optional[int] = None
            for entry in reversed(frames):
                if reason in _unknown_of(entry):
                    continue
                if reason not in entry[1]:
                    if run_start is not None:
                        return run_start
                    break
                run_start = entry[0]
        # A head turn has no clean onset, and a signal present through the whole
        # look-back has none in view: lookback_default_sec before this frame (not
        # before the oldest frame kept). A time, not a frame: any analysis rate
        # gives the same start. A frame within SNAP_NS of it lends its own time, so
        # clocks that round frame periods (33_333_333 ns) still start on a frame.
        start = max(frames[-1][0] - self._default_back_ns, frames[0][0])
        nearest = min((entry[0] for entry in frames), key=lambda t: abs(t - start))
        return nearest if abs(nearest - start) <= SNAP_NS else start

    @staticmethod
    def _hold(
        state: FusionState,
        winner: Optional[str],
        candidates: Dict[str, float],
        t_ns: int,
        previous_t_ns: Optional[int],
        unknown: FrozenSet[str] = frozenset(),
    ) -> None:
        """Confirmation: how long the frame's winner has been winning (moments.md step 4).

        A frame that cannot see the pending reason's signal (its extractor's result
        missing) leaves the count standing: unknown is not absent."""
        if winner is None:
            if _unseen(state, unknown):
                return
            state.reset_pending()
        elif winner == state.pending_reason and state.pending_since_ns is not None:
            state.pending_count += 1
            state.pending_score = max(state.pending_score, candidates[winner])
        else:
            state.pending_reason = winner
            state.pending_count = 1
            state.pending_score = candidates[winner]
            # This frame's observation stands for the time since the frame before.
            state.pending_since_ns = t_ns if previous_t_ns is None else previous_t_ns

    def _frames_needed(self, t_ns: int, previous_t_ns: Optional[int]) -> int:
        """Frames a reason must win in a row to be confirmed at this frame's interval
        (the trace's `consecutive_required`; the rule itself is `confirm_sec`)."""
        if previous_t_ns is None or self._confirm_ns == 0:
            return 1
        return max(1, math.ceil(self._confirm_ns / (t_ns - previous_t_ns)))

    # ------------------------------------------------------------------- frame
    def process(self, state: FusionState, fo: FrameObservations) -> Tuple[Optional[Trigger], List[TraceRecord]]:
        records: List[TraceRecord] = []
        level = self.level
        t_ns = int(fo.t_ns)
        if state.last_t_ns is not None and t_ns <= state.last_t_ns:
            # Temporal state only moves forward in event time; an older frame is reported and dropped.
            state.out_of_order += 1
            if level >= OutOfOrder.LEVEL:
                records.append(
                    OutOfOrder(
                        stream=fo.stream_id,
                        frame_id=fo.frame_id,
                        t_ns=t_ns,
                        last_t_ns=state.last_t_ns,
                        behind_ms=round((state.last_t_ns - t_ns) / 1e6, 3),
                    )
                )
            return None, records
        previous_t_ns = state.last_t_ns
        state.last_t_ns = t_ns
        state.frames += 1
        cfg = self.cfg
        if state.lookback.maxlen is not None:  # a snapshot from when the look-back counted frames
            state.lookback = deque(state.lookback)

        faces = self._faces(state, fo, records)
        quality_ok, quality_status = self._quality(state, fo)
        if faces is not None:
            passed, conditions = gate_conditions(faces, quality_ok, quality_status, cfg.gate)
            change = state.gate.update(t_ns, passed, _ns(cfg.gate.open_duration_sec), _ns(cfg.gate.close_duration_sec))
        else:
            # Face conditions unknown: the gate timers stand still.
            passed, conditions, change = False, {}, None
        if level >= GateCondition.LEVEL:
            records.append(
                GateCondition(
                    stream=fo.stream_id,
                    frame_id=fo.frame_id,
                    t_ns=t_ns,
                    face_observed=faces is not None,
                    conditions=conditions,
                    all_pass=passed if faces is not None else None,
                    gate_open=state.gate.is_open,
                )
            )
        if change is not None and level >= GateChange.LEVEL:
            reason, streak_ns = change
            records.append(
                GateChange(
                    stream=fo.stream_id,
                    frame_id=fo.frame_id,
                    t_ns=t_ns,
                    gate_open=state.gate.is_open,
                    reason=reason,
                    duration_sec=round(streak_ns / 1e9, 6),
                )
            )

        candidates = self._candidates(state, fo, faces)
        unknown = _unknown_reasons(fo, faces)
        state.lookback.append((t_ns, frozenset(candidates), unknown))
        while t_ns - state.lookback[0][0] > self._horizon_ns:
            state.lookback.popleft()

        in_cooldown = state.last_fire_t_ns is not None and t_ns - state.last_fire_t_ns < _ns(cfg.cooldown_sec)
        trigger: Optional[Trigger] = None
        winner: Optional[str] = None
        if candidates:
            order = self._order
            # Highest score wins; ties go to the reason listed first in the configuration.
            winner = max(candidates, key=lambda r: (candidates[r], -order[r]))
        if in_cooldown:
            # A reason keeps being held through the cooldown, so one that lasts fires
            # on the first frame after it, whatever the frame rate: a count restarted
            # after the cooldown would put every repeat a frame period later.
            decision = "blocked_cooldown"
            self._hold(state, winner, candidates, t_ns, previous_t_ns, unknown)
        elif not state.gate.is_open:
            decision = "blocked_gate"
            state.reset_pending()
        elif winner is None:
            decision = "consecutive_pending" if _unseen(state, unknown) else "no_trigger"
            self._hold(state, winner, candidates, t_ns, previous_t_ns, unknown)
        else:
            self._hold(state, winner, candidates, t_ns, previous_t_ns)
            if t_ns - state.pending_since_ns >= self._confirm_ns:
                decision = "triggered"
                trigger = Trigger(
                    stream_id=fo.stream_id,
                    frame_id=fo.frame_id,
                    t_ns=t_ns,
                    event_t_ns=self._event_start(state, winner),
                    reason=winner,
                    score=state.pending_score,
                    pre_sec=cfg.pre_sec,
                    post_sec=cfg.post_sec,
                    face_count=len(faces or []),
                    label=cfg.label,
                )
            else:
                decision = "consecutive_pending"

        interesting = bool(candidates) or decision not in ("no_trigger", "blocked_gate")
        # Every decision at verbose; at normal only frames where something was in play.
        if level >= Level.VERBOSE or (level >= TriggerDecision.LEVEL and interesting):
            records.append(
                TriggerDecision(
                    stream=fo.stream_id,
                    frame_id=fo.frame_id,
                    t_ns=t_ns,
                    gate_open=state.gate.is_open,
                    in_cooldown=in_cooldown,
                    candidates=[
                        {"reason": r, "score": s} for r, s in sorted(candidates.items(), key=lambda kv: -kv[1])
                    ],
                    consecutive_count=state.pending_count,
                    consecutive_required=self._frames_needed(t_ns, previous_t_ns),
                    held_sec=round((t_ns - state.pending_since_ns) / 1e9, 6) if state.pending_since_ns is not None else 0.0,
                    confirm_sec=cfg.confirm_sec,
                    decision=decision,
                    ewma_values={str(fid): b.ewma for fid, b in sorted(state.expression.items())},
                    face_count=len(faces) if faces is not None else None,
                    missing=list(fo.missing),
                )
            )

        state.outcome = (faces is not None, passed, conditions, state.gate.is_open, decision, tuple(candidates))  # gate_tally.Outcome
        if trigger is not None:
            state.last_fire_t_ns = t_ns
            state.reset_pending()
            if level >= TriggerFire.LEVEL:
                records.append(
                    TriggerFire(
                        stream=trigger.stream_id,
                        frame_id=trigger.frame_id,
                        t_ns=trigger.t_ns,
                        event_t_ns=trigger.event_t_ns,
                        reason=trigger.reason,
                        score=trigger.score,
                        pre_sec=trigger.pre_sec,
                        post_sec=trigger.post_sec,
                        face_count=trigger.face_count,
                        label=trigger.label,
                    )
                )
        return trigger, records
