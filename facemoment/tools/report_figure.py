"""The report's figure: one panel per kind of record on a shared x axis.

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
on every panel, so causes and effects line up."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

from facemoment.tools.timeline import Clock, Decision, Timeline
from facemoment.tools.trace_summary import TOTAL_COMPONENTS

FIGURE_WIDTH_IN = 14.0


NO_DATA_COLOR = "0.55"


EMPTY_PANEL_IN = 0.6


SPARSE_POINTS = 60


TRIGGER_LANES = 3  # overlapping windows of one reason alternate between sub-rows


# tab10 without its red, which marks slow frames and thresholds.
SERIES_COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:gray",
                 "tab:olive", "tab:cyan"]


DROP_COLORS = {"timeout": "tab:red", "backpressure": "tab:orange", "queue_full": "tab:purple"}


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
