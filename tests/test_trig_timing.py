"""TRIG timing: `end` holds a TRIG until its stream reached t_end_ns, `event` sends at once."""

from __future__ import annotations

import time
from typing import Any, List

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main

from facemoment.core.config import Config, ConfigError, load_config
from facemoment.core.records import TrigRelease
from facemoment.core.types import FramePresence, Observation, Trigger
from operators.trig_timing import END, EVENT, TrigTimer, resolve_timing

NS = 1_000_000_000


def trigger(event_s: float) -> Trigger:
    t = int(event_s * NS)
    return Trigger("cam0", int(event_s * 30), t, t, "expression_spike", 0.9, 2.0, 2.0, 1)


def released(out: List[Any]) -> List[Trigger]:
    return [x for x in out if isinstance(x, Trigger)]


def records(out: List[Any]) -> List[TrigRelease]:
    return [x for x in out if isinstance(x, TrigRelease)]


def test_end_holds_the_trig_until_a_frame_at_or_past_t_end_arrived() -> None:
    timer = TrigTimer(END, idle_s=None)
    t = trigger(5.0)  # clip 3 s .. 7 s
    out, _ = timer.on_batch([int(5.1 * NS), t, int(6.9 * NS)])
    assert out == []
    out, _ = timer.on_batch([7 * NS])  # the frame at exactly t_end
    assert released(out) == [t]
    (rec,) = records(out)
    assert (rec.cause, rec.timing, rec.newest_t_ns, rec.t_end_ns) == ("end_reached", END, 7 * NS, t.t_end_ns)
    assert rec.decided_ns <= rec.released_ns and rec.held_ms >= 0
    assert rec.to_dict()["record_type"] == "trig_release"
    assert timer.on_batch([8 * NS]) == ([], False)  # released once


def test_end_sends_at_once_when_the_stream_is_already_past_t_end() -> None:
    timer = TrigTimer(END, idle_s=None)
    timer.on_batch([10 * NS])
    out, _ = timer.on_batch([trigger(5.0)])
    assert [r.cause for r in records(out)] == ["end_reached"]


def test_event_keeps_todays_behaviour() -> None:
    timer = TrigTimer(EVENT, idle_s=None)
    t = trigger(5.0)
    out, _ = timer.on_batch([t])
    assert released(out) == [t] and records(out)[0].cause == EVENT


def test_end_of_stream_and_idle_release_what_is_held() -> None:
    timer = TrigTimer(END, idle_s=None)
    a, b = trigger(5.0), trigger(9.0)
    timer.on_batch([a, b, 6 * NS])
    out, _ = timer.on_eof()
    assert released(out) == [a, b] and {r.cause for r in records(out)} == {"end_of_stream"}

    idle = TrigTimer(END, idle_s=0.0)
    idle.on_batch([a])
    assert idle.notify_at() is not None
    out, _ = idle.on_notify()
    assert released(out) == [a] and records(out)[0].cause == "idle"
    assert idle.notify_at() is None


def test_held_triggers_survive_a_snapshot() -> None:
    timer = TrigTimer(END, idle_s=None)
    t = trigger(5.0)
    timer.on_batch([6 * NS, t])
    resumed = TrigTimer(END, None, timer.snapshot())
    out, _ = resumed.on_batch([7 * NS])
    assert released(out) == [t]


def test_auto_is_end_for_live_sources_and_event_otherwise() -> None:
    assert resolve_timing("auto", live=True) == END
    assert resolve_timing("auto", live=False) == EVENT
    assert resolve_timing("event", live=True) == EVENT
    assert load_config({"FACEMOMENT_TRIG_TIMING": "end"}).output.trig_timing == "end"
    with pytest.raises(ConfigError, match="trig_timing"):
        load_config({"FACEMOMENT_TRIG_TIMING": "later"})


@pytest.mark.parametrize("timing, cause", [("end", "end_of_stream"), ("event", "event")])
def test_timing_in_a_dataflow(timing: str, cause: str) -> None:
    from operators.trig_timing import time_triggers

    cfg = Config()
    cfg.output.trig_timing = timing
    t = trigger(2.0)  # ends at 4 s; frames go only to 3 s
    markers = [FramePresence("cam0", i, i * NS // 10) for i in range(31)]
    items: List[Any] = markers[:15] + [t] + markers[15:]
    flow = Dataflow("trig_timing_test")
    inp = op.input("in", flow, TestingSource(items))
    split = op.branch("split", inp, lambda x: isinstance(x, Trigger))
    timed = time_triggers("trig_timing", op.key_on("key", split.trues, lambda x: x.stream_id), split.falses, cfg, live=True)
    got_triggers: List[Any] = []
    got_records: List[Any] = []
    op.output("triggers", timed.items, TestingSink(got_triggers))
    op.output("records", timed.records, TestingSink(got_records))
    run_main(flow)
    assert got_triggers == [("cam0", t)]
    (rec,) = got_records
    assert rec.cause == cause and rec.key == t.key


def test_a_margin_holds_the_trig_past_t_end_by_that_much() -> None:
    timer = TrigTimer(END, idle_s=None, margin_ns=300_000_000)
    t = trigger(5.0)  # clip ends at 7 s; goes at 7.3 s of stream time
    out, _ = timer.on_batch([t, 7 * NS, int(7.2 * NS)])
    assert out == []
    out, _ = timer.on_batch([int(7.3 * NS)])
    assert released(out) == [t] and records(out)[0].newest_t_ns == int(7.3 * NS)
    late = trigger(5.1)  # decided after the stream passed its end plus the margin
    timer.on_batch([8 * NS])
    out, _ = timer.on_batch([late])
    assert released(out) == [late] and records(out)[0].cause == "end_reached"
    with pytest.raises(ValueError, match="margin"):
        TrigTimer(END, None, margin_ns=-1)


def test_trig_margin_ms_is_a_setting_with_a_range_and_reaches_the_dataflow() -> None:
    from operators.trig_timing import time_triggers

    assert Config().output.trig_margin_ms == 0.0
    assert load_config({"FACEMOMENT__OUTPUT__TRIG_MARGIN_MS": "250"}).output.trig_margin_ms == 250.0
    with pytest.raises(ConfigError, match="trig_margin_ms"):
        load_config({"FACEMOMENT__OUTPUT__TRIG_MARGIN_MS": "-5"})
    cfg = Config()
    cfg.output.trig_timing = "end"
    cfg.output.trig_margin_ms = 500.0
    t = trigger(1.0)  # ends at 3 s: released by the frame at 3.5 s, not the one at 3 s
    markers = [FramePresence("cam0", i, i * NS // 10) for i in range(41)]
    flow = Dataflow("trig_margin_test")
    inp = op.input("in", flow, TestingSource(markers[:15] + [t] + markers[15:]))
    split = op.branch("split", inp, lambda x: isinstance(x, Trigger))
    timed = time_triggers("trig_timing", op.key_on("key", split.trues, lambda x: x.stream_id), split.falses, cfg, live=True)
    got: List[Any] = []
    op.output("records", timed.records, TestingSink(got))
    run_main(flow)
    (rec,) = got
    assert (rec.cause, rec.newest_t_ns) == ("end_reached", 35 * NS // 10)
