"""Fusion: aligned observations of one stream in, highlight triggers out (moments.md).

Per frame, in event-time order: cooldown, gate with hysteresis, candidates (the best
score wins the frame), confirmation over consecutive frames, then a point trigger whose
event start is found by look-back. All numbers come from `FusionConfig`.

`FusionState` holds every piece of temporal state of one stream as plain data (dicts,
deques, dataclasses) so Bytewax can pickle it into a recovery snapshot and a restored
copy continues exactly where the original stopped.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Deque, Dict, FrozenSet, List, Optional, Sequence, Tuple

from facemoment.core.config import FusionConfig, GateConfig
from facemoment.core.types import Face, FrameObservations, Observation, Pose, TraceRecord, Trigger
from operators.wave import WaveDetector

TRACE_LEVELS = {"off": 0, "minimal": 1, "normal": 2, "verbose": 3}

GESTURE_REASONS = {
    "v_sign": "gesture_vsign",
    "thumbs_up": "gesture_thumbsup",
    "ok_sign": "gesture_ok",
    "open_palm": "gesture_openpalm",
}

# Score normalisers from moments.md: they shape scores, never whether a candidate exists.
SPIKE_FULL_Z = 4.0
HEAD_TURN_FULL_DEG_PER_SEC = 60.0
PASSENGER_FULL_YAW_DEG = 45.0

# COCO keypoint indices of the wrists, and the confidence a wrist needs to be tracked.
WRISTS = (9, 10)
WRIST_MIN_CONFIDENCE = 0.5

_FACE_NUMBERS = ("confidence", "yaw", "pitch", "expression", "area_ratio", "center_distance")


def _ns(seconds: float) -> int:
    return int(round(seconds * 1e9))


@dataclass
class ExpressionBaseline:
    """EWMA mean and variance of one face's expression intensity."""

    ewma: float
    var: float

    def z_then_update(self, x: float, alpha: float, min_std: float) -> float:
        # The spike is measured against the history, so z uses the mean and variance
        # from before this sample; the sample joins the history afterwards.
        z = (x - self.ewma) / max(min_std, math.sqrt(self.var))
        delta = x - self.ewma
        self.ewma += alpha * delta
        self.var = (1.0 - alpha) * (self.var + alpha * delta * delta)
        return z


@dataclass
class GateTracker:
    """Hysteresis: open after conditions held for a while, close after they failed for a while."""

    is_open: bool = False
    held_since_ns: Optional[int] = None
    failed_since_ns: Optional[int] = None

    def update(self, t_ns: int, passed: bool, open_ns: int, close_ns: int) -> Optional[Tuple[str, int]]:
        """Returns (reason, streak_ns) when the gate changes on this frame."""
        if passed:
            self.failed_since_ns = None
            if self.held_since_ns is None:
                self.held_since_ns = t_ns
            held = t_ns - self.held_since_ns
            if not self.is_open and held >= open_ns:
                self.is_open = True
                return ("conditions_held", held)
        else:
            self.held_since_ns = None
            if self.failed_since_ns is None:
                self.failed_since_ns = t_ns
            failed = t_ns - self.failed_since_ns
            if self.is_open and failed >= close_ns:
                self.is_open = False
                return ("conditions_failed", failed)
        return None


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


