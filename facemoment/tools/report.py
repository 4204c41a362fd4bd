"""`facemoment report`: a trace as a timeline picture (PNG) or a page (HTML).

The x axis is event time in seconds from each stream's earliest frame in the trace
(a minimal trace starts at its first trigger or fps_summary; earlier clip windows go
negative). Records with an event time are placed by it (`t_ns` of trigger_decision,
gate_change and trigger_fire, `expected_ns` of sync_delay). Records with only a
`frame_id` (timing, frame_drop) are placed through the frame_id → t_ns map that the
timestamped records give: interpolated between known frames, extrapolated past
them at the mean frame interval. If a stream has frame-only records but fewer than
two timestamped frames (nothing to map them with), the whole figure uses frame ids
on the x axis instead, and trigger windows (which are in seconds) are not drawn.

Panels, top to bottom: candidate scores per reason (and the expression EWMA),
gate state and cooldown, triggers with their clip windows, drops, sync delays,
and processing time per component. Triggers are also drawn as faint dashed lines
on every panel, so causes and effects line up.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from facemoment.tools.trace_tools import (
    TOTAL_COMPONENTS,
    ReadStats,
    SummaryBuilder,
    TraceFileError,
    iter_trace,
    number,
    read_line,
    summary_tables,
)

OUTPUT_SUFFIXES = (".png", ".html", ".htm")
FIGURE_WIDTH_IN = 14.0
NO_DATA_COLOR = "0.55"
EMPTY_PANEL_IN = 0.6
SPARSE_POINTS = 60
TRIGGER_LANES = 3  # overlapping windows of one reason alternate between sub-rows
# tab10 without its red, which marks slow frames and thresholds.
SERIES_COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:gray",
                 "tab:olive", "tab:cyan"]
DROP_COLORS = {"timeout": "tab:red", "backpressure": "tab:orange", "queue_full": "tab:purple"}

Record = Dict[str, Any]


def _int(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _stream(record: Record) -> str:
    stream = record.get("stream")
    return stream if isinstance(stream, str) and stream else "-"


@dataclass
class Decision:
    stream: str
    frame_id: Optional[int]
    t_ns: int
    gate_open: Optional[bool]
    in_cooldown: Optional[bool]
    candidates: Dict[str, float]
    ewma: Dict[str, float]


@dataclass
class Fire:
    stream: str
    frame_id: Optional[int]
    t_ns: Optional[int]
    event_t_ns: Optional[int]
    reason: str
    score: Optional[float]
    pre_sec: Optional[float]
    post_sec: Optional[float]


@dataclass
class Timeline:
    """What the report plots, gathered in one pass over the trace."""

    stream_filter: Optional[str] = None
    # stream -> frame_id -> t_ns, from every record that has both.
    frame_times: Dict[str, Dict[int, int]] = field(default_factory=dict)
    frame_only_streams: Set[str] = field(default_factory=set)
    first_frame: Dict[str, int] = field(default_factory=dict)
    streams: Set[str] = field(default_factory=set)
    decisions: List[Decision] = field(default_factory=list)
    gate_changes: List[Tuple[str, Optional[int], Optional[int], bool]] = field(default_factory=list)
    fires: List[Fire] = field(default_factory=list)
    # (stream, label, frame ids)
    drops: List[Tuple[str, str, List[int]]] = field(default_factory=list)
    # (stream, frame_id, expected_ns, delay_ms, extractor, late)
    syncs: List[Tuple[str, Optional[int], Optional[int], float, str, bool]] = field(default_factory=list)
    # (stream, component) -> frame ids, ms, slow flags
    timings: Dict[Tuple[str, str], Tuple[List[int], List[float], List[bool]]] = field(default_factory=dict)
    thresholds: Set[float] = field(default_factory=set)

    def add(self, record: Record) -> None:
        stream = _stream(record)
        if self.stream_filter is not None and stream != self.stream_filter:
            return
        kind = record["record_type"]
        frame_id = _int(record.get("frame_id"))
        t_ns = _int(record.get("expected_ns") if kind == "sync_delay" else record.get("t_ns"))
        if frame_id is not None or t_ns is not None:
            self.streams.add(stream)
        if frame_id is not None and frame_id < self.first_frame.get(stream, frame_id + 1):
            self.first_frame[stream] = frame_id
        if frame_id is not None and t_ns is not None:
            self.frame_times.setdefault(stream, {})[frame_id] = t_ns
        handler = getattr(self, f"_on_{kind}", None)
        if handler is not None:
            handler(record, stream, frame_id, t_ns)

    def _on_trigger_decision(self, r: Record, stream: str, frame_id: Optional[int], t_ns: Optional[int]) -> None:
        if t_ns is None:
            return
        candidates: Dict[str, float] = {}
        for c in r.get("candidates") or []:
            if isinstance(c, dict) and isinstance(c.get("reason"), str) and number(c.get("score")) is not None:
                candidates[c["reason"]] = number(c["score"])  # type: ignore[assignment]
        ewma_raw = r.get("ewma_values")
        ewma = {
            str(k): number(v) for k, v in (ewma_raw.items() if isinstance(ewma_raw, dict) else []) if number(v) is not None
        }
        gate, cooldown = r.get("gate_open"), r.get("in_cooldown")
        self.decisions.append(
            Decision(
                stream,
                frame_id,
                t_ns,
                gate if isinstance(gate, bool) else None,
                cooldown if isinstance(cooldown, bool) else None,
                candidates,
                ewma,  # type: ignore[arg-type]
            )
        )

    def _on_gate_change(self, r: Record, stream: str, frame_id: Optional[int], t_ns: Optional[int]) -> None:
        if isinstance(r.get("gate_open"), bool):
            self._need_frame_map(stream, frame_id, t_ns)
            self.gate_changes.append((stream, frame_id, t_ns, r["gate_open"]))

    def _on_trigger_fire(self, r: Record, stream: str, frame_id: Optional[int], t_ns: Optional[int]) -> None:
        self._need_frame_map(stream, frame_id, t_ns)
        reason = r.get("reason")
        self.fires.append(
            Fire(
                stream,
                frame_id,
                t_ns,
                _int(r.get("event_t_ns")),
                reason if isinstance(reason, str) and reason else "unknown",
                number(r.get("score")),
                number(r.get("pre_sec")),
                number(r.get("post_sec")),
            )
        )

    def _on_frame_drop(self, r: Record, stream: str, frame_id: Optional[int], t_ns: Optional[int]) -> None:
        ids = [i for i in (r.get("dropped_frame_ids") or []) if _int(i) is not None] if isinstance(
            r.get("dropped_frame_ids"), list
        ) else []
        if not ids:
            return
        reason = r.get("reason") if isinstance(r.get("reason"), str) else "unknown"
        extractors = [e for e in (r.get("extractors") or []) if isinstance(e, str)] if isinstance(
            r.get("extractors"), list
        ) else []
        self.frame_only_streams.add(stream)
        self.streams.add(stream)
        for label in [f"{reason}: {e}" for e in extractors] or [reason]:
            self.drops.append((stream, label, ids))

    def _on_sync_delay(self, r: Record, stream: str, frame_id: Optional[int], t_ns: Optional[int]) -> None:
        delay = number(r.get("delay_ms"))
        names = r.get("waiting_for")
        if delay is None or not isinstance(names, list):
            return
        self._need_frame_map(stream, frame_id, t_ns)
        for name in names:
            if isinstance(name, str):
                self.syncs.append((stream, frame_id, t_ns, delay, name, r.get("late") is True))

    def _on_timing(self, r: Record, stream: str, frame_id: Optional[int], t_ns: Optional[int]) -> None:
        ms = number(r.get("processing_ms"))
        component = r.get("component")
        if ms is None or frame_id is None or not isinstance(component, str):
            return
        self.frame_only_streams.add(stream)
        ids, values, slow = self.timings.setdefault((stream, component), ([], [], []))
        ids.append(frame_id)
        values.append(ms)
        slow.append(r.get("is_slow") is True)
        threshold = number(r.get("threshold_ms"))
        if threshold is not None:
            self.thresholds.add(threshold)

    def _need_frame_map(self, stream: str, frame_id: Optional[int], t_ns: Optional[int]) -> None:
        if t_ns is None and frame_id is not None:
            self.frame_only_streams.add(stream)


class Clock:
    """Maps (stream, frame_id or t_ns) to the x axis: seconds, or frame ids as a fallback."""

    def __init__(self, timeline: Timeline):
        self.known: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
        for stream, mapping in timeline.frame_times.items():
            fids = np.array(sorted(mapping), dtype=float)
            self.known[stream] = (fids, np.array([mapping[int(f)] for f in fids], dtype=float))
        self.seconds = all(len(self.known.get(s, ((), ()))[0]) >= 2 for s in timeline.frame_only_streams)
        # Zero is the earliest frame in the trace, timestamped or placed through the map.
        self.origin: Dict[str, float] = {}
        for stream, (fids, ts) in self.known.items():
            first = timeline.first_frame.get(stream)
            earliest = float(ts.min())
            if first is not None and len(fids) >= 2:
                earliest = min(earliest, float(_interp_extrapolate([first], fids, ts)[0]))
            self.origin[stream] = earliest

    @property
    def label(self) -> str:
        return "event time (s) from the first frame" if self.seconds else "frame id"

    def from_t(self, stream: str, t_ns: Sequence[float]) -> np.ndarray:
        """Event times to x; NaN where there is no way to place them."""
        t = np.asarray(t_ns, dtype=float)
        if not self.seconds or stream not in self.origin:
            return np.full(t.shape, np.nan)
        return (t - self.origin[stream]) / 1e9

    def from_frames(self, stream: str, frame_ids: Sequence[float]) -> np.ndarray:
        f = np.asarray(frame_ids, dtype=float)
        if not self.seconds:
            return f
        if stream not in self.known:
            return np.full(f.shape, np.nan)
        fids, ts = self.known[stream]
        return (_interp_extrapolate(f, fids, ts) - self.origin[stream]) / 1e9

    def place(self, stream: str, frame_id: Optional[int], t_ns: Optional[int]) -> float:
        if self.seconds and t_ns is not None:
            return float(self.from_t(stream, [t_ns])[0])
        if frame_id is not None:
            return float(self.from_frames(stream, [frame_id])[0])
        return float("nan")

    def frame_axis(self, stream: str) -> Optional[Tuple[Callable, Callable]]:
        """seconds <-> frame id for a secondary axis, when the map is monotonic."""
        if not self.seconds or stream not in self.known:
            return None
        fids, ts = self.known[stream]
        if len(fids) < 2 or np.any(np.diff(ts) <= 0):
            return None
        secs = (ts - self.origin[stream]) / 1e9
        return (lambda x: _interp_extrapolate(x, secs, fids), lambda f: _interp_extrapolate(f, fids, secs))


def _interp_extrapolate(x: Any, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if len(xp) == 1:
        return np.full(x.shape, fp[0])
    slope = (fp[-1] - fp[0]) / (xp[-1] - xp[0])
    y = np.interp(x, xp, fp)
    y = np.where(x < xp[0], fp[0] + (x - xp[0]) * slope, y)
    return np.where(x > xp[-1], fp[-1] + (x - xp[-1]) * slope, y)


def read_timeline(path: str | Path, stream: Optional[str] = None) -> Tuple[Timeline, Dict[str, Any]]:
    """One pass over the trace: the plot data and the summary (of the whole file)."""
    read = ReadStats()
    builder = SummaryBuilder()
    timeline = Timeline(stream_filter=stream)
    for record in iter_trace(path, read):
        builder.add(record)
        timeline.add(record)
    return timeline, builder.result(path, read)


# ---------------------------------------------------------------- figure


def _no_data(ax: Any, what: str) -> None:
    ax.text(0.5, 0.5, f"no data ({what})", transform=ax.transAxes, ha="center", va="center",
            color=NO_DATA_COLOR, fontsize=11)
    ax.set_yticks([])


def _legend(ax: Any) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False, borderaxespad=0.0)


def _suffix(stream: str, many: bool) -> str:
    return f" [{stream}]" if many else ""


def _reason_colors(timeline: Timeline) -> Dict[str, Any]:
    import matplotlib

    reasons = sorted({r for d in timeline.decisions for r in d.candidates} | {f.reason for f in timeline.fires})
    palette = matplotlib.colormaps["tab10"]
    return {reason: palette(i % 10) for i, reason in enumerate(reasons)}


def _plot_signals(ax: Any, timeline: Timeline, clock: Clock, colors: Dict[str, Any], many: bool) -> bool:
    drew = False
    styles = ["--", ":", "-."]
    for stream in sorted({d.stream for d in timeline.decisions}):
        rows = sorted((d for d in timeline.decisions if d.stream == stream), key=lambda d: d.t_ns)
        x = _decision_x(clock, stream, rows)
        for reason in sorted({r for d in rows for r in d.candidates}):
            y = np.array([d.candidates.get(reason, np.nan) for d in rows])
            ax.plot(x, y, "-", marker="o", ms=2.5, lw=1.3, color=colors[reason], label=reason + _suffix(stream, many))
            drew = True
        for i, face in enumerate(sorted({k for d in rows for k in d.ewma})):
            y = np.array([d.ewma.get(face, np.nan) for d in rows])
            ax.plot(x, y, styles[i % len(styles)], lw=1.1, color="0.35",
                    label=f"expression EWMA face {face}" + _suffix(stream, many))
            drew = True
    if drew:
        ax.set_ylim(-0.03, 1.08)
        ax.set_ylabel("candidate score")
    else:
        _no_data(ax, "no trigger_decision candidates")
    ax.set_title("signals: candidate scores per reason", loc="left", fontsize=10)
    return drew


def _plot_gate(ax: Any, timeline: Timeline, clock: Clock, many: bool) -> bool:
    drew = False
    for stream in sorted({d.stream for d in timeline.decisions if d.gate_open is not None}):
        rows = sorted((d for d in timeline.decisions if d.stream == stream and d.gate_open is not None),
                      key=lambda d: d.t_ns)
        x = _decision_x(clock, stream, rows)
        ax.step(x, [1.0 if d.gate_open else 0.0 for d in rows], where="post", color="tab:green", lw=1.6,
                label="gate open" + _suffix(stream, many))
        cooldown = np.array([1.0 if d.in_cooldown else 0.0 for d in rows])
        if cooldown.any():
            ax.fill_between(x, 0, cooldown, step="post", color="tab:orange", alpha=0.2, lw=0,
                            label="in cooldown" + _suffix(stream, many))
        drew = True
    changes = [(s, clock.place(s, f, t), is_open) for s, f, t, is_open in timeline.gate_changes]
    if changes and not drew:
        # No decisions (e.g. a minimal trace with gate changes): the step line from the changes alone.
        for stream in sorted({s for s, _, _ in changes}):
            pts = sorted((x, o) for s, x, o in changes if s == stream and np.isfinite(x))
            if pts:
                xs = [pts[0][0]] + [x for x, _ in pts]
                ys = [0.0 if pts[0][1] else 1.0] + [1.0 if o else 0.0 for _, o in pts]
                ax.step(xs, ys, where="post", color="tab:green", lw=1.6, label="gate (from changes)" + _suffix(stream, many))
    for marker, state, label in (("^", True, "gate opened"), ("v", False, "gate closed")):
        xs = [x for _, x, o in changes if o is state and np.isfinite(x)]
        if xs:
            ax.plot(xs, [1.0 if state else 0.0] * len(xs), marker, color="darkgreen", ms=7, ls="none", label=label)
            drew = True
    if drew:
        ax.set_yticks([0, 1], ["closed", "open"])
        ax.set_ylim(-0.2, 1.2)
    else:
        _no_data(ax, "no gate records")
    ax.set_title("gate", loc="left", fontsize=10)
    return drew


def _decision_x(clock: Clock, stream: str, rows: List[Decision]) -> np.ndarray:
    if clock.seconds:
        return clock.from_t(stream, [d.t_ns for d in rows])
    return np.array([np.nan if d.frame_id is None else float(d.frame_id) for d in rows])


def _plot_triggers(ax: Any, timeline: Timeline, clock: Clock, colors: Dict[str, Any], many: bool) -> List[Tuple[float, Any]]:
    """Returns (x, color) of each fire, for the marks on the other panels."""
    reasons = sorted({f.reason for f in timeline.fires})
    marks: List[Tuple[float, Any]] = []
    lane_of: Dict[str, int] = {}
    for fire in sorted(timeline.fires, key=lambda f: (f.t_ns or 0, f.frame_id or 0)):
        x = clock.place(fire.stream, fire.frame_id, fire.t_ns)
        if not np.isfinite(x):
            continue
        row = reasons.index(fire.reason)
        lane = lane_of.get(fire.reason, 0)
        lane_of[fire.reason] = (lane + 1) % TRIGGER_LANES
        y = row + (lane - (TRIGGER_LANES - 1) / 2) * 0.22
        color = colors[fire.reason]
        if clock.seconds and fire.event_t_ns is not None and fire.pre_sec is not None and fire.post_sec is not None:
            event_x = float(clock.from_t(fire.stream, [fire.event_t_ns])[0])
            ax.barh(y, fire.pre_sec + fire.post_sec, left=event_x - fire.pre_sec, height=0.18, color=color,
                    alpha=0.3, edgecolor=color)
            ax.plot([event_x], [y], "o", color=color, ms=4)
        ax.plot([x, x], [row - 0.4, row + 0.4], "-", color=color, lw=2.2)
        if fire.score is not None:
            ax.annotate(f"{fire.score:.2f}", (x, row + 0.4), xytext=(2, -1), textcoords="offset points",
                        fontsize=7, va="top", color=color)
        marks.append((x, color))
    if marks:
        # Neutral legend entries: colours belong to reasons, shapes to what was drawn.
        ax.plot([], [], "-", color="0.3", lw=2.2, label="fired")
        ax.plot([], [], "o", color="0.3", ms=4, label="event start")
        if clock.seconds:
            ax.fill_between([], [], color="0.3", alpha=0.3, label="clip window (event -pre .. +post)")
        ax.set_yticks(range(len(reasons)), reasons)
        ax.set_ylim(len(reasons) - 0.4, -0.6)
    else:
        _no_data(ax, "no trigger_fire records")
    ax.set_title("triggers (score at each firing)", loc="left", fontsize=10)
    return marks


def _plot_drops(ax: Any, timeline: Timeline, clock: Clock, many: bool) -> bool:
    labels = sorted({(label, stream) for stream, label, _ in timeline.drops})
    for row, (label, stream) in enumerate(labels):
        ids = [i for s, l, frame_ids in timeline.drops if s == stream and l == label for i in frame_ids]
        x = clock.from_frames(stream, ids)
        color = DROP_COLORS.get(label.split(":")[0], "0.3")
        ax.plot(x, np.full(len(x), row), "|", color=color, ms=10, mew=1.5, ls="none",
                label=f"{label}{_suffix(stream, many)}: {len(ids)} frames")
    if labels:
        ax.set_yticks(range(len(labels)), [label + _suffix(stream, many) for label, stream in labels])
        ax.set_ylim(len(labels) - 0.4, -0.6)  # first label on top, as in the legend
    else:
        _no_data(ax, "no frame_drop records")
    ax.set_title("frame drops by reason", loc="left", fontsize=10)
    return bool(labels)


def _plot_sync(ax: Any, timeline: Timeline, clock: Clock, many: bool) -> bool:
    keys = sorted({(stream, name) for stream, _, _, _, name, _ in timeline.syncs})
    for i, (stream, name) in enumerate(keys):
        # One record lists every missing extractor with one delay, so their markers
        # coincide: rings shrink per extractor to keep all of them visible.
        size = max(3.0, 9.0 - 1.5 * i)
        for late, marker, what in ((False, "o", "missing at fusion"), (True, "x", "late")):
            rows = [r for r in timeline.syncs if r[0] == stream and r[4] == name and r[5] is late]
            if rows:
                x = [clock.place(stream, fid, t) for _, fid, t, _, _, _ in rows]
                ax.plot(x, [r[3] for r in rows], marker, color=SERIES_COLORS[i % len(SERIES_COLORS)], ms=size,
                        mew=1.2, ls="none", mfc="none" if not late else None,
                        label=f"{name} {what}{_suffix(stream, many)}: {len(rows)}")
    if keys:
        ax.set_ylabel("delay (ms)")
    else:
        _no_data(ax, "no sync_delay records")
    ax.set_title("sync delays by extractor", loc="left", fontsize=10)
    return bool(keys)


def _plot_timing(ax: Any, timeline: Timeline, clock: Clock, many: bool) -> bool:
    slow_x: List[float] = []
    slow_y: List[float] = []
    for i, ((stream, component), (ids, values, slow)) in enumerate(sorted(timeline.timings.items())):
        order = np.argsort(ids, kind="stable")
        x = clock.from_frames(stream, np.asarray(ids)[order])
        y = np.asarray(values)[order]
        # Markers only where points are few enough to tell apart (and a single point shows at all).
        ax.plot(x, y, "-", marker="o" if len(y) <= SPARSE_POINTS else None, ms=3, lw=0.9, alpha=0.85,
                color=SERIES_COLORS[i % len(SERIES_COLORS)],
                label=f"{component}{_suffix(stream, many)}{', per-frame total' if component in TOTAL_COMPONENTS else ''}"
                f" (avg {np.mean(y):.1f} ms)")
        flags = np.asarray(slow)[order]
        slow_x.extend(x[flags])
        slow_y.extend(y[flags])
    if slow_x:
        ax.plot(slow_x, slow_y, "x", color="red", ms=3.5, mew=0.8, alpha=0.7, ls="none",
                label=f"slow (is_slow): {len(slow_x)}")
    for threshold in sorted(timeline.thresholds):
        ax.axhline(threshold, color="red", ls=":", lw=1, label=f"threshold {threshold:g} ms")
    if timeline.timings:
        ax.set_ylabel("processing (ms)")
        ax.set_ylim(bottom=0)
    else:
        _no_data(ax, "no timing records")
    ax.set_title("processing time per component", loc="left", fontsize=10)
    return bool(timeline.timings)


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def title_for(path: str | Path, summary: Dict[str, Any], timeline: Timeline) -> str:
    read = summary["read"]
    drops = sum(d["frames"] for d in summary["drops"]["by_reason"].values())
    syncs = sum(s["total"] for s in summary["sync_delays"].values())
    triggers = sum(t["count"] for t in summary["triggers"].values())
    # Frames fused: one decision each; a minimal trace only has the fps_summary counts.
    frames = sum(s["decisions"] or s["frames_fused"] or 0 for s in summary["streams"].values())
    counts = [
        _count(read["records"], "record"),
        _count(frames, "frame") + " fused",
        _count(triggers, "trigger"),
        _count(drops, "dropped frame"),
        _count(syncs, "sync delay"),
        _count(summary["gate"]["changes"], "gate change"),
    ]
    if read["bad_lines"]:
        counts.append(_count(read["bad_lines"], "unreadable line"))
    text = f"{Path(path).name}: " + ", ".join(counts)
    details = []
    if summary["bottleneck"]:
        top = next(c for c in summary["components"] if c["bottleneck"])
        details.append(f"bottleneck: {top['component']} (avg {top['avg_ms']:.1f} ms)")
    if timeline.stream_filter:
        details.append(f"stream {timeline.stream_filter}")
    return text + ("\n" + ", ".join(details) if details else "")


def build_figure(timeline: Timeline, summary: Dict[str, Any], path: str | Path) -> Any:
    """The timeline figure (a matplotlib Figure on the Agg canvas; no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    clock = Clock(timeline)
    many = len(timeline.streams) > 1
    colors = _reason_colors(timeline)
    n_reasons = len({f.reason for f in timeline.fires})
    n_drop_rows = len({(s, label) for s, label, _ in timeline.drops})
    # Empty panels shrink to a strip that just says "no data".
    heights = [
        3.0 if any(d.candidates or d.ewma for d in timeline.decisions) else EMPTY_PANEL_IN,
        1.2 if timeline.decisions or timeline.gate_changes else EMPTY_PANEL_IN,
        0.55 * n_reasons + 0.5 if n_reasons else EMPTY_PANEL_IN,
        0.4 * n_drop_rows + 0.5 if n_drop_rows else EMPTY_PANEL_IN,
        1.8 if timeline.syncs else EMPTY_PANEL_IN,
        2.4 if timeline.timings else EMPTY_PANEL_IN,
    ]
    fig = Figure(figsize=(FIGURE_WIDTH_IN, sum(heights) + 1.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(heights), 1, sharex=True, gridspec_kw={"height_ratios": heights})
    signals, gate, triggers, drops, sync, timing = axes
    _plot_signals(signals, timeline, clock, colors, many)
    _plot_gate(gate, timeline, clock, many)
    marks = _plot_triggers(triggers, timeline, clock, colors, many)
    _plot_drops(drops, timeline, clock, many)
    _plot_sync(sync, timeline, clock, many)
    _plot_timing(timing, timeline, clock, many)
    for ax in axes:
        if ax is not triggers:
            for x, color in marks:
                ax.axvline(x, color=color, ls="--", lw=0.8, alpha=0.5, zorder=1.6)
        ax.grid(True, axis="x", color="0.9", lw=0.6)
        _legend(ax)
    timing.set_xlabel(clock.label)
    if len(timeline.streams) == 1:
        functions = clock.frame_axis(next(iter(timeline.streams)))
        if functions is not None:
            top = signals.secondary_xaxis("top", functions=functions)
            top.set_xlabel("frame id", fontsize=8)
            top.tick_params(labelsize=8)
    fig.suptitle(title_for(path, summary, timeline), fontsize=11, x=0.01, ha="left")
    return fig


# ---------------------------------------------------------------- outputs


def figure_png(fig: Any, dpi: int) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    return buffer.getvalue()


def html_page(path: str | Path, summary: Dict[str, Any], png: bytes) -> str:
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>FaceMoment report: {html.escape(Path(path).name)}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em;color:#222}"
        "img{max-width:100%;border:1px solid #ddd}"
        "table{border-collapse:collapse;margin:0.3em 0 1em}"
        "th,td{border:1px solid #ccc;padding:2px 8px;font-size:13px}"
        "td.num{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f3f3}"
        ".note{color:#666;font-size:12px}</style></head><body>",
        f"<h1>FaceMoment report: {html.escape(str(path))}</h1>",
        f"<p>{html.escape(read_line(summary))}</p>",
        f'<img alt="timeline of {html.escape(Path(path).name)}" src="data:image/png;base64,'
        f'{base64.b64encode(png).decode("ascii")}">',
    ]
    for table in summary_tables(summary):
        parts.append(f"<h2>{html.escape(table.title)}</h2>")
        if not table.rows:
            parts.append("<p>none</p>")
            continue
        parts.append('<table class="summary"><tr>' + "".join(f"<th>{html.escape(h)}</th>" for h in table.headers) + "</tr>")
        for row in table.rows:
            cells = "".join(
                f'<td class="num">{_html_value(v)}</td>' if number(v) is not None else f"<td>{_html_value(v)}</td>"
                for v in row
            )
            parts.append(f"<tr>{cells}</tr>")
        parts.append("</table>")
        if table.note:
            parts.append(f'<p class="note">{html.escape(table.note)}</p>')
    parts.append("</body></html>")
    return "\n".join(parts)


def _html_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


def write_report(trace: str | Path, output: str | Path, stream: Optional[str] = None, dpi: int = 100) -> Dict[str, Any]:
    """Write the timeline as PNG, or as an HTML page with the summary tables; returns the summary.

    Raises TraceFileError for an unreadable trace and ValueError for an unknown output suffix.
    """
    out = Path(output)
    suffix = out.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise ValueError(f"{out}: the output must end in .png or .html")
    timeline, summary = read_timeline(trace, stream)
    png = figure_png(build_figure(timeline, summary, trace), dpi)
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".png":
        out.write_bytes(png)
    else:
        out.write_text(html_page(trace, summary, png), encoding="utf-8")
    return summary


def cmd_report(args: argparse.Namespace) -> int:
    output = Path(args.output) if args.output else Path(args.trace).with_name("report.png")
    try:
        summary = write_report(args.trace, output, stream=args.stream, dpi=args.dpi)
    except (TraceFileError, ValueError) as exc:
        print(f"facemoment report: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"facemoment report: cannot write {output}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"{output}  ({read_line(summary)})")
    return 0


def add_report_args(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> argparse.ArgumentParser:
    """Register `report` on a CLI's sub-command parsers."""
    p = subparsers.add_parser(
        "report",
        help="a timeline plot (PNG) or page (HTML) of a trace",
        description="Plot a trace.jsonl as a timeline: candidate scores, gate, triggers with their clip "
        "windows, drops, sync delays and processing time. .html embeds the plot and the trace summary.",
    )
    p.add_argument("trace", help="a trace.jsonl file")
    p.add_argument("-o", "--output", help="report.png or report.html (default: report.png next to the trace)")
    p.add_argument("--stream", help="plot only this stream id (the summary tables cover the whole file)")
    p.add_argument("--dpi", type=int, default=100, help="resolution of the plot (default 100)")
    p.set_defaults(func=cmd_report)
    return p
