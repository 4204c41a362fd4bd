"""Event-time alignment: grouping per frame, event-time order, and a clock that waits without spinning."""

from __future__ import annotations

import random
import threading
from datetime import datetime, timedelta, timezone
from typing import List, Optional

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.operators.windowing import Clock, ClockLogic, EventClock, collect_window
from bytewax.testing import TestingSink, TestingSource, run_main

from facemoment.core.config import Config
from facemoment.core.records import SyncDelay
from facemoment.core.types import Extracted, FrameObservations, FramePresence, Observation
from operators.align import (
    FrameGrouper,
    align,
    SourceTimeClock,
    late_record,
    make_clock,
    make_windower,
    ns_to_datetime,
    observation_time,
)

FRAME_NS = 33_333_333


def _obs(source: str, frame_id: int, t0: int = 0) -> Extracted:
    if source == "frame":
        return FramePresence("cam0", frame_id, t0 + frame_id * FRAME_NS)
    return Observation(source, "cam0", frame_id, t0 + frame_id * FRAME_NS)


def _align_flow(items, window_ms=100.0, lateness_ms=200.0, expected=("face", "quality")):
    flow = Dataflow("align_test")
    obs = op.input("in", flow, TestingSource(items))
    keyed = op.key_on("key", obs, lambda o: o.stream_id)
    win = collect_window("align", keyed, make_clock(lateness_ms), make_windower(window_ms))
    grouped = op.flat_map_value("group", win.down, FrameGrouper(list(expected), window_ms))
    frames: List = []
    late: List = []
    op.output("frames", op.filter("only_frames", grouped, lambda kv: isinstance(kv[1], FrameObservations)), TestingSink(frames))
    op.output("late", op.map_value("late_rec", win.late, late_record), TestingSink(late))
    return flow, frames, late


@pytest.mark.parametrize("t0", [0, 1_795_000_000_000_000_000])
def test_shuffled_observations_come_out_per_frame_in_event_time_order(t0):
    items = [_obs(src, i, t0) for i in range(60) for src in ("frame", "face", "quality")]
    rng = random.Random(7)
    # Shuffle within small neighbourhoods: arrival order differs from event order
    # by less than the allowed lateness.
    for start in range(0, len(items), 9):
        chunk = items[start:start + 9]
        rng.shuffle(chunk)
        items[start:start + 9] = chunk
    flow, frames, late = _align_flow(items)
    run_main(flow)
    fos = [fo for _k, fo in frames]
    assert [fo.frame_id for fo in fos] == list(range(60))
    assert all(set(fo.observations) == {"face", "quality"} and fo.missing == () for fo in fos)
    assert late == []


def test_missing_extractor_is_named():
    items = [_obs("frame", 0), _obs("face", 0), _obs("quality", 0), _obs("frame", 1), _obs("quality", 1)]
    flow, frames, _late = _align_flow(items)
    run_main(flow)
    by_id = {fo.frame_id: fo for _k, fo in frames}
    assert by_id[0].missing == ()
    assert by_id[1].missing == ("face",)


class _GatedPartition(StatefulSourcePartition):
    """Emits its items once, signals, then idles (cheaply) until released."""

    def __init__(self, items, emitted: threading.Event, release: threading.Event):
        self.items = list(items)
        self.emitted = emitted
        self.release = release

    def next_batch(self):
        if self.items:
            batch, self.items = self.items, []
            return batch
        self.emitted.set()
        if self.release.is_set():
            raise StopIteration
        return []

    def next_awake(self) -> Optional[datetime]:
        return datetime.now(timezone.utc) + timedelta(milliseconds=20)

    def snapshot(self):
        return None


class _GatedSource(FixedPartitionedSource):
    def __init__(self, items, emitted, release):
        self.args = (items, emitted, release)

    def list_parts(self):
        return ["one"]

    def build_part(self, step_id, for_part, resume_state):
        return _GatedPartition(*self.args)