class FusionState:
    """All temporal state of one stream; `process` is called once per frame in event-time order."""

    def __init__(self, cfg: FusionConfig, trace_level: str = "normal"):
        if trace_level not in TRACE_LEVELS:
            raise ValueError(f"trace level {trace_level!r} is not one of {', '.join(TRACE_LEVELS)}")
        if cfg.consecutive_frames < 1:
            raise ValueError("consecutive_frames must be at least 1")
        self.cfg = cfg
        self.trace_level = trace_level
        self.last_t_ns: Optional[int] = None
        self.last_fire_t_ns: Optional[int] = None
        self.gate = GateTracker()
        # Last observed quality gate; None until a quality observation has arrived.
        self.quality_ok: Optional[bool] = None
        self.expression: Dict[int, ExpressionBaseline] = {}
        self.last_yaw: Dict[int, Tuple[int, float]] = {}
        self.waves: Dict[Tuple[int, int], WaveDetector] = {}
        self.pending_reason: Optional[str] = None
        self.pending_count = 0
        self.pending_score = 0.0
        # Per frame: (t_ns, reasons whose signal was present), for the event-start look-back.
        self.lookback: Deque[Tuple[int, FrozenSet[str]]] = deque(
            maxlen=max(cfg.lookback_observations, cfg.lookback_default + 1, 1)
        )
        self.frames = 0
        self.out_of_order = 0
        self.invalid_observations = 0

    # ----------------------------------------------------------------- helpers
    def _level(self, name: str) -> bool:
        return TRACE_LEVELS[self.trace_level] >= TRACE_LEVELS[name]

    def _quality(self, fo: FrameObservations) -> Tuple[bool, str]:
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
                self.quality_ok = number >= 0.5
                return self.quality_ok, "observed"
        if self.quality_ok is not None:
            return self.quality_ok, "last_known"
        expected = "quality" in fo.observations or "quality" in fo.missing
        return (False, "unknown") if expected else (True, "not_expected")

    def _faces(self, fo: FrameObservations, records: List[TraceRecord]) -> Optional[List[Face]]:
        """The frame's faces, or None when the face observation is missing or unusable."""
        obs = _usable(fo, "face")
        if obs is None:
            return None
        problems = [p for p in (_face_problem(f) for f in obs.faces) if p]
        if problems:
            self.invalid_observations += 1
            if self._level("normal"):
                records.append(
                    {
                        "record_type": "invalid_observation",
                        "stream": fo.stream_id,
                        "frame_id": fo.frame_id,
                        "t_ns": fo.t_ns,
                        "source": "face",
                        "problems": problems,
                    }
                )
            return None
        return [_plain_face(f) for f in obs.faces]

    # -------------------------------------------------------------- candidates
    def _candidates(self, fo: FrameObservations, faces: Optional[List[Face]]) -> Dict[str, float]:
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
            baseline = self.expression.get(face.face_id)
            if baseline is None:
                # No history yet: the first sample only starts the baseline.
                self.expression[face.face_id] = ExpressionBaseline(face.expression, cfg.ewma_initial_var)
            else:
                z = baseline.z_then_update(face.expression, cfg.ewma_alpha, cfg.spike_min_std)
                if z > cfg.spike_z and face.expression > cfg.spike_min_expression:
                    offer("expression_spike", min(1.0, z / SPIKE_FULL_Z))

            previous = self.last_yaw.get(face.face_id)
            if previous is not None:
                dt_s = (t_ns - previous[0]) / 1e9
                if 0 < dt_s < cfg.head_turn_max_dt_sec:
                    speed = abs(face.yaw - previous[1]) / dt_s
                    if speed > cfg.head_turn_deg_per_sec:
                        offer("head_turn", min(1.0, speed / HEAD_TURN_FULL_DEG_PER_SEC))
            self.last_yaw[face.face_id] = (t_ns, face.yaw)

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
                detector = self.waves.get(key)
                if detector is None:
                    detector = self.waves[key] = WaveDetector.from_config(cfg)
                result = detector.update(t_ns, x)
                if result.waving:
                    offer("hand_wave", result.score)

        gesture = _usable(fo, "gesture")
        for hand in gesture.hands if gesture is not None else []:
            reason = GESTURE_REASONS.get(hand.gesture)
            confidence = _finite_or(hand.gesture_confidence, 0.0)
            if reason is not None and confidence > cfg.min_gesture_confidence:
                offer(reason, confidence)
        return found

    def _event_start(self, reason: str) -> int:
        """Event time of the first frame of the signal's current run (look-back)."""
        frames = list(self.lookback)  # oldest first; the last one is the current frame
        if reason != "head_turn":
            for i in range(len(frames) - 1, -1, -1):
                if reason not in frames[i][1]:
                    if i + 1 < len(frames):
                        return frames[i + 1][0]
                    break
        # A head turn has no clean onset, and a signal present through the whole
        # look-back has none in view: take a fixed number of frames back.
        index = max(0, len(frames) - 1 - self.cfg.lookback_default)
        return frames[index][0]

    def _reset_pending(self) -> None:
        self.pending_reason = None
        self.pending_count = 0
        self.pending_score = 0.0

    # ------------------------------------------------------------------- frame
    def process(self, fo: FrameObservations) -> Tuple[Optional[Trigger], List[TraceRecord]]:
        records: List[TraceRecord] = []
        t_ns = int(fo.t_ns)
        if self.last_t_ns is not None and t_ns <= self.last_t_ns:
            # Temporal state only moves forward in event time; an older frame is reported and dropped.
            self.out_of_order += 1
            if self._level("normal"):
                records.append(
                    {
                        "record_type": "out_of_order",
                        "stream": fo.stream_id,
                        "frame_id": fo.frame_id,
                        "t_ns": t_ns,
                        "last_t_ns": self.last_t_ns,
                        "behind_ms": round((self.last_t_ns - t_ns) / 1e6, 3),
                    }
                )
            return None, records
        self.last_t_ns = t_ns
        self.frames += 1
        cfg = self.cfg

        faces = self._faces(fo, records)
        quality_ok, quality_status = self._quality(fo)
        if faces is not None:
            passed, conditions = gate_conditions(faces, quality_ok, quality_status, cfg.gate)
            change = self.gate.update(t_ns, passed, _ns(cfg.gate.open_duration_sec), _ns(cfg.gate.close_duration_sec))
        else:
            # Face conditions unknown: the gate timers stand still.
            passed, conditions, change = False, {}, None
        if self._level("verbose"):
            records.append(
                {
                    "record_type": "gate_condition",
                    "stream": fo.stream_id,
                    "frame_id": fo.frame_id,
                    "t_ns": t_ns,
                    "face_observed": faces is not None,
                    "conditions": conditions,
                    "all_pass": passed if faces is not None else None,
                    "gate_open": self.gate.is_open,
                }
            )
        if change is not None and self._level("normal"):
            reason, streak_ns = change
            records.append(
                {
                    "record_type": "gate_change",
                    "stream": fo.stream_id,
                    "frame_id": fo.frame_id,
                    "t_ns": t_ns,
                    "gate_open": self.gate.is_open,
                    "reason": reason,
                    "duration_sec": round(streak_ns / 1e9, 6),
                }
            )

        candidates = self._candidates(fo, faces)
        self.lookback.append((t_ns, frozenset(candidates)))

        in_cooldown = self.last_fire_t_ns is not None and t_ns - self.last_fire_t_ns < _ns(cfg.cooldown_sec)
        trigger: Optional[Trigger] = None
        if in_cooldown:
            decision = "blocked_cooldown"
            self._reset_pending()
        elif not self.gate.is_open:
            decision = "blocked_gate"
            self._reset_pending()
        elif not candidates:
            decision = "no_trigger"
            self._reset_pending()
        else:
            order = {reason: i for i, reason in enumerate(cfg.reasons)}
            # Highest score wins; ties go to the reason listed first in the configuration.
            winner = max(candidates, key=lambda r: (candidates[r], -order[r]))
            if winner == self.pending_reason:
                self.pending_count += 1
                self.pending_score = max(self.pending_score, candidates[winner])
            else:
                self.pending_reason = winner
                self.pending_count = 1
                self.pending_score = candidates[winner]
            if self.pending_count >= cfg.consecutive_frames:
                decision = "triggered"
                trigger = Trigger(
                    stream_id=fo.stream_id,
                    frame_id=fo.frame_id,
                    t_ns=t_ns,
                    event_t_ns=self._event_start(winner),
                    reason=winner,
                    score=self.pending_score,
                    pre_sec=cfg.pre_sec,
                    post_sec=cfg.post_sec,
                    face_count=len(faces or []),
                    label=cfg.label,
                )
            else:
                decision = "consecutive_pending"

        interesting = bool(candidates) or decision not in ("no_trigger", "blocked_gate")
        if self._level("verbose") or (self._level("normal") and interesting):
            records.append(
                {
                    "record_type": "trigger_decision",
                    "stream": fo.stream_id,
                    "frame_id": fo.frame_id,
                    "t_ns": t_ns,
                    "gate_open": self.gate.is_open,
                    "in_cooldown": in_cooldown,
                    "candidates": [
                        {"reason": r, "score": s} for r, s in sorted(candidates.items(), key=lambda kv: -kv[1])
                    ],
                    "consecutive_count": self.pending_count,
                    "consecutive_required": cfg.consecutive_frames,
                    "decision": decision,
                    "ewma_values": {str(fid): b.ewma for fid, b in sorted(self.expression.items())},
                    "face_count": len(faces) if faces is not None else None,
                    "missing": list(fo.missing),
                }
            )

        self.outcome = (faces is not None, passed, conditions, self.gate.is_open, decision, tuple(candidates))  # gate_tally.Outcome
        if trigger is not None:
            self.last_fire_t_ns = t_ns
            self._reset_pending()
            if self._level("minimal"):
                records.append(
                    {
                        "record_type": "trigger_fire",
                        "stream": trigger.stream_id,
                        "frame_id": trigger.frame_id,
                        "t_ns": trigger.t_ns,
                        "event_t_ns": trigger.event_t_ns,
                        "reason": trigger.reason,
                        "score": trigger.score,
                        "pre_sec": trigger.pre_sec,
                        "post_sec": trigger.post_sec,
                        "face_count": trigger.face_count,
                        "label": trigger.label,
                    }
                )
        return trigger, records
