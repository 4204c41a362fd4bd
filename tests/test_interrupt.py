"""Ctrl-C (or SIGTERM) ends a run cleanly, with any worker or process count: the
input stops, windows flush, the clip of a trigger whose span has not passed yet is
still written, and every frame taken in is accounted for."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from facemoment.tools.daemon import run_daemon

from conftest import LOSSLESS_LIVE, PYTHON, REPO, free_port, wait_until

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
        output = flow.communicate(timeout=600)[0]  # a bound for a hung run
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
        output = flow.communicate(timeout=600)[0]  # a bound for a hung run
    finally:
        if flow.poll() is None:
            flow.kill()
    assert flow.returncode == 0, output[-3000:]
    assert "input stopped" in output and "FaceMoment run summary" in output
    processed = _extracted(trace)
    assert 0 < processed < frames // 2, processed  # the rest of the file was not read


def _rows(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _fused(trace: Path) -> int:
    return trace.read_text().count('"component":"fusion_process"') if trace.exists() else 0


# Bytewax runs the workers of `-w 2` and of a cluster process on threads of their own;
# the signal still reaches the draining handler, in every process.
LAYOUTS = {"two_workers": [["-w", "2"]], "two_processes": [["-i", "0"], ["-i", "1"]]}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_a_signal_drains_a_live_run_with_several_workers(layout, sig, flow_env, tmp_path):
    port = free_port()
    out = tmp_path / "out"
    # Lossless and deadline-free: the daemon waits for a slow subscriber, extraction
    # has no deadline, alignment calls nothing late; only the source buffer's byte
    # bound can drop (with a record).
    env = {**flow_env, "FACEMOMENT_SOURCE": f"tcp://127.0.0.1:{port}", "FACEMOMENT_OUTPUT_DIR": str(out),
           "FACEMOMENT_TRIG_ADDRESS": "none", "FACEMOMENT__EXTRACT__EXTRACTORS": "face,quality",
           "FACEMOMENT__OUTPUT__CLIPS": "false", **LOSSLESS_LIVE}
    runs = LAYOUTS[layout]
    if len(runs) > 1:
        addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in runs)
        runs = [args + ["-a", addresses] for args in runs]
    stop = threading.Event()
    daemon = threading.Thread(
        target=run_daemon,
        args=("sample", f"tcp://127.0.0.1:{port}"),
        kwargs=dict(fps=10, loop=True, wait_subscribers=2, wait_timeout_s=180, stop_event=stop, lossless=True,
                    log=lambda _m: None),
    )
    procs = [subprocess.Popen([PYTHON, "-m", "bytewax.run", "dataflows.facemoment", *args], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for args in runs]
    daemon.start()
    trace = out / "trace.jsonl"
    outputs = []
    try:
        assert wait_until(lambda: _fused(trace) >= 10 or any(p.poll() is not None for p in procs), 240)
        assert _fused(trace) >= 10, "no frame fused to interrupt after"
        for proc in procs:  # as Ctrl-C in a terminal or a stop of the containers does
            proc.send_signal(sig)
        outputs = [proc.communicate(timeout=600) for proc in procs]  # a bound for a hung run
    finally:
        stop.set()
        daemon.join(30)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, (stdout, stderr) in zip(procs, outputs):
        assert proc.returncode == 0, (stdout + stderr)[-3000:]
        assert f"interrupt ({signal.Signals(sig).name})" in stderr
    assert "FaceMoment run summary" in outputs[0][1]  # the first process prints it
    assert (out / "triggers.jsonl").exists()
    rows = _rows(trace)
    sources = [r for r in rows if r["record_type"] == "source_summary"]
    assert sorted(r["share"] for r in sources) == ["0of2", "1of2"]
    assert {r["end_reason"] for r in sources} == {"stop_event"}
    # Accounting, whatever the machine's speed: every frame a share received was either
    # handed on or dropped by the buffer with a record, and every frame handed on was fused.
    drops = [r for r in rows if r["record_type"] == "frame_drop"]
    assert {r["reason"] for r in drops} <= {"backpressure"}
    received = sum(r["frames_received"] for r in sources)
    emitted = sum(r["frames_emitted"] for r in sources)
    backpressure = sum(r["dropped_backpressure"] for r in sources)
    assert emitted > 0 and received == emitted + backpressure
    assert sum(r["dropped_count"] for r in drops) == backpressure
    assert _fused(trace) == emitted
