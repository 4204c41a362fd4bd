"""A live ZMQ stream under Bytewax recovery: after SIGKILL and a restart, fusion
continues from its recovered state and the frames missed while down are a gap."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import List

import pytest

from facemoment.tools.daemon import run_daemon
from facemoment.formats.sample import sample_timeline, t_face_centred_ns, t_face_gone_ns

from conftest import PYTHON, REPO, free_port

pytestmark = pytest.mark.slow
LOOP = sample_timeline().frame_count


def _records(trace: Path) -> List[dict]:
    out = []
    if trace.exists():
        for line in trace.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass  # a line being written
    return out


def _wait_for(predicate, trace: Path, deadline: float) -> List[dict]:
    while time.monotonic() < deadline:
        records = _records(trace)
        if predicate(records):
            return records
        time.sleep(0.05)  # polling the trace for a condition, bounded by the deadline
    raise AssertionError("condition not reached in the trace")


def test_live_stream_resumes_with_its_fusion_state_and_reports_the_gap(flow_env, tmp_path):
    port = free_port()
    out, rec = tmp_path / "out", tmp_path / "rec"
    rec.mkdir()
    subprocess.run([PYTHON, "-m", "bytewax.recovery", str(rec), "1"], check=True, cwd=REPO, timeout=60)
    env = dict(flow_env)
    env.update(
        {
            "FACEMOMENT_SOURCE": f"tcp://127.0.0.1:{port}",
            "FACEMOMENT_OUTPUT_DIR": str(out),
            "FACEMOMENT_TRIG_ADDRESS": "none",
            "FACEMOMENT_IDLE_TIMEOUT_S": "2",
            "FACEMOMENT__EXTRACT__EXTRACTORS": "face,quality",
        }
    )
    cmd = [PYTHON, "-m", "bytewax.run", "dataflows.facemoment", "-r", str(rec), "-s", "1", "-b", "0"]
    trace = out / "trace.jsonl"
    stop = threading.Event()
    daemon = threading.Thread(
        target=run_daemon,
        args=("sample", f"tcp://127.0.0.1:{port}"),
        kwargs=dict(loop=True, wait_subscribers=1, wait_timeout_s=120, stop_event=stop, log=lambda _m: None),
    )
    first = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    daemon.start()
    deadline = time.monotonic() + 180
    try:
        # Kill once the gate is open and a snapshot has been taken since (1 s interval).
        records = _wait_for(lambda rs: any(r["record_type"] == "gate_change" and r["gate_open"] for r in rs), trace, deadline)
        opened_at = max(r["frame_id"] for r in records if r["record_type"] == "frame_extract")
        _wait_for(lambda rs: max((r["frame_id"] for r in rs if r["record_type"] == "frame_extract"), default=0) >= opened_at + 45, trace, deadline)
        first.kill()
        first.communicate(timeout=60)
        second = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            gap = _wait_for(lambda rs: any(r.get("where") == "while_down" for r in rs), trace, deadline)
            resumed_from = min(r["frame_id"] for r in gap if r.get("where") == "while_down")
            _wait_for(lambda rs: max((r["frame_id"] for r in rs if r["record_type"] == "frame_extract"), default=0) >= resumed_from + 30, trace, deadline)
        finally:
            stop.set()
            output = second.communicate(timeout=120)[0]
    finally:
        stop.set()
        daemon.join(30)
        for proc in (first,):
            if proc.poll() is None:
                proc.kill()
    assert second.returncode == 0, output[-3000:]

    records = _records(trace)
    drop = next(r for r in records if r.get("where") == "while_down")
    assert drop["reason"] == "queue_full" and drop["dropped_count"] >= 1
    first_after = drop["frame_id"]
    frames = sample_timeline().frames
    position_ns = frames[first_after % LOOP].t_ns
    # The restart came back while the face was still centred ...
    assert t_face_centred_ns() + 700_000_000 < position_ns < t_face_gone_ns()
    # ... and the gate stayed open: the recovered state needs no new 0.7 s to reopen.
    opens = [r for r in records if r["record_type"] == "gate_change" and r["gate_open"]]
    assert len([r for r in opens if r["frame_id"] // LOOP == first_after // LOOP]) == 1
    assert any(
        r["record_type"] == "trigger_decision" and r["frame_id"] >= first_after and r["gate_open"] for r in records
    )
