"""One camera's live figures and timeline, built from the trace records of its stream.

Rates are measured over event time between the cumulative `gate_tally` records
(one per second of event time), so a live run and a finished one read the same:
frames in per second from the advance of the camera's frame ids, frames analysed
per second from the frames fusion took, each extractor's effective rate from its
`frame_extract` records. Figures the trace does not carry are left out.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, List, Mapping, Optional

from facemoment.runtime.why import explain

# Rates are averaged over this much event time (the newest tallies).
RATE_WINDOW_NS = 5_000_000_000
# Candidate frames closer than this join one span on the timeline.
SPAN_GAP_NS = 500_000_000
# Spans kept per timeline row; a run longer than this keeps its newest spans.
MAX_SPANS = 600
MAX_TIMELINE_TRIGGERS = 600
# Fields other records may carry for a camera; shown when present.
OPTIONAL_FIGURES = ("occupancy", "effective_rates")


@dataclass
class _TallyPoint:
    t_ns: int
    frame_id: int
    frames: int
    extracted: Dict[str, int]
    tally: Dict[str, Any]


def _spans_add(spans: List[List[int]], t_ns: int, gap_ns: int = SPAN_GAP_NS) -> None:
    if spans and spans[-1][0] <= t_ns <= spans[-1][1] + gap_ns:
        spans[-1][1] = max(spans[-1][1], t_ns)
    else:
        spans.append([t_ns, t_ns])
        if len(spans) > MAX_SPANS:
            del spans[0]


def condition_label(name: str) -> str:
    """A gate condition's name as the run summary says it ("quality: blur", "faces")."""
    if name == "face_count":
        return "faces"
    if name == "face_observation":
        return "face observation"
    group, _, metric = name.partition(".")
    return f"{group}: {metric}" if metric else f"face: {name}"


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


