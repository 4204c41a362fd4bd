"""Overload: frames arrive faster than extraction; every frame id is processed or
reported dropped, and the buffer never grows past its bound, for each strategy."""

from __future__ import annotations

import json
import struct
import threading
import time
from pathlib import Path
from typing import Set

import numpy as np
import pytest
import zmq
from bytewax.testing import run_main

import operators.extraction.registry as extractors
from dataflows.facemoment import build_flow
from facemoment.core.config import Config
from facemoment.core.types import Frame, Observation

from conftest import free_port

BUFFER = 6


class _Costly:
    """Stands in for a model: a fixed amount of work per frame (5 ms)."""

    name = "quality"

    def extract(self, frame: Frame) -> Observation:
        threading.Event().wait(0.005)
        return Observation("quality", frame.stream_id, frame.frame_id, frame.t_src_ns, signals={"quality_gate": 1.0})

    def close(self) -> None:
        pass


def _ids_in(path: Path, predicate) -> Set[int]:
    out: Set[int] = set()
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        record = json.loads(line)
        out |= predicate(record)
    return out


def _processed(record) -> Set[int]:
    if record.get("record_type") == "frame_extract":
        return {record["frame_id"]}
    return set()


def _dropped(record) -> Set[int]:
    if record.get("record_type") == "frame_drop":
        return set(record["dropped_frame_ids"])
    return set()


@pytest.mark.parametrize("strategy", ["skip_oldest", "skip_intermediate", "keyframe_only"])
def test_every_frame_is_processed_or_reported_and_the_buffer_stays_bounded(strategy, tmp_path, monkeypatch):
    monkeypatch.setattr(extractors, "build_extractor", lambda name, cfg: _Costly())
    port = free_port()
    cfg = Config()
    cfg.source.source = f"tcp://127.0.0.1:{port}"
    cfg.source.idle_timeout_s = 1.0
    cfg.source.buffer_frames = BUFFER
    cfg.source.drop_strategy = strategy
    cfg.extract.extractors = ["quality"]
    cfg.output.output_dir = str(tmp_path)
    cfg.output.trig_address = None
    cfg.output.clips = False
    trace = tmp_path / "trace.jsonl"

    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.SNDHWM, 10_000)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(f"tcp://127.0.0.1:{port}")
    runner = threading.Thread(target=run_main, args=(build_flow(cfg),))
    runner.start()
    try:
        assert pub.poll(60_000), "the dataflow never subscribed"
        assert pub.recv()[:1] == b"\x01"
        image = np.zeros((48, 64, 3), np.uint8)
        burst = 300
        for i in range(burst):  # far faster than 5 ms per frame
            pub.send_multipart([b"frame", struct.pack("!QQIIB", i, i * 33_333_333, 64, 48, 3), image.tobytes()])
        # Frames lost at the very end could not be told from frames never sent, so keep
        # sending (slowly) until the trace shows the burst's last id accounted for.
        i = burst
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            seen = _ids_in(trace, _processed) | _ids_in(trace, _dropped)
            if burst - 1 in seen or any(x >= burst for x in seen):
                break
            pub.send_multipart([b"frame", struct.pack("!QQIIB", i, i * 33_333_333, 64, 48, 3), image.tobytes()])
            i += 1
            pub.poll(50)  # pace the tail; the loop ends on what the trace shows
    finally:
        runner.join(60)
        pub.close()
        ctx.term()
    assert not runner.is_alive()

    processed = _ids_in(trace, _processed)
    dropped = _ids_in(trace, _dropped)
    assert set(range(burst)) <= processed | dropped, sorted(set(range(burst)) - processed - dropped)[:20]
    assert dropped, "the burst should have overloaded extraction"
    assert not processed & _ids_in(trace, lambda r: set(r["dropped_frame_ids"]) if r.get("reason") == "backpressure" else set())
    depths = [json.loads(line).get("queue_depth") for line in trace.read_text().splitlines()
              if json.loads(line).get("reason") == "backpressure"]
    assert depths and max(depths) <= BUFFER
    if strategy == "keyframe_only":
        assert all(f % cfg.source.keyframe_interval == 0 for f in processed)
