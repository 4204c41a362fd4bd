"""A live sync-status panel in the terminal, fed with the dataflow's trace records.

    view = SyncView(window_ms=100, lateness_ms=50, extractors=["face", "pose", "gesture", "quality"])
    view.start()
    view.feed(records)        # from the hot path: bookkeeping only
    view.stop()

``feed`` only updates bounded counters and deques under a lock; all formatting
happens in ``render``, which the refresh thread calls every ``refresh_s``. On a
TTY the panel is redrawn in place; elsewhere (logs, pipes) a plain snapshot is
written at most every ``plain_interval_s`` seconds, and only when records came in.
"""

from __future__ import annotations

import logging
import shutil
import sys
import threading
import time
import unicodedata
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, Iterable, List, Optional, Set, TextIO, Tuple

log = logging.getLogger(__name__)

# Frames remembered at once; enough for the newest frame plus late records about recent ones.
MAX_FRAMES = 64
DROP_REASONS = ("backpressure", "timeout", "queue_full")
BAR_WIDTH = 20
MIN_INNER_WIDTH = 60
NARROWEST_INNER_WIDTH = 40
FRAME_INDENT = "    "

# ANSI: cursor to the start of the line N lines up, clear to end of line / screen, cursor visibility.
_UP = "\x1b[{n}F"
_CLEAR_LINE = "\x1b[K"
_CLEAR_BELOW = "\x1b[J"
_HIDE_CURSOR = "\x1b[?25l"
_SHOW_CURSOR = "\x1b[?25h"


@dataclass(frozen=True)
class Glyphs:
    top_left: str
    top_right: str
    bottom_left: str
    bottom_right: str
    tee_left: str
    tee_right: str
    horizontal: str
    vertical: str
    ok: str
    failed: str
    waiting: str
    bar_full: str
    bar_empty: str


UNICODE = Glyphs("┌", "┐", "└", "┘", "├", "┤", "─", "│", "✓", "✗", "⏳", "█", "░")
ASCII = Glyphs("+", "+", "+", "+", "+", "+", "-", "|", "ok", "X", "..", "#", ".")


def glyphs_for(out: TextIO) -> Glyphs:
    """Unicode when the stream's encoding can carry every glyph, ASCII otherwise."""
    encoding = getattr(out, "encoding", None) or "ascii"
    sample = "".join(getattr(UNICODE, f) for f in UNICODE.__dataclass_fields__)
    try:
        sample.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return ASCII
    return UNICODE