@dataclass
class CameraState:
    name: str
    first_t_ns: Optional[int] = None
    last_t_ns: Optional[int] = None
    extracted: Counter = field(default_factory=Counter)
    drops: Counter = field(default_factory=Counter)
    tallies: Deque[_TallyPoint] = field(default_factory=lambda: deque(maxlen=16))
    gate_open: Optional[bool] = None
    gate_since_ns: Optional[int] = None
    gate_reason: Optional[str] = None
    gate_spans: List[List[int]] = field(default_factory=list)
    candidate_spans: Dict[str, List[List[int]]] = field(default_factory=dict)
    triggers: List[Dict[str, Any]] = field(default_factory=list)
    last_trigger: Optional[Dict[str, Any]] = None
    sends: Counter = field(default_factory=Counter)
    figures: Dict[str, Any] = field(default_factory=dict)

    def _see_time(self, t_ns: Any) -> None:
        if isinstance(t_ns, int) and not isinstance(t_ns, bool):
            self.first_t_ns = t_ns if self.first_t_ns is None else min(self.first_t_ns, t_ns)
            self.last_t_ns = t_ns if self.last_t_ns is None else max(self.last_t_ns, t_ns)
            if self.gate_open and self.gate_spans:
                self.gate_spans[-1][1] = max(self.gate_spans[-1][1], t_ns)

    def apply_trace(self, r: Mapping[str, Any]) -> None:
        """Take one trace record of this camera's stream."""
        kind = r.get("record_type")
        for name in OPTIONAL_FIGURES:
            if name in r and r[name] is not None:
                self.figures[name] = r[name]
        if kind == "frame_extract":
            self.extracted[str(r.get("source"))] += 1
        elif kind == "frame_drop":
            count = r.get("dropped_count")
            if not isinstance(count, int):
                count = len(r.get("dropped_frame_ids") or []) or 1
            self.drops[str(r.get("reason"))] += count
        elif kind == "gate_tally":
            self._apply_tally(r)
        elif kind == "gate_change":
            self._apply_gate(bool(r.get("gate_open")), r.get("t_ns"), r.get("reason"), change=True)
        elif kind == "trigger_decision":
            t_ns = r.get("t_ns")
            if self.gate_open is None and isinstance(r.get("gate_open"), bool):
                self._apply_gate(r["gate_open"], t_ns, None, change=False)
            self._see_time(t_ns)
            if isinstance(t_ns, int):
                for cand in r.get("candidates") or []:
                    if isinstance(cand, Mapping) and cand.get("reason"):
                        _spans_add(self.candidate_spans.setdefault(str(cand["reason"]), []), t_ns)
        elif kind == "camera_rates":
            # The CPU budget's schedule: the share of frames with someone there, each
            # extractor's effective rate.
            frames = r.get("frames")
            if isinstance(frames, int) and frames > 0:
                self.figures["occupancy"] = round(float(r.get("occupied_frames") or 0) / frames, 3)
            if isinstance(r.get("rates_fps"), Mapping):
                self.figures["effective_rates"] = dict(r["rates_fps"])
            self._see_time(r.get("t_ns"))
        elif kind in ("fps_summary", "trigger_fire"):
            self._see_time(r.get("t_ns"))

    def _apply_gate(self, is_open: bool, t_ns: Any, reason: Any, change: bool) -> None:
        t = t_ns if isinstance(t_ns, int) else self.last_t_ns
        if is_open and not self.gate_open and t is not None:
            self.gate_spans.append([t, t])
            if len(self.gate_spans) > MAX_SPANS:
                del self.gate_spans[0]
        elif not is_open and self.gate_open and self.gate_spans and t is not None:
            self.gate_spans[-1][1] = t
        elif change and not is_open and self.gate_open is None and t is not None and self.first_t_ns is not None:
            self.gate_spans.append([self.first_t_ns, t])  # a close as the first word: it was open before
        self.gate_open = is_open
        self.gate_since_ns = t
        self.gate_reason = str(reason) if reason is not None else None
        self._see_time(t_ns)

    def _apply_tally(self, r: Mapping[str, Any]) -> None:
        if not isinstance(r.get("frames"), int) or not isinstance(r.get("t_ns"), int):
            return
        self._see_time(r["t_ns"])
        point = _TallyPoint(r["t_ns"], int(r.get("frame_id") or 0), r["frames"], dict(self.extracted), dict(r))
        if self.tallies and point.frames < self.tallies[-1].frames:
            self.tallies.clear()  # a new run of the stream: start the window again
        self.tallies.append(point)

    def apply_trigger(self, row: Mapping[str, Any]) -> None:
        """Take one row of triggers.jsonl for this camera."""
        t_ns = row.get("event_t_ns")
        point = {"t_ns": t_ns, "reason": row.get("reason"), "key": row.get("key"), "score": row.get("score")}
        self.triggers.append(point)
        if len(self.triggers) > MAX_TIMELINE_TRIGGERS:
            del self.triggers[0]
        self.last_trigger = {**point, "written_at": row.get("written_at"), "message": row.get("message")}
        self._see_time(row.get("t_ns"))

    def apply_send(self, row: Mapping[str, Any]) -> None:
        self.sends[str(row.get("status"))] += 1

    # --- what the page shows -------------------------------------------------------

    def _rates(self) -> Dict[str, Any]:
        if len(self.tallies) < 2:
            return {}
        new = self.tallies[-1]
        old = next((p for p in self.tallies if new.t_ns - p.t_ns <= RATE_WINDOW_NS), self.tallies[0])
        if old is new:
            old = self.tallies[-2]
        span_s = (new.t_ns - old.t_ns) / 1e9
        if span_s <= 0:
            return {}
        return {
            "window_s": round(span_s, 3),
            "frames_in_per_s": round((new.frame_id - old.frame_id) / span_s, 2),
            "analysed_per_s": round((new.frames - old.frames) / span_s, 2),
            "extractor_rates": {
                name: round((new.extracted.get(name, 0) - old.extracted.get(name, 0)) / span_s, 2)
                for name in sorted(new.extracted)
            },
        }

    def _failing(self) -> List[Dict[str, Any]]:
        """The gate conditions that failed over the last second of event time, from the
        difference of the last two tallies: share of its frames and mean failing value."""
        out: List[Dict[str, Any]] = []
        if len(self.tallies) < 2:
            return out
        new, old = self.tallies[-1].tally, self.tallies[-2].tally
        frames = int(new.get("frames") or 0) - int(old.get("frames") or 0)
        if frames <= 0:
            return out
        old_conditions = old.get("conditions") or {}
        for name, c in (new.get("conditions") or {}).items():
            if not isinstance(c, Mapping):
                continue
            before = old_conditions.get(name) or {}
            failed = int(c.get("failed") or 0) - int(before.get("failed") or 0)
            if failed <= 0:
                continue
            value: Optional[float] = None
            now_typ, old_typ = _number(c.get("typical")), _number(before.get("typical"))
            if now_typ is not None:
                # typical is a running mean over the failing frames: undo it for the last window.
                value = (now_typ * int(c.get("failed") or 0) - (old_typ or 0.0) * int(before.get("failed") or 0)) / failed
                value = round(value, 3)
            out.append({"name": name, "label": condition_label(name), "value": value, "op": c.get("op"),
                        "threshold": c.get("threshold"), "share": round(failed / frames, 3)})
        out.sort(key=lambda item: -item["share"])
        return out

    def status(self) -> Dict[str, Any]:
        tally = self.tallies[-1].tally if self.tallies else None
        gate: Dict[str, Any] = {"open": self.gate_open, "since_t_ns": self.gate_since_ns, "reason": self.gate_reason}
        if self.gate_open is not True:
            gate["failing"] = self._failing()
        status: Dict[str, Any] = {
            "camera": self.name,
            "t_ns": self.last_t_ns,
            "frames_fused": tally.get("frames") if tally else None,
            **self._rates(),
            "drops": dict(self.drops),
            "gate": gate,
            "last_trigger": self.last_trigger,
            "trig_sends": {k: self.sends.get(k, 0) for k in ("sent", "unheard", "dropped")} if self.sends else None,
            "timeline": {
                "start_ns": self.first_t_ns,
                "end_ns": self.last_t_ns,
                "gate": [list(s) for s in self.gate_spans],
                "candidates": {k: [list(s) for s in v] for k, v in sorted(self.candidate_spans.items())},
                "triggers": list(self.triggers),
            },
            "why": explain(tally) if tally else [],
        }
        for name, value in self.figures.items():
            status[name] = value
        return status