class _CountingClock(Clock):
    """Another clock, counting how often the window operator woke it with no new item."""

    def __init__(self, inner: Clock) -> None:
        self.inner = inner
        self.wakeups = 0

    def build(self, resume_state):
        return _CountingLogic(self.inner.build(resume_state), self)


class _CountingLogic(ClockLogic):
    def __init__(self, inner: ClockLogic, clock: _CountingClock) -> None:
        self.inner, self.clock = inner, clock

    def before_batch(self) -> None:
        self.inner.before_batch()

    def on_item(self, value):
        return self.inner.on_item(value)

    def on_notify(self):
        self.clock.wakeups += 1
        return self.inner.on_notify()

    def on_eof(self):
        return self.inner.on_eof()

    def to_system_utc(self, timestamp):
        return self.inner.to_system_utc(timestamp)

    def snapshot(self):
        return self.inner.snapshot()


def _wakeups_while_waiting(clock) -> int:
    """How often the window operator woke while an epoch-era window waited for more frames."""
    emitted, release = threading.Event(), threading.Event()
    items = [_obs("face", i) for i in range(5)]  # file timestamps: 1970
    counting = _CountingClock(clock)
    flow = Dataflow("spin_test")
    obs = op.input("in", flow, _GatedSource(items, emitted, release))
    keyed = op.key_on("key", obs, lambda o: o.stream_id)
    win = collect_window("align", keyed, counting, make_windower(100))
    out: List = []
    op.output("out", win.down, TestingSink(out))
    runner = threading.Thread(target=run_main, args=(flow,))
    runner.start()
    try:
        assert emitted.wait(30)
        before = counting.wakeups
        release.wait(1.5)  # observation period: the flow is waiting for more frames
        wakeups = counting.wakeups - before
    finally:
        release.set()
        runner.join(30)
    assert not runner.is_alive()
    assert len(out) >= 1  # EOF closed the windows, nothing was lost
    return wakeups


def test_waiting_for_frames_does_not_spin_a_core():
    lateness_ms = 5000.0  # items stay queued for the whole observation period
    ours = _wakeups_while_waiting(make_clock(lateness_ms))
    stock = _wakeups_while_waiting(EventClock(observation_time, timedelta(milliseconds=lateness_ms)))
    # The stock clock wakes the operator in a loop for windows it thinks are decades
    # overdue; ours sleeps until the watermark can actually move. Counted in wake-ups,
    # not CPU time, so a busy machine (which slows the loop down) does not change the
    # verdict: even a starved loop wakes hundreds of times in the period.
    assert stock > 100, f"expected the stock EventClock to spin, it woke {stock} times"
    assert ours <= 2, f"waiting woke the operator {ours} times"


def test_observation_after_its_window_closed_is_reported_late_and_the_frame_fused_without_it():
    items = [_obs(src, i) for i in range(60) for src in ("frame", "face", "quality") if (i, src) != (5, "quality")]
    items.append(_obs("quality", 5))  # arrives ~1.8 s of event time after its window
    cfg = Config()
    cfg.extract.extractors = ["face", "quality"]
    cfg.align.window_ms, cfg.align.allowed_lateness_ms = 100.0, 200.0
    flow = Dataflow("late_test")
    aligned = align("align", op.input("in", flow, TestingSource(items)), cfg)
    out: List = []
    records: List = []
    op.output("aligned", aligned.items, TestingSink(out))
    op.output("records", aligned.records, TestingSink(records))
    run_main(flow)
    frames = {fo.frame_id: fo for _k, fo in out}
    assert all(isinstance(fo, FrameObservations) for fo in frames.values())
    assert sorted(frames) == list(range(60))
    assert frames[5].missing == ("quality",)
    assert all(fo.missing == () for i, fo in frames.items() if i != 5)
    assert all(isinstance(r, SyncDelay) for r in records)
    assert sorted((r.frame_id, r.waiting_for, r.late) for r in records) == [
        (5, ["quality"], False),
        (5, ["quality"], True),
    ]
    assert [r.to_dict()["record_type"] for r in records] == ["sync_delay", "sync_delay"]