def display_width(text: str) -> int:
    """Terminal columns: wide East Asian characters (and ⏳) take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _fit(text: str, width: int) -> str:
    """Pad or cut `text` to exactly `width` columns."""
    used = 0
    kept: List[str] = []
    for ch in text:
        w = 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
        if used + w > width:
            break
        kept.append(ch)
        used += w
    return "".join(kept) + " " * (width - used)


def _ms(value: float) -> str:
    return f"{value:.1f}ms" if abs(value) < 10 else f"{value:.0f}ms"


@dataclass
class _FrameState:
    stream: Optional[str]
    frame_id: int
    first_seen: float
    timings: Dict[str, float] = field(default_factory=dict)
    late: Dict[str, float] = field(default_factory=dict)
    timed_out: Set[str] = field(default_factory=set)
    missing: Set[str] = field(default_factory=set)
    # Extractors with a declared rate that skipped this frame: the frame their
    # result was carried from (None: none within the rate).
    carried: Dict[str, Optional[int]] = field(default_factory=dict)
    # The orchestrator's own timing comes after every extractor it waited for.
    settled: bool = False


@dataclass(frozen=True)
class _Delay:
    frame_id: int
    waiting_for: Tuple[str, ...]
    delay_ms: Optional[float]
    late: bool


@dataclass
class _Snapshot:
    frame: Optional[_FrameState]
    delays: List[_Delay]
    drops: Dict[str, int]
    triggers: int
    last_trigger: Optional[str]
    gates: Dict[Optional[str], bool]
    bad_records: int
    now: float


class SyncView:
    """Collects trace records and draws the sync status panel."""

    def __init__(
        self,
        window_ms: float,
        lateness_ms: float,
        extractors: List[str],
        stream: Optional[str] = None,
        out: TextIO = sys.stderr,
        refresh_s: float = 0.25,
        recent: int = 5,
        *,
        plain_interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        glyphs: Optional[Glyphs] = None,
        tty: Optional[bool] = None,
        width: Optional[int] = None,
    ):
        if refresh_s <= 0:
            raise ValueError(f"refresh_s must be positive, got {refresh_s}")
        if recent < 0:
            raise ValueError(f"recent must be zero or more, got {recent}")
        self.window_ms = float(window_ms)
        self.lateness_ms = float(lateness_ms)
        self.extractors = list(extractors)
        self._extractor_set = frozenset(self.extractors)
        self.stream = stream
        self.out = out
        self.refresh_s = refresh_s
        self.recent = recent
        self.plain_interval_s = plain_interval_s
        self._clock = clock
        self.glyphs = glyphs if glyphs is not None else glyphs_for(out)
        self.tty = tty if tty is not None else _is_tty(out)
        columns = width if width is not None else shutil.get_terminal_size(fallback=(100, 24)).columns
        # The box never grows past the terminal: a wrapped line would break the in-place redraw.
        self._inner = max(NARROWEST_INNER_WIDTH, min(columns - 4, max(MIN_INNER_WIDTH, self._typical_frame_width())))
        self._frame_rows = len(self._layout([self._worst_cell(name) for name in self.extractors], "Frame 99999999:  "))

        self._lock = threading.Lock()
        self._frames: "OrderedDict[Tuple[Optional[str], int], _FrameState]" = OrderedDict()
        self._newest_id: Dict[Optional[str], int] = {}
        self._delays: Deque[_Delay] = deque(maxlen=max(recent, 1))
        self._drops: Dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self._triggers = 0
        self._last_trigger: Optional[str] = None
        self._gates: Dict[Optional[str], bool] = {}
        self._bad_records = 0
        self._records_seen = 0

        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._drawn_lines = 0
        self._last_plain: Optional[float] = None
        self._records_at_last_plain = 0
        self._broken = False

    # ------------------------------------------------------------------ feeding

    def feed(self, records: Iterable[dict]) -> None:
        """Take trace records in; bookkeeping only, no formatting and no I/O."""
        now = self._clock()
        with self._lock:
            for record in records:
                self._records_seen += 1
                try:
                    self._take(record, now)
                except (AttributeError, TypeError, ValueError, KeyError):
                    self._bad_records += 1

    def _take(self, record: dict, now: float) -> None:
        stream = record.get("stream")
        if self.stream is not None and stream is not None and stream != self.stream:
            return
        kind = record.get("record_type")
        if kind == "timing":
            component = record["component"]
            if component != "orchestrator" and component not in self._extractor_set:
                return  # other stages (fusion) time themselves too; they are not extractors
            frame = self._frame(stream, int(record["frame_id"]), now)
            if frame is None:
                return
            if component == "orchestrator":
                frame.settled = True
            elif record.get("late"):
                frame.late[component] = float(record["processing_ms"])
            else:
                frame.timings[component] = float(record["processing_ms"])
        elif kind == "frame_drop":
            reason = str(record.get("reason"))
            count = record.get("dropped_count")
            if not isinstance(count, int):
                count = len(record.get("dropped_frame_ids") or ()) or 1
            self._drops[reason] = self._drops.get(reason, 0) + count
            if reason == "timeout" and record.get("frame_id") is not None:
                frame = self._frame(stream, int(record["frame_id"]), now)
                if frame is not None:
                    frame.timed_out.update(record.get("extractors") or ())
        elif kind == "sync_delay":
            waiting = tuple(str(name) for name in record.get("waiting_for") or ())
            delay = record.get("delay_ms")
            late = bool(record.get("late"))
            frame_id = int(record["frame_id"])
            self._delays.append(_Delay(frame_id, waiting, None if delay is None else float(delay), late))
            known = self._frames.get((stream, frame_id))
            if known is not None and not late:
                known.missing.update(waiting)
        elif kind == "frame_carry" and record.get("frame_id") is not None:
            frame = self._frame(stream, int(record["frame_id"]), now)
            if frame is not None:
                source = record.get("from_frame_id")
                frame.carried[str(record.get("source"))] = None if source is None else int(source)
        elif kind == "trigger_fire":
            self._triggers += 1
            self._last_trigger = record.get("reason")
        elif kind == "gate_change":
            self._gates[stream] = bool(record.get("gate_open"))

    def _frame(self, stream: Optional[str], frame_id: int, now: float) -> Optional[_FrameState]:
        """The frame's state, created when it is newer than any seen on its stream."""
        key = (stream, frame_id)
        frame = self._frames.get(key)
        if frame is not None:
            return frame
        if frame_id <= self._newest_id.get(stream, -1):
            return None  # an old frame already forgotten (or never shown): not the newest
        self._newest_id[stream] = frame_id
        frame = _FrameState(stream, frame_id, now)
        self._frames[key] = frame
        if len(self._frames) > MAX_FRAMES:
            self._frames.popitem(last=False)
        return frame

    @property
    def bad_records(self) -> int:
        """Records that could not be read (missing or mistyped fields); skipped."""
        with self._lock:
            return self._bad_records

    # ---------------------------------------------------------------- rendering

    def _snapshot(self) -> _Snapshot:
        now = self._clock()
        with self._lock:
            frame = None
            if self._frames:
                newest = next(reversed(self._frames.values()))
                frame = _FrameState(
                    newest.stream,
                    newest.frame_id,
                    newest.first_seen,
                    dict(newest.timings),
                    dict(newest.late),
                    set(newest.timed_out),
                    set(newest.missing),
                    dict(newest.carried),
                    newest.settled,
                )
            return _Snapshot(
                frame=frame,
                delays=list(self._delays)[::-1][: self.recent],
                drops=dict(self._drops),
                triggers=self._triggers,
                last_trigger=self._last_trigger,
                gates=dict(self._gates),
                bad_records=self._bad_records,
                now=now,
            )

    def render(self) -> str:
        """The panel as text (no trailing newline); no I/O."""
        return "\n".join(self._lines(self._snapshot()))

    def _lines(self, snap: _Snapshot) -> List[str]:
        g = self.glyphs
        body = self._frame_lines(snap)
        body.append("")
        body.append("Recent delays:")
        for delay in snap.delays:
            amount = "+?" if delay.delay_ms is None else f"{delay.delay_ms:+.0f}"
            names = ", ".join(delay.waiting_for) or "?"
            body.append(f"  Frame {delay.frame_id}: {names} {amount}ms" + (" (late)" if delay.late else ""))
        if not snap.delays and self.recent:
            body.append("  (none)")
        # Fixed height, so the in-place redraw never leaves stale lines behind.
        body.extend([""] * (self.recent - max(len(snap.delays), 1 if self.recent else 0)))
        body.append("")
        body.append("Drops: " + "  ".join(f"{reason} {count}" for reason, count in snap.drops.items()))
        trigger = f"Triggers: {snap.triggers}"
        if snap.last_trigger:
            trigger += f" (last: {snap.last_trigger})"
        body.append(f"{trigger}   Gate: {self._gate_text(snap.gates)}")
        if snap.bad_records:
            body.append(f"Unreadable records skipped: {snap.bad_records}")

        inner = self._inner
        title = "Sync Status" + (f" - {self.stream}" if self.stream else "")
        rule = g.horizontal * (inner + 2)
        lines = [g.top_left + rule + g.top_right, f"{g.vertical} {_fit(title, inner)} {g.vertical}"]
        lines.append(g.tee_left + rule + g.tee_right)
        lines.extend(f"{g.vertical} {_fit(text, inner)} {g.vertical}" for text in body)
        lines.append(g.bottom_left + rule + g.bottom_right)
        return lines

    def _typical_frame_width(self) -> int:
        """Columns a frame line takes when one extractor timed out."""
        cells = [f"{name.capitalize()} {self.glyphs.failed} timeout" for name in self.extractors]
        return display_width("Frame 123456:  " + "  ".join(cells))

    def _worst_cell(self, name: str) -> str:
        return f"{name.capitalize()} {self.glyphs.failed} late 9999ms"

    def _layout(self, cells: List[str], prefix: str) -> List[str]:
        """Cells on as few rows as the box width allows, continuation rows indented."""
        rows: List[str] = []
        row = prefix
        row_has_cell = False
        for cell in cells:
            candidate = row + ("  " if row_has_cell else "") + cell
            if row_has_cell and display_width(candidate) > self._inner:
                rows.append(row)
                row = FRAME_INDENT + cell
            else:
                row = candidate
            row_has_cell = True
        rows.append(row)
        return rows

    def _frame_lines(self, snap: _Snapshot) -> List[str]:
        g = self.glyphs
        total_ms = self.window_ms + self.lateness_ms
        frame = snap.frame
        if frame is None:
            rows = ["Frame -:  no extractor timing yet", "", f"Alignment Window: {g.bar_empty * BAR_WIDTH} 0/{total_ms:.0f}ms"]
            return rows + [""] * (self._frame_rows - 1)
        elapsed_ms = max(0.0, (snap.now - frame.first_seen) * 1000.0)
        window_over = elapsed_ms >= total_ms
        cells: List[str] = []
        waiting: List[str] = []
        for name in self.extractors:
            label = name.capitalize()
            if name in frame.timings:
                cells.append(f"{label} {g.ok} {_ms(frame.timings[name])}")
            elif name in frame.late:
                cells.append(f"{label} {g.failed} late {_ms(frame.late[name])}")
            elif name in frame.timed_out:
                cells.append(f"{label} {g.failed} timeout")
            elif frame.carried.get(name) is not None:
                cells.append(f"{label} {g.ok} from {frame.carried[name]}")
            elif name in frame.missing or frame.settled or window_over:
                cells.append(f"{label} {g.failed} missing")
            else:
                cells.append(f"{label} {g.waiting}")
                waiting.append(name)
        where = f" ({frame.stream})" if self.stream is None and frame.stream is not None else ""
        lines = self._layout(cells, f"Frame {frame.frame_id}{where}:  ")
        # Rows the widest frame could wrap onto, kept blank below, so the panel keeps its height.
        spare = [""] * (self._frame_rows - len(lines))
        lines.append(f"  waiting for {', '.join(waiting)} ({elapsed_ms:.0f}ms elapsed)" if waiting else "")
        shown = min(elapsed_ms, total_ms)
        filled = int(round(BAR_WIDTH * shown / total_ms)) if total_ms > 0 else BAR_WIDTH
        bar = g.bar_full * filled + g.bar_empty * (BAR_WIDTH - filled)
        lines.append(f"Alignment Window: {bar} {shown:.0f}/{total_ms:.0f}ms")
        return lines + spare

    @staticmethod
    def _gate_text(gates: Dict[Optional[str], bool]) -> str:
        if not gates:
            return "unknown"
        if len(gates) == 1:
            return "open" if next(iter(gates.values())) else "closed"
        return ", ".join(f"{stream} {'open' if is_open else 'closed'}" for stream, is_open in gates.items())

    # ------------------------------------------------------------------ drawing

    def refresh(self, force: bool = False) -> bool:
        """Draw once if due; returns whether anything was written."""
        if self._broken:
            return False
        if self.tty:
            return self._draw_in_place()
        return self._draw_plain(force)

    def _draw_in_place(self) -> bool:
        lines = self.render().split("\n")
        parts = []
        if self._drawn_lines:
            parts.append(_UP.format(n=self._drawn_lines))
        else:
            parts.append(_HIDE_CURSOR)
        parts.extend(line + _CLEAR_LINE + "\n" for line in lines)
        parts.append(_CLEAR_BELOW)
        if not self._write("".join(parts)):
            return False
        self._drawn_lines = len(lines)
        return True

    def _draw_plain(self, force: bool) -> bool:
        now = self._clock()
        with self._lock:
            seen = self._records_seen
        if not force:
            if self._last_plain is not None and now - self._last_plain < self.plain_interval_s:
                return False
            if seen == self._records_at_last_plain:
                return False  # nothing new: keep logs quiet while idle
        if not self._write(self.render() + "\n"):
            return False
        self._last_plain = now
        self._records_at_last_plain = seen
        return True

    def _write(self, text: str) -> bool:
        try:
            self.out.write(text)
            self.out.flush()
        except (OSError, ValueError) as exc:  # closed or broken output: stop drawing, keep the flow running
            self._broken = True
            log.warning("sync view stopped drawing: %s", exc)
            return False
        return True

    # ------------------------------------------------------------------ thread

    def start(self) -> None:
        """Draw every `refresh_s` seconds from a daemon thread."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="facemoment-sync-view", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                self.refresh()
            except Exception:  # a drawing fault must not take the dataflow down
                log.exception("sync view refresh failed; drawing stopped")
                self._broken = True
                return

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread, draw a last time and give the cursor back."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.refresh(force=True)
        if self.tty and self._drawn_lines and not self._broken:
            self._write(_SHOW_CURSOR)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def _is_tty(out: TextIO) -> bool:
    try:
        return bool(out.isatty())
    except (AttributeError, ValueError, OSError):
        return False
