"""The whole path on the built-in sample: daemon → ZMQ → dataflow → TRIG, triggers.jsonl,
clips; lossless and deadline-free, so every frame is fused whatever the machine's load."""

from __future__ import annotations

import json
import re
import subprocess

import cv2
import pytest

from facemoment.tools.daemon import run_daemon
from facemoment.core.config import FusionConfig
from facemoment.formats.sample import sample_timeline, t_face_centred_ns, t_face_gone_ns
from facemoment.runtime.trig_listener import TrigListener

from conftest import LOSSLESS_LIVE, PYTHON, REPO, free_port

# The documented TRIG grammar, written independently of facemoment.formats.wire.
TRIG_RE = re.compile(
    r"^TRIG label=(?P<label>\S+) t_start_ns=(?P<t_start_ns>\d+) t_end_ns=(?P<t_end_ns>\d+) "
    r"faces=(?P<faces>\d+) score=(?P<score>\d+\.\d{3}) reason=(?P<reason>[a-z_]+)$"
)


def _clip_seconds(path) -> float:
    cap = cv2.VideoCapture(str(path))
    try:
        frames = 0
        while cap.read()[0]:
            frames += 1
        return frames / cap.get(cv2.CAP_PROP_FPS)
    finally:
        cap.release()


@pytest.mark.slow
def test_sample_through_zmq_gives_triggers_only_while_the_face_is_centred(flow_env, tmp_path):
    frames_port, trig_port = free_port(), free_port()
    trig_address = f"tcp://127.0.0.1:{trig_port}"
    flow_env.update(
        {
            "FACEMOMENT_SOURCE": f"tcp://127.0.0.1:{frames_port}",
            "FACEMOMENT_TRIG_ADDRESS": trig_address,
            "FACEMOMENT_IDLE_TIMEOUT_S": "2",
            **LOSSLESS_LIVE,  # what fires must not depend on how busy the machine is
        }
    )
    listener = TrigListener(trig_address)
    listener.start()
    flow = subprocess.Popen(
        [PYTHON, "-m", "bytewax.run", "dataflows.facemoment"],
        cwd=REPO,
        env=flow_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        summary = run_daemon(
            "sample", f"tcp://127.0.0.1:{frames_port}", wait_subscribers=1, wait_timeout_s=120, lossless=True,
            log=lambda _m: None,
        )
        output, _ = flow.communicate(timeout=900)  # a bound for a hung run; a busy machine is slow
    finally:
        if flow.poll() is None:
            flow.kill()
        listener.close(10)
    assert flow.returncode == 0, output
    assert summary.frames_sent == sample_timeline().frame_count and summary.frames_dropped == 0

    out = tmp_path / "out"
    trace = [json.loads(line) for line in (out / "trace.jsonl").read_text().splitlines()]
    # Accounting: every frame sent was received, handed on and fused, with every extractor.
    (source,) = [r for r in trace if r["record_type"] == "source_summary"]
    assert source["frames_received"] == source["frames_emitted"] == summary.frames_sent
    fused = [r for r in trace if r["record_type"] == "timing" and r["component"] == "fusion_process"]
    assert len(fused) == summary.frames_sent
    assert not [r for r in trace if r["record_type"] in ("frame_drop", "sync_delay")]

    triggers = [json.loads(line) for line in (out / "triggers.jsonl").read_text().splitlines()]
    assert triggers, output
    centred, gone = t_face_centred_ns(), t_face_gone_ns()
    gate_open_ns = int(FusionConfig().gate.open_duration_sec * 1e9)
    for trig in triggers:
        # Fired while the face is present and centred, never while it is absent.
        assert centred + gate_open_ns <= trig["t_ns"] < gone, trig
        frame = sample_timeline().frames[trig["frame_id"]]
        assert frame.face_inside and frame.face_center_distance <= 0.4
    assert min(t["t_ns"] for t in triggers) >= centred + gate_open_ns

    # The TRIG messages visualbase would receive: topic msg, text per the documented grammar.
    texts = listener.texts
    parsed = [TRIG_RE.match(t) for t in texts]
    assert all(parsed), texts
    assert [(int(m["t_start_ns"]), int(m["t_end_ns"]), m["reason"]) for m in parsed] == [
        (t["t_start_ns"], t["t_end_ns"], t["reason"]) for t in triggers
    ]
    assert [t["message"] for t in triggers] == texts

    # Clips from the live ring buffer: pre + post seconds long.
    fusion = FusionConfig()
    clips = sorted((out / "clips").glob("*.mp4"))
    assert len(clips) == len(triggers)
    for clip in clips:
        assert abs(_clip_seconds(clip) - (fusion.pre_sec + fusion.post_sec)) <= 0.2, clip.name
        assert re.match(r"^\d{8}_\d{6}_highlight_\d\.\d\d\.mp4$", clip.name)  # visualbase's ring-buffer name
    assert "FaceMoment run summary" in output

    # A live source: each TRIG went out once its stream had reached the clip's end
    # (visualbase's live ring buffer then holds the whole span), or at the stream's end.
    releases = [r for r in trace if r["record_type"] == "trig_release"]
    assert sorted(r["key"] for r in releases) == sorted(t["key"] for t in triggers)
    for release in releases:
        assert release["timing"] == "end" and release["released_ns"] >= release["decided_ns"]
        assert release["cause"] in ("end_reached", "end_of_stream", "idle"), release
        if release["cause"] == "end_reached":
            assert release["newest_t_ns"] >= release["t_end_ns"]
    assert any(r["cause"] == "end_reached" and r["held_ms"] > 0 for r in releases)
