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
from facemoment.formats.sample import render_frame, sample_timeline

from conftest import LOSSLESS_LIVE, PYTHON, REPO, free_port

pytestmark = pytest.mark.slow


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


@pytest.fixture(scope="module")
def centred_video(tmp_path_factory) -> Path:
    """The sample's frames with the face centred (2.2-9.2 s), as a file the daemon loops:
    wherever a restart lands in the stream, however long it takes, the face is centred."""
    import cv2

    frames = sample_timeline().frames
    centred = [i for i, f in enumerate(frames) if f.face_inside and f.face_center_distance <= 0.4]
    assert centred == list(range(centred[0], centred[-1] + 1))
    path = tmp_path_factory.mktemp("centred") / "centred.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (640, 480))
    for index in centred:
        writer.write(render_frame(index))
    writer.release()
    return path


def test_live_stream_resumes_with_its_fusion_state_and_reports_the_gap(centred_video, flow_env, tmp_path):
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
            "FACEMOMENT__OUTPUT__CLIPS": "false",  # not what this test is about
            # Every frame fused with its face result, however busy the machine: the
            # gate can only close if the recovered state is lost.
            **LOSSLESS_LIVE,
        }
    )
    cmd = [PYTHON, "-m", "bytewax.run", "dataflows.facemoment", "-r", str(rec), "-s", "1", "-b", "0"]
    trace = out / "trace.jsonl"
    stop = threading.Event()
    # Lossless to each subscriber while it is there; while the flow is down nobody
    # subscribes and the frames sent meanwhile are lost: the gap.
    daemon = threading.Thread(
        target=run_daemon,
        args=(str(centred_video), f"tcp://127.0.0.1:{port}"),
        kwargs=dict(fps=10, loop=True, lossless=True, wait_subscribers=1, wait_timeout_s=120, stop_event=stop,
                    log=lambda _m: None),
    )
    first = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    daemon.start()
    deadline = time.monotonic() + 240
    second = None
    try:
        # Kill once the gate is open and a snapshot has been taken since (1 s interval).
        records = _wait_for(lambda rs: any(r["record_type"] == "gate_change" and r["gate_open"] for r in rs), trace, deadline)
        opened_at = max(r["frame_id"] for r in records if r["record_type"] == "frame_extract")
        _wait_for(lambda rs: _newest_extracted(rs) >= opened_at + 15, trace, deadline)
        first.kill()
        first.communicate(timeout=60)
        second = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            gap = _wait_for(lambda rs: any(r.get("where") == "while_down" for r in rs), trace, deadline)
            resumed_from = min(r["frame_id"] for r in gap if r.get("where") == "while_down")
            _wait_for(lambda rs: _newest_extracted(rs) >= resumed_from + 10, trace, deadline)
        finally:
            stop.set()
            output = second.communicate(timeout=600)[0]  # a bound for a hung run
    finally:
        stop.set()
        daemon.join(30)
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
    assert second.returncode == 0, output[-3000:]

    records = _records(trace)
    drop = next(r for r in records if r.get("where") == "while_down")
    assert drop["reason"] == "queue_full" and drop["dropped_count"] >= 1
    first_after = drop["frame_id"]
    # The gate opened once, before the kill: the recovered state needs no new 0.7 s to
    # reopen, and it never closed (every frame shows the centred face).
    changes = [r for r in records if r["record_type"] == "gate_change"]
    assert [r["gate_open"] for r in changes] == [True]
    assert changes[0]["frame_id"] < first_after
    assert any(
        r["record_type"] == "trigger_decision" and r["frame_id"] >= first_after and r["gate_open"] for r in records
    )


def _newest_extracted(records: List[dict]) -> int:
    return max((r["frame_id"] for r in records if r["record_type"] == "frame_extract"), default=0)
