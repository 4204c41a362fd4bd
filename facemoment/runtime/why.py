""""Why no highlight": the gate tallies of a trace turned into sentences.

Shared by the run summary and `facemoment trace summary`, so both say the same
thing in the same words, e.g. "quality: brightness 25 < 50 on 100% of frames".
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping

# Failing shares below this are left out: they held nothing back worth a line.
MIN_SHARE = 0.01


def latest_tallies(records: Iterable[Mapping[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """The last (largest) cumulative gate_tally of each stream."""
    out: Dict[str, Dict[str, Any]] = {}
    for r in records:
        if r.get("record_type") != "gate_tally" or not isinstance(r.get("frames"), int):
            continue
        stream = str(r.get("stream", "-"))
        if stream not in out or r["frames"] >= out[stream]["frames"]:
            out[stream] = dict(r)
    return out


def _num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if abs(value) >= 100 or float(value).is_integer():
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _condition_line(name: str, c: Mapping[str, Any], frames: int) -> str:
    failed = int(c.get("failed") or 0)
    share = f"on {100.0 * failed / frames:.0f}% of frames ({failed} of {frames})"
    if name == "face_observation":
        return f"no face observation (extractor missing or failed) {share}"
    if name == "quality.unobserved":
        return f"quality: failed with no quality observation of its own ({c.get('threshold')}) {share}"
    if name == "inside_frame":
        return f"face: not inside the frame {share}"
    group, _, metric = name.partition(".")
    label = f"{group}: {metric}" if metric else ("faces" if name == "face_count" else f"face: {name}")
    typical = c.get("typical")
    value = _num(typical) if typical is not None else "?"
    return f"{label} {value} {c.get('op', '')} {_num(c.get('threshold'))} {share}"


def explain(tally: Mapping[str, Any]) -> List[str]:
    """Sentences for one stream's tally, most limiting first."""
    frames = int(tally.get("frames") or 0)
    if frames <= 0:
        return ["no frames were fused"]
    lines: List[str] = []
    open_frames = int(tally.get("gate_open_frames") or 0)
    lines.append(f"{frames} frames fused; the gate was open on {100.0 * open_frames / frames:.0f}% of them")
    conditions: Mapping[str, Mapping[str, Any]] = tally.get("conditions") or {}
    shown = [(n, c) for n, c in conditions.items() if (c.get("failed") or 0) >= max(1, MIN_SHARE * frames)]
    if shown:
        lines.append("gate conditions that failed (value: mean over the failing frames):")
        for name, c in sorted(shown, key=lambda nc: -int(nc[1].get("failed") or 0)):
            lines.append("  " + _condition_line(name, c, frames))
    waiting = int(tally.get("passed_while_closed") or 0)
    if waiting:
        lines.append(f"all conditions held but not yet long enough to open the gate on {waiting} frames")
    decisions: Mapping[str, int] = tally.get("decisions") or {}
    if decisions.get("blocked_cooldown"):
        lines.append(f"cooldown after a trigger blocked {decisions['blocked_cooldown']} frames")
    if decisions.get("consecutive_pending"):
        lines.append(
            f"a candidate waited for confirmation on the next frames {decisions['consecutive_pending']} times "
            "(consecutive_pending)"
        )
    if decisions.get("no_trigger"):
        lines.append(f"gate open but no candidate moment on {decisions['no_trigger']} frames")
    blocked: Mapping[str, int] = tally.get("blocked_candidates") or {}
    if blocked:
        lines.append(
            "candidates held back by the closed gate or the cooldown: "
            + ", ".join(f"{reason} on {n} frames" for reason, n in blocked.items())
        )
    return lines


def why_lines(tallies: Mapping[str, Mapping[str, Any]], triggers: int) -> List[str]:
    """The summary's block: a title, then each stream's sentences."""
    if not tallies:
        return []
    title = "why no highlight:" if triggers == 0 else "what held frames back:"
    lines = [title]
    for stream, tally in sorted(tallies.items()):
        body = explain(tally)
        if len(tallies) > 1:
            lines.append(f"  [{stream}]")
        lines.extend("  " + line for line in body)
    return lines