class _FakeNow:
    def __init__(self):
        self.now = datetime(2026, 11, 26, tzinfo=timezone.utc)

    def __call__(self):
        return self.now


def _logic(clock):
    logic = clock.build(None)
    return logic


def test_frames_handed_on_in_a_burst_are_not_late_however_slow_extraction_was():
    now = _FakeNow()
    ours = _logic(SourceTimeClock(observation_time, timedelta(milliseconds=200), now_getter=now, idle=timedelta(seconds=1)))
    stock = _logic(EventClock(observation_time, timedelta(milliseconds=200), now_getter=now))
    late = {"ours": 0, "stock": 0}
    frame = 0
    for burst in range(10):
        # Extraction hands on 9 frames at once every 300 ms of system time.
        now.now += timedelta(milliseconds=300)
        for logic, name in ((ours, "ours"), (stock, "stock")):
            logic.before_batch()
            for i in range(frame, frame + 9):
                ts, watermark = logic.on_item(_obs("face", i))
                late[name] += ts < watermark
        frame += 9
    assert late["ours"] == 0
    assert late["stock"] > 0  # the stock watermark runs ahead with system time


def test_a_paused_live_stream_closes_its_windows_after_the_idle_time():
    now = _FakeNow()
    logic = _logic(SourceTimeClock(observation_time, timedelta(milliseconds=200), now_getter=now, idle=timedelta(seconds=1)))
    logic.before_batch()
    _ts, watermark = logic.on_item(_obs("face", 30))  # t = 1.0 s
    assert watermark == ns_to_datetime(30 * FRAME_NS) - timedelta(milliseconds=200)
    close = ns_to_datetime(30 * FRAME_NS) + timedelta(milliseconds=100)
    wake = logic.to_system_utc(close)
    assert wake == now.now + timedelta(seconds=1) + (close - watermark)
    now.now += timedelta(milliseconds=500)
    assert logic.on_notify() == watermark  # still within the idle time: event time only
    now.now = wake
    assert logic.on_notify() >= close  # paused long enough: system time closes the window
    files = _logic(make_clock(200, live=False))
    files.before_batch()
    files.on_item(_obs("face", 30))
    assert files.to_system_utc(close) is None  # files never wait on system time


def test_the_clock_resumes_from_its_own_snapshot_and_from_an_event_clock_snapshot():
    import pickle

    now = _FakeNow()
    ours = _logic(SourceTimeClock(observation_time, timedelta(milliseconds=200), now_getter=now, idle=timedelta(seconds=1)))
    stock = _logic(EventClock(observation_time, timedelta(milliseconds=200), now_getter=now))
    for logic in (ours, stock):
        logic.before_batch()
        logic.on_item(_obs("face", 30))
    expected = ns_to_datetime(30 * FRAME_NS) - timedelta(milliseconds=200)
    for snapshot in (pickle.loads(pickle.dumps(ours.snapshot())), stock.snapshot()):
        resumed = SourceTimeClock(observation_time, timedelta(milliseconds=200), now_getter=now,
                                  idle=timedelta(seconds=1)).build(snapshot)
        resumed.before_batch()
        assert resumed.on_notify() == expected  # continues at the saved watermark
        _ts, watermark = resumed.on_item(_obs("face", 60))
        assert watermark == ns_to_datetime(60 * FRAME_NS) - timedelta(milliseconds=200)
        assert snapshot.watermark_base == expected  # the snapshot itself was not changed


# --- the watermark as the minimum over the stream's known inputs ---------------

def _shares_logic(shares=2, lateness_ms=200, live=False):
    now = _FakeNow()
    clock = SourceTimeClock(
        observation_time,
        timedelta(milliseconds=lateness_ms),
        now_getter=now,
        idle=timedelta(seconds=1) if live else None,
        inputs={"cam0": shares},
    )
    logic = clock.build(None)
    logic.before_batch()
    return logic, now


