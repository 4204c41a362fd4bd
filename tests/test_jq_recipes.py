"""The design document's jq recipes, run verbatim on a trace the project writes."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from typing import Dict, List

import numpy as np
import pytest

from facemoment.core.config import Config
from connectors.trace_sink import TraceSink
from facemoment.core.types import Frame, Observation
from operators.align import late_record
from operators.extraction.orchestrator import Orchestrator

FACE_MS = {0: 42.0, 1: 44.0, 2: 46.0, 3: 40.0}
GESTURE_MS = {0: 55.0, 1: 60.0, 2: 45.0, 3: 70.0}


class _Fixed:
    """Reports a known processing time; the 'gesture' one blocks on frame 4 past the deadline."""

    def __init__(self, name: str, table: Dict[int, float], gate: threading.Event):
        self.name, self.table, self.gate = name, table, gate

    def extract(self, frame: Frame) -> Observation:
        if frame.frame_id == 4 and self.name == "gesture":
            self.gate.wait(30)
        return Observation(self.name, frame.stream_id, frame.frame_id, frame.t_src_ns,
                           processing_ms=self.table.get(frame.frame_id, 1.0))

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    """A trace with known timings, one timeout, one late observation and one backpressure drop."""
    cfg = Config()
    cfg.extract.extractors = ["face", "gesture"]
    cfg.extract.deadline_ms = 150
    gate = threading.Event()
    orch = Orchestrator(cfg, lambda name, _c: _Fixed(name, FACE_MS if name == "face" else GESTURE_MS, gate))
    frames = [Frame("cam0", i, i * 33_333_333, np.zeros((2, 2, 3), np.uint8)) for i in range(5)]
    try:
        records = [r for r in orch.run(frames[:4]) if isinstance(r, dict)]
        records += [r for r in orch.run(frames[4:]) if isinstance(r, dict)]
    finally:
        gate.set()
        orch.close()
    late = Observation("gesture", "cam0", 2, 2 * 33_333_333, ingest_ns=1)
    records.append(late_record((0, late)))
    records.append({"record_type": "frame_drop", "frame_id": 9, "stream": "cam0",
                    "dropped_frame_ids": [6, 7, 8], "reason": "backpressure", "queue_depth": 8})
    path = tmp_path_factory.mktemp("trace") / "trace.jsonl"
    part = TraceSink(path, "normal").build_part("trace", "trace.jsonl", None)
    part.write_batch(records)
    part.close()
    return path


def jq(trace_path, pipeline: str) -> str:
    assert shutil.which("jq"), "jq is installed by the project's set-up (.ci/run)"
    return subprocess.run(["bash", "-c", pipeline], cwd=trace_path.parent, capture_output=True,
                          text=True, check=True, timeout=60).stdout


def stream(text: str) -> List:
    decoder, out, i = json.JSONDecoder(), [], 0
    text = text.strip()
    while i < len(text):
        value, i = decoder.raw_decode(text, i)
        out.append(value)
        while i < len(text) and text[i].isspace():
            i += 1
    return out


def test_bottleneck_query(trace):
    result = json.loads(jq(trace, """cat trace.jsonl | jq -s '
    [.[] | select(.record_type=="timing")]
    | group_by(.component)
    | map({
        component: .[0].component,
        avg_ms: ([.[].processing_ms] | add / length),
        max_ms: ([.[].processing_ms] | max)
      })'"""))
    by = {row["component"]: row for row in result}
    assert by["face"]["avg_ms"] == pytest.approx(sum(FACE_MS.values()) / 5 + 1.0 / 5)
    assert by["face"]["max_ms"] == 46.0
    # Frame 4's gesture missed the deadline: it has no timing, only a timeout drop.
    assert by["gesture"]["avg_ms"] == pytest.approx(sum(GESTURE_MS.values()) / 4)
    assert by["gesture"]["max_ms"] == 70.0
    assert "orchestrator" in by
    assert max(by, key=lambda c: by[c]["avg_ms"]) == "gesture"  # the bottleneck


def test_sync_delay_frames(trace):
    rows = stream(jq(trace, """cat trace.jsonl | jq 'select(.record_type=="sync_delay")'"""))
    assert [(r["frame_id"], r["waiting_for"]) for r in rows] == [(2, ["gesture"])]


def test_slow_components_over_50ms(trace):
    rows = stream(jq(trace, """cat trace.jsonl | jq 'select(.record_type=="timing") | select(.processing_ms > 50)'"""))
    slow = sorted((r["component"], r["frame_id"]) for r in rows if r["component"] != "orchestrator")
    assert slow == [("gesture", 0), ("gesture", 1), ("gesture", 3)]


def test_frame_drop_causes(trace):
    rows = stream(jq(trace, """cat trace.jsonl | jq 'select(.record_type=="frame_drop") | {reason, count: (.dropped_count // (.dropped_frame_ids | length))}'"""))
    assert rows == [{"reason": "timeout", "count": 1}, {"reason": "backpressure", "count": 3}]


def test_components_most_often_waited_for(trace):
    out = jq(trace, """cat trace.jsonl | jq 'select(.record_type=="sync_delay") | .waiting_for[]' | sort | uniq -c | sort -rn""")
    assert out.split() == ["1", '"gesture"']


def test_queue_depth_over_time(trace):
    rows = stream(jq(trace, """cat trace.jsonl | jq 'select(.record_type=="timing") | {frame: .frame_id, queue: .queue_depth}'"""))
    assert rows and all(set(r) == {"frame", "queue"} for r in rows)
    assert {r["frame"] for r in rows} == {0, 1, 2, 3, 4}
    assert all(isinstance(r["queue"], int) for r in rows)
