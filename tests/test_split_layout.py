"""A, B* and C as separate processes give the triggers one process gives.

A: the frame daemon publishing the sample video (lossless, so no frame is lost).
B*: two `facemoment extract` processes, face+quality and pose+gesture, each
publishing OBS. C: a fusion-only dataflow subscribed to both OBS publishers.
On the batch preset, C's triggers equal those of the in-process run on the file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, List

import pytest

from facemoment.formats import sample
from facemoment.tools.daemon import run_daemon

from conftest import PYTHON, REPO, finish, free_port

COMMON = {
    "FACEMOMENT_PRESET": "batch",
    "FACEMOMENT_TRIG_ADDRESS": "none",
    "FACEMOMENT__OUTPUT__CLIPS": "false",
    "FACEMOMENT__OUTPUT__SUMMARY": "false",
}


def _triggers(out: Path) -> List[Dict]:
    rows = [json.loads(line) for line in (out / "triggers.jsonl").read_text().splitlines()]
    keep = ("stream", "frame_id", "t_ns", "event_t_ns", "reason", "score", "t_start_ns", "t_end_ns", "faces", "message")
    return [{k: row.get(k) for k in keep} for row in rows]


@pytest.mark.slow
def test_split_layout_triggers_equal_the_in_process_ones(flow_env: Dict[str, str], tmp_path: Path) -> None:
    video = sample.write_sample_video(tmp_path / "sample.mp4")

    single_out = tmp_path / "single"
    env = dict(flow_env, **COMMON, FACEMOMENT_SOURCE=str(video), FACEMOMENT_OUTPUT_DIR=str(single_out))
    single = subprocess.Popen(
        [PYTHON, "-m", "bytewax.run", "dataflows.facemoment"], cwd=REPO, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    finish([single], timeout=600)
    expected = _triggers(single_out)
    assert expected, "the sample gives triggers in one process"

    sockets = Path(tempfile.mkdtemp(prefix="fm", dir="/tmp"))  # short paths for ipc://
    split_out = tmp_path / "split"
    frames = f"tcp://127.0.0.1:{free_port()}"
    obs = [f"ipc://{sockets}/b1", f"ipc://{sockets}/b2"]
    procs = []
    try:
        fusion_env = dict(
            flow_env, **COMMON,
            FACEMOMENT_SOURCE=str(video),  # names the stream's file; C reads no frames
            FACEMOMENT_OBS_INPUTS=",".join(obs),
            FACEMOMENT_IDLE_TIMEOUT_S="300",  # a fallback: the publishers' end messages end it
            FACEMOMENT__ALIGN__IDLE_FLUSH_MS="600000",  # event time alone closes windows, as for a file
            FACEMOMENT_OUTPUT_DIR=str(split_out),
        )
        procs.append(subprocess.Popen(
            [PYTHON, "-m", "bytewax.run", "dataflows.facemoment"], cwd=REPO, env=fusion_env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ))
        for name, address, extractors in (("b1", obs[0], "face,quality"), ("b2", obs[1], "pose,gesture")):
            procs.append(subprocess.Popen(
                [PYTHON, "-m", "facemoment", "extract", frames, "--obs-address", address, "--extractors", extractors,
                 "--name", name, "--preset", "batch", "--idle-timeout", "3", "--subscriber-wait", "120",
                 "--output-dir", str(split_out)],
                cwd=REPO, env=dict(flow_env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            ))
        summary = run_daemon(
            str(video), frames, wait_subscribers=2, wait_timeout_s=300, lossless=True, log=lambda _m: None
        )
        assert summary.frames_sent == sample.sample_timeline().frame_count and summary.frames_dropped == 0
        finish(procs, timeout=600)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        shutil.rmtree(sockets, ignore_errors=True)

    assert _triggers(split_out) == expected
    trace = [json.loads(line) for line in (split_out / "trace.jsonl").read_text().splitlines()]
    (source,) = [r for r in trace if r["record_type"] == "source_summary"]
    frames_count = sample.sample_timeline().frame_count
    assert source["obs_received"]["frame"] == 2 * frames_count  # both publishers mark every frame
    assert source["lost_on_wire"] == 0 and source["malformed_obs"] == 0
    assert source["publishers"] == ["b1", "b2"] and source["end_reason"] == "publishers_ended"
    assert (split_out / "extract-b1.trace.jsonl").exists() and (split_out / "extract-b2.trace.jsonl").exists()
