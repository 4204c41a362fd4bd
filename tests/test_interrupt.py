"""Ctrl-C ends a live run cleanly: the input stops, windows flush, and the clip of a
trigger whose span has not passed yet is still written."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from facemoment.tools.daemon import run_daemon

from conftest import PYTHON, REPO, free_port

pytestmark = pytest.mark.slow


def test_sigint_flushes_outputs_and_pending_clips(flow_env, tmp_path):
    port = free_port()
    out = tmp_path / "out"
    env = dict(flow_env)
    env.update(
        {
            "FACEMOMENT_SOURCE": f"tcp://127.0.0.1:{port}",
            "FACEMOMENT_OUTPUT_DIR": str(out),
            "FACEMOMENT_TRIG_ADDRESS": "none",
            "FACEMOMENT__EXTRACT__EXTRACTORS": "face,quality",
        }
    )
    stop = threading.Event()
    daemon = threading.Thread(
        target=run_daemon,
        args=("sample", f"tcp://127.0.0.1:{port}"),
        kwargs=dict(loop=True, wait_subscribers=1, wait_timeout_s=120, stop_event=stop, log=lambda _m: None),
    )
    flow = subprocess.Popen([PYTHON, "-m", "bytewax.run", "dataflows.facemoment"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    daemon.start()
    triggers = out / "triggers.jsonl"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (triggers.exists() and triggers.read_text().strip()):
            time.sleep(0.05)  # polling for the first trigger, bounded by the deadline
        assert triggers.exists() and triggers.read_text().strip(), "no trigger to interrupt after"
        flow.send_signal(signal.SIGINT)  # the trigger's post-roll (2 s) has not passed yet
        output = flow.communicate(timeout=120)[0]
    finally:
        stop.set()
        daemon.join(30)
        if flow.poll() is None:
            flow.kill()
    assert flow.returncode == 0, output[-3000:]
    assert "interrupt" in output and "FaceMoment run summary" in output
    keys = [json.loads(line)["key"] for line in triggers.read_text().splitlines()]
    manifest = [json.loads(line) for line in (out / "clips" / "clips.jsonl").read_text().splitlines()]
    assert sorted(m["key"] for m in manifest) == sorted(keys)
    assert all(m["status"] == "ok" for m in manifest)
    summaries = [json.loads(line) for line in (out / "trace.jsonl").read_text().splitlines()
                 if '"source_summary"' in line]
    assert [s["end_reason"] for s in summaries] == ["stop_event"]


def _long_video(path: Path, n: int) -> Path:
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (160, 120))
    for i in range(n):
        writer.write(np.full((120, 160, 3), i % 256, np.uint8))
    writer.release()
    return path


def _extracted(trace: Path) -> int:
    if not trace.exists():
        return 0
    return trace.read_text().count('"record_type":"frame_extract"')


@pytest.mark.parametrize("entry, sig", [("cli", signal.SIGTERM), ("module", signal.SIGINT)])
def test_a_signal_stops_the_input_of_a_file_run(entry, sig, flow_env, tmp_path):
    frames = 3000
    video = _long_video(tmp_path / "long.avi", frames)
    out = tmp_path / "out"
    env = dict(flow_env)
    env.update({"FACEMOMENT_TRIG_ADDRESS": "none", "FACEMOMENT__EXTRACT__EXTRACTORS": "quality",
                "FACEMOMENT__OUTPUT__CLIPS": "false", "FACEMOMENT_OUTPUT_DIR": str(out)})
    if entry == "cli":
        cmd = [PYTHON, "-m", "facemoment", "process", str(video), "--output-dir", str(out)]
    else:
        cmd = [PYTHON, "-m", "bytewax.run", "dataflows.facemoment"]
        env["FACEMOMENT_SOURCE"] = str(video)
    flow = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    trace = out / "trace.jsonl"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and _extracted(trace) == 0 and flow.poll() is None:
            time.sleep(0.02)  # polling the trace for the first processed frame, bounded by the deadline
        assert _extracted(trace) > 0, "no frame processed to interrupt after"
        flow.send_signal(sig)
        output = flow.communicate(timeout=120)[0]
    finally:
        if flow.poll() is None:
            flow.kill()
    assert flow.returncode == 0, output[-3000:]
    assert "input stopped" in output and "FaceMoment run summary" in output
    processed = _extracted(trace)
    assert 0 < processed < frames // 2, processed  # the rest of the file was not read
