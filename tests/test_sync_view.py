"""The live sync-status panel: what it shows for known records, how and when it draws."""

from __future__ import annotations

import io
import threading
from typing import List

import pytest

from facemoment.runtime.sync_view import ASCII, MAX_FRAMES, UNICODE, SyncView, display_width, glyphs_for

EXTRACTORS = ["face", "pose", "gesture", "quality"]


class FakeClock:
    def __init__(self, now: float = 100.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def timing(frame_id: int, component: str, ms: float, stream: str = "cam0", **extra) -> dict:
    return {
        "record_type": "timing",
        "frame_id": frame_id,
        "stream": stream,
        "component": component,
        "processing_ms": ms,
        "queue_depth": 0,
        **extra,
    }


def make_view(clock: FakeClock, out=None, **kwargs) -> SyncView:
    kwargs.setdefault("stream", "cam0")
    return SyncView(
        window_ms=100,
        lateness_ms=50,
        extractors=EXTRACTORS,
        out=out if out is not None else io.StringIO(),
        clock=clock,
        glyphs=kwargs.pop("glyphs", UNICODE),
        tty=kwargs.pop("tty", False),
        width=kwargs.pop("width", 120),
        **kwargs,
    )


def body(view: SyncView) -> List[str]:
    """The panel's lines without the box borders."""
    return [line[2:-2].rstrip() for line in view.render().split("\n")[3:-1]]


def test_frame_line_shows_ticks_ms_and_timeouts():
    clock = FakeClock()
    view = make_view(clock)
    view.feed(
        [
            timing(99, "face", 30.0),
            timing(100, "face", 42.4),
            timing(100, "pose", 22.0),
            timing(100, "quality", 8.04),
            {
                "record_type": "frame_drop",
                "frame_id": 100,
                "stream": "cam0",
                "dropped_frame_ids": [100],
                "reason": "timeout",
                "extractors": ["gesture"],
            },
        ]
    )
    assert body(view)[0] == "Frame 100:  Face ✓ 42ms  Pose ✓ 22ms  Gesture ✗ timeout  Quality ✓ 8.0ms"


def test_unreported_extractor_waits_until_the_window_is_over():
    clock = FakeClock()
    view = make_view(clock)
    view.feed([timing(7, "face", 12.0), timing(7, "pose", 15.0)])
    clock.now += 0.055
    lines = body(view)
    assert lines[0] == "Frame 7:  Face ✓ 12ms  Pose ✓ 15ms  Gesture ⏳  Quality ⏳"
    assert lines[1] == "  waiting for gesture, quality (55ms elapsed)"
    clock.now += 0.2  # past window + lateness: no longer waiting, missing
    lines = body(view)
    assert lines[0] == "Frame 7:  Face ✓ 12ms  Pose ✓ 15ms  Gesture ✗ missing  Quality ✗ missing"
    assert not any("waiting for" in line for line in lines)


def test_orchestrator_timing_settles_the_frame_and_late_results_show():
    clock = FakeClock()
    view = make_view(clock)
    view.feed([timing(3, "face", 5.0), timing(3, "pose", 6.0), timing(3, "quality", 7.0), timing(3, "orchestrator", 60.0)])
    assert "Gesture ✗ missing" in body(view)[0]
    view.feed([timing(3, "gesture", 120.0, late=True)])
    assert "Gesture ✗ late 120ms" in body(view)[0]


def test_a_carried_result_shows_where_it_came_from():
    clock = FakeClock()
    view = make_view(clock)
    carry = {"record_type": "frame_carry", "stream": "cam0", "frame_id": 9, "every": 2}
    view.feed([timing(9, "face", 5.0), timing(9, "quality", 2.0), timing(9, "orchestrator", 9.0)])
    view.feed([dict(carry, source="pose", from_frame_id=8), dict(carry, source="gesture", from_frame_id=None)])
    assert body(view)[0] == "Frame 9:  Face ✓ 5.0ms  Pose ✓ from 8  Gesture ✗ missing  Quality ✓ 2.0ms"


def test_progress_bar_follows_elapsed_time_against_window_plus_lateness():
    clock = FakeClock()
    view = make_view(clock)
    view.feed([timing(1, "face", 10.0)])
    clock.now += 0.075  # half of 100 + 50 ms
    assert "Alignment Window: " + "█" * 10 + "░" * 10 + " 75/150ms" in body(view)
    clock.now += 1.0  # capped at the full window
    assert "Alignment Window: " + "█" * 20 + " 150/150ms" in body(view)


def test_recent_delays_newest_first_and_bounded():
    clock = FakeClock()
    view = make_view(clock, recent=3)
    delays = [
        (72, ["face"], 23.0, False),
        (87, ["gesture"], 62.0, False),
        (95, ["gesture", "pose"], 45.0, False),
        (96, ["quality"], None, True),
        (97, ["pose"], -3.0, False),  # clocks of two machines can disagree
    ]
    view.feed(
        {"record_type": "sync_delay", "frame_id": f, "stream": "cam0", "waiting_for": w, "delay_ms": d, "late": late}
        for f, w, d, late in delays
    )
    lines = body(view)
    start = lines.index("Recent delays:")
    assert lines[start + 1 : start + 4] == [
        "  Frame 97: pose -3ms",
        "  Frame 96: quality +?ms (late)",
        "  Frame 95: gesture, pose +45ms",
    ]
    assert not any("Frame 87" in line or "Frame 72" in line for line in lines)


def test_drop_counts_by_reason_trigger_count_and_gate():
    clock = FakeClock()
    view = make_view(clock)
    view.feed(
        [
            # dropped_count wins over a capped id list
            {"record_type": "frame_drop", "stream": "cam0", "reason": "backpressure", "dropped_frame_ids": [4, 5], "dropped_count": 5},
            {"record_type": "frame_drop", "stream": "cam0", "reason": "queue_full", "dropped_frame_ids": [8, 9]},
            {"record_type": "frame_drop", "stream": "cam0", "frame_id": 12, "reason": "timeout", "dropped_frame_ids": [12], "extractors": ["pose"]},
            {"record_type": "trigger_fire", "stream": "cam0", "reason": "smile"},
            {"record_type": "trigger_fire", "stream": "cam0", "reason": "wave"},
            {"record_type": "gate_change", "stream": "cam0", "gate_open": True},
            {"record_type": "gate_change", "stream": "cam0", "gate_open": False},
        ]
    )
    lines = body(view)
    assert "Drops: backpressure 5  timeout 1  queue_full 2" in lines
    assert "Triggers: 2 (last: wave)   Gate: closed" in lines


def test_other_streams_and_old_frames_do_not_take_over():
    clock = FakeClock()
    view = make_view(clock)
    view.feed([timing(50, "face", 11.0), timing(900, "face", 99.0, stream="cam1")])
    view.feed([{"record_type": "frame_drop", "stream": "cam1", "reason": "backpressure", "dropped_frame_ids": [1]}])
    # a record about an older frame that was never shown must not become "newest"
    view.feed([timing(49, "pose", 33.0)])
    # nor a later stage that times itself (fusion is not an extractor)
    view.feed([timing(51, "fusion_process", 0.2)])
    lines = body(view)
    assert lines[0].startswith("Frame 50:  Face ✓ 11ms  Pose ⏳")
    assert "Drops: backpressure 0  timeout 0  queue_full 0" in lines


def test_unreadable_records_are_counted_not_raised():
    clock = FakeClock()
    view = make_view(clock)
    view.feed(["not a dict", {"record_type": "timing", "frame_id": "x", "component": "face"}, timing(1, "face", 3.0)])
    assert view.bad_records == 2
    assert "Unreadable records skipped: 2" in body(view)
    assert body(view)[0].startswith("Frame 1:  Face ✓ 3.0ms")


def test_frames_remembered_are_bounded():
    clock = FakeClock()
    view = make_view(clock)
    view.feed(timing(i, "face", 1.0) for i in range(MAX_FRAMES * 5))
    assert len(view._frames) == MAX_FRAMES
    assert body(view)[0].startswith(f"Frame {MAX_FRAMES * 5 - 1}:")


@pytest.mark.parametrize("columns", [70, 90, 200])
def test_box_lines_share_one_width_within_the_terminal(columns):
    clock = FakeClock()
    view = make_view(clock, width=columns)
    view.feed([timing(1, "face", 1.0)])  # leaves ⏳ (two columns) on the line
    lines = view.render().split("\n")
    widths = {display_width(line) for line in lines}
    assert len(widths) == 1 and widths.pop() <= columns
    assert any("Quality ⏳" in line for line in lines)  # wrapped onto a second row when narrow, not cut


def test_ascii_fallback_when_the_encoding_cannot_draw_boxes():
    ascii_out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    utf8_out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    assert glyphs_for(ascii_out) is ASCII
    assert glyphs_for(utf8_out) is UNICODE
    view = SyncView(100, 50, EXTRACTORS, out=ascii_out, tty=False, width=100)
    view.feed([timing(1, "face", 2.0)])
    text = view.render()
    text.encode("ascii")  # raises if any glyph slipped through
    assert text.startswith("+---") and "Face ok 2.0ms" in text


def test_plain_output_prints_at_most_one_snapshot_per_interval():
    clock = FakeClock()
    out = io.StringIO()
    view = make_view(clock, out=out, plain_interval_s=5.0)
    view.feed([timing(1, "face", 2.0)])
    assert view.refresh() is True
    for step in range(1, 10):  # new records keep coming, but within the interval
        clock.now += 0.4
        view.feed([timing(1 + step, "face", 2.0)])
        assert view.refresh() is False
    assert out.getvalue().count("Sync Status") == 1
    assert "\x1b[" not in out.getvalue()
    clock.now += 2.0
    assert view.refresh() is True
    assert out.getvalue().count("Sync Status") == 2
    clock.now += 10.0  # idle: nothing new, nothing printed
    assert view.refresh() is False
    assert out.getvalue().count("Sync Status") == 2


def test_tty_output_redraws_in_place():
    clock = FakeClock()
    out = io.StringIO()
    view = make_view(clock, out=out, tty=True)
    view.feed([timing(1, "face", 2.0)])
    view.refresh()
    first = out.getvalue()
    height = len(view.render().split("\n"))
    assert first.startswith("\x1b[?25l") and f"\x1b[{height}F" not in first
    view.feed([timing(2, "face", 2.0)])
    view.refresh()
    second = out.getvalue()[len(first) :]
    assert second.startswith(f"\x1b[{height}F")
    assert "Frame 2:" in second
    view.stop()
    assert out.getvalue().endswith("\x1b[?25h")


class SignallingOut(io.StringIO):
    def __init__(self):
        super().__init__()
        self.written = threading.Event()

    def write(self, text: str) -> int:
        n = super().write(text)
        self.written.set()
        return n


def test_start_draws_from_a_thread_and_stop_ends_it():
    out = SignallingOut()
    view = SyncView(100, 50, EXTRACTORS, out=out, refresh_s=0.01, tty=True, glyphs=UNICODE, width=100)
    view.feed([timing(1, "face", 2.0)])
    view.start()
    thread = view._thread
    assert thread is not None and thread.daemon
    assert out.written.wait(timeout=5.0), "the refresh thread never drew"
    view.stop()
    assert not thread.is_alive()
    assert not view.running
    assert out.getvalue().endswith("\x1b[?25h")


def test_feed_never_formats_or_writes(monkeypatch):
    calls = {"render": 0, "lines": 0}
    real_render, real_lines = SyncView.render, SyncView._lines

    def spy_render(self):
        calls["render"] += 1
        return real_render(self)

    def spy_lines(self, snap):
        calls["lines"] += 1
        return real_lines(self, snap)

    monkeypatch.setattr(SyncView, "render", spy_render)
    monkeypatch.setattr(SyncView, "_lines", spy_lines)
    clock = FakeClock()
    out = io.StringIO()
    view = make_view(clock, out=out)
    records = []
    for i in range(2000):
        records += [timing(i, name, 5.0) for name in EXTRACTORS]
        records.append({"record_type": "sync_delay", "frame_id": i, "stream": "cam0", "waiting_for": ["pose"], "delay_ms": 3.0})
    view.feed(records)
    assert calls == {"render": 0, "lines": 0}
    assert out.getvalue() == ""
    view.refresh()
    assert calls == {"render": 1, "lines": 1}


class BrokenOut(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_broken_output_stops_drawing_without_raising():
    view = make_view(FakeClock(), out=BrokenOut(), tty=True)
    view.feed([timing(1, "face", 2.0)])
    assert view.refresh() is False
    assert view.refresh() is False
    view.stop()


@pytest.mark.parametrize("bad", [{"refresh_s": 0}, {"recent": -1}])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        SyncView(100, 50, EXTRACTORS, out=io.StringIO(), **bad)