def _window_end(frame_id: int, window_ms: float = 100.0) -> datetime:
    start_ms = (frame_id * FRAME_NS // 1_000_000) // int(window_ms) * int(window_ms)
    return ns_to_datetime(int((start_ms + window_ms) * 1_000_000))


def test_a_window_closes_as_soon_as_every_input_has_passed_its_end():
    logic, _ = _shares_logic(shares=2)
    end = _window_end(0)  # window [0, 100 ms): frames 0-3 (frame 3 at 99.99 ms)
    marks = []
    for frame in range(8):  # share 0: even frames, share 1: odd frames, in turn
        for source in ("frame", "face"):
            ts, watermark = logic.on_item(_obs(source, frame))
            assert ts >= watermark  # nothing an input delivers in order is late
        marks.append(watermark)
    # Share 0 passes the end with frame 4 (133 ms), share 1 with frame 5 (167 ms):
    # the window closes on frame 5, the first moment both have passed it.
    assert marks[4] < end
    assert marks[5] >= end
    assert marks[5] == ns_to_datetime(4 * FRAME_NS)  # the lagging share's newest time
    # The allowed lateness alone would have held it until an item at 300 ms.
    assert ns_to_datetime(7 * FRAME_NS) - timedelta(milliseconds=200) < end


def test_a_silent_live_input_holds_windows_only_up_to_the_allowed_lateness():
    logic, _ = _shares_logic(shares=2, lateness_ms=200, live=True)
    end = _window_end(0)
    watermark = None
    closed_at = None
    for frame in range(0, 20, 2):  # only share 0 delivers; share 1 went silent
        _ts, watermark = logic.on_item(_obs("frame", frame))
        if closed_at is None and watermark >= end:
            closed_at = frame
    # Closed by the bound: the first item at least 200 ms past the window's end.
    assert closed_at == 10  # t = 333 ms, 333 - 200 >= 100
    assert watermark == ns_to_datetime(18 * FRAME_NS) - timedelta(milliseconds=200)


def test_a_live_input_behind_by_more_than_the_lateness_is_late_and_the_rest_is_not():
    logic, _ = _shares_logic(shares=2, lateness_ms=100, live=True)
    late = []
    order = [0, 2, 4, 6, 8, 10, 1, 3, 5, 7, 9, 11]  # share 1 arrives far behind share 0
    for frame in order:
        ts, watermark = logic.on_item(_obs("face", frame))
        if ts < watermark:
            late.append(frame)
    # While share 1 is silent the bound is 333 - 100 = 233 ms: frames 1, 3, 5 (33,
    # 100, 167 ms) are behind it; from frame 7 (233 ms) on they are in time.
    assert late == [1, 3, 5]


def test_file_shares_wait_for_the_slowest_however_far_behind_it_is():
    logic, _ = _shares_logic(shares=2, lateness_ms=100, live=False)
    late = []
    marks = []
    order = list(range(0, 40, 2)) + list(range(1, 40, 2))  # share 1 starts 0.67 s behind
    for frame in order:
        ts, watermark = logic.on_item(_obs("face", frame))
        late += [frame] if ts < watermark else []
        marks.append(watermark)
    assert late == []
    assert marks[19] == datetime.min.replace(tzinfo=timezone.utc)  # share 1 not heard from yet
    assert marks[-1] == ns_to_datetime(38 * FRAME_NS)  # the slower share 0's newest


def test_unknown_inputs_keep_the_lateness_rule():
    now = _FakeNow()
    logic = SourceTimeClock(observation_time, timedelta(milliseconds=200), now_getter=now).build(None)
    logic.before_batch()
    for frame in range(10):
        _ts, watermark = logic.on_item(_obs("face", frame))
    assert watermark == ns_to_datetime(9 * FRAME_NS) - timedelta(milliseconds=200)


def test_input_progress_survives_a_snapshot():
    import pickle

    logic, _ = _shares_logic(shares=2)
    for frame in range(4):
        logic.on_item(_obs("frame", frame))
    resumed = SourceTimeClock(
        observation_time, timedelta(milliseconds=200), now_getter=_FakeNow(), inputs={"cam0": 2}
    ).build(pickle.loads(pickle.dumps(logic.snapshot())))
    resumed.before_batch()
    _ts, watermark = resumed.on_item(_obs("frame", 4))
    assert watermark == ns_to_datetime(3 * FRAME_NS)


def test_a_live_input_that_pauses_still_closes_after_the_idle_time():
    logic, now = _shares_logic(shares=2, live=True)
    logic.on_item(_obs("frame", 0))
    _ts, watermark = logic.on_item(_obs("frame", 1))
    end = _window_end(1)
    assert watermark < end
    now.now += timedelta(seconds=2)
    assert logic.on_notify() >= end


def _share_flow(items, shares, window_ms=100.0, lateness_ms=5000.0):
    flow = Dataflow("align_shares")
    obs = op.input("in", flow, TestingSource(items))
    keyed = op.key_on("key", obs, lambda o: o.stream_id)
    clock = make_clock(lateness_ms, live=False, inputs={"cam0": shares})
    win = collect_window("align", keyed, clock, make_windower(window_ms))
    grouped = op.flat_map_value("group", win.down, FrameGrouper(["face"], window_ms))
    frames: List = []
    late: List = []
    op.output("frames", op.filter("only_frames", grouped, lambda kv: isinstance(kv[1], FrameObservations)), TestingSink(frames))
    op.output("late", op.map_value("late_rec", win.late, late_record), TestingSink(late))
    return flow, frames, late


def test_two_shares_interleaved_within_the_lateness_lose_nothing_and_keep_event_order():
    # Share 1 runs up to 5 frames behind share 0 (166 ms, inside the 200 ms bound).
    share0 = [i for i in range(60) if i % 2 == 0]
    share1 = [i for i in range(60) if i % 2 == 1]
    order = share0[:3] + [x for pair in zip(share1, share0[3:]) for x in pair] + share1[len(share0) - 3:]
    items = [_obs(src, i) for i in order for src in ("frame", "face")]
    flow, frames, late = _share_flow(items, shares=2, lateness_ms=200.0)
    run_main(flow)
    assert late == []
    fused = [fo.frame_id for _k, fo in frames]
    assert fused == list(range(60))
    assert all(fo.missing == () for _k, fo in frames)


def test_a_snapshot_without_input_progress_resumes():
    from types import SimpleNamespace

    older = SimpleNamespace(system_time_of_max_event=_FakeNow().now, watermark_base=ns_to_datetime(2 * FRAME_NS))
    logic = SourceTimeClock(observation_time, timedelta(milliseconds=200), now_getter=_FakeNow(), inputs={"cam0": 1}).build(older)
    logic.before_batch()
    _ts, watermark = logic.on_item(_obs("frame", 5))
    assert watermark == ns_to_datetime(5 * FRAME_NS)
    assert older.watermark_base == ns_to_datetime(2 * FRAME_NS)  # the resume state is not changed


def test_a_live_share_still_catching_up_is_not_a_pause():
    logic, now = _shares_logic(shares=2, lateness_ms=5000, live=True)
    for frame in range(0, 60, 2):
        logic.on_item(_obs("frame", frame))  # share 0 ran ahead, to 1.93 s
    late = []
    for frame in range(1, 60, 2):  # share 1 follows, 0.5 s of system time per frame
        now.now += timedelta(milliseconds=500)
        logic.before_batch()
        ts, watermark = logic.on_item(_obs("frame", frame))
        late += [frame] if ts < watermark else []
    assert late == []  # 15 s of system time went by, but items kept coming
    now.now += timedelta(seconds=2)
    assert logic.on_notify() > ns_to_datetime(59 * FRAME_NS) - timedelta(milliseconds=5000)  # a real pause moves it
