"""`facemoment attach tcp://...`: join a running frame daemon and run the dataflow on it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2

from facemoment.runtime.loopback import free_port
from facemoment.formats.sample import render_frame
from tests.conftest import REPO, _flow_env

FRAMES = 45


def test_attach_runs_the_dataflow_on_a_daemons_stream(tmp_path: Path):
    video = tmp_path / "ride.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30, (320, 240))
    for i in range(FRAMES):
        writer.write(cv2.resize(render_frame(80 + i), (320, 240)))
    writer.release()
    port = free_port()
    env = _flow_env()
    daemon = subprocess.Popen(
        [sys.executable, "-m", "facemoment", "daemon", "--source", str(video), "--address", f"tcp://127.0.0.1:{port}",
         "--fps", "30", "--wait-subscribers", "1"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        out = tmp_path / "out"
        attach = subprocess.run(
            [sys.executable, "-m", "facemoment", "attach", f"tcp://127.0.0.1:{port}", "--output-dir", str(out),
             "--trig-address", "none", "--idle-timeout", "3", "--preset", "low_latency"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
        )
        assert attach.returncode == 0, attach.stderr[-3000:]
        daemon_out, _ = daemon.communicate(timeout=60)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    assert daemon.returncode == 0, daemon_out[-2000:]
    assert (out / "triggers.jsonl").exists() and (out / "trace.jsonl").exists()
    assert "FaceMoment run summary" in attach.stderr
    # The daemon's frames were received: the source summary counts them.
    records = [json.loads(line) for line in (out / "trace.jsonl").read_text().splitlines()]
    sources = [r for r in records if r["record_type"] == "source_summary"]
    # Under load a live subscriber may lose frames on the wire; it never invents any.
    assert sources and 0 < sum(r["frames_received"] for r in sources) <= FRAMES


def test_attach_refuses_what_is_not_an_address():
    run = subprocess.run([sys.executable, "-m", "facemoment", "attach", "video.mp4"], cwd=REPO, env=_flow_env(),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "not a ZMQ address" in run.stderr
