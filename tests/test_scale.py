"""Scaling out gives the same triggers: 1 worker, N workers, 2 processes, a -i/-a cluster;
and several cameras in one dataflow keep their triggers apart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

import cv2
import pytest

from facemoment.formats.sample import ensure_sample_video, render_frame, sample_timeline

from conftest import PYTHON, free_port, run_env, run_flows

pytestmark = pytest.mark.slow


def _env(flow_env, out: Path, **extra) -> Dict[str, str]:
    settings = {
        "FACEMOMENT_PRESET": "batch",
        # Face and quality carry the sample's triggers; 15 fps halves the work.
        "FACEMOMENT__EXTRACT__EXTRACTORS": "face,quality",
        "FACEMOMENT__SOURCE__FPS": "15",
        "FACEMOMENT__OUTPUT__CLIPS": "false",
    }
    return run_env(flow_env, ensure_sample_video(), out, **{**settings, **extra})


def _triggers(out: Path) -> List[tuple]:
    rows = [json.loads(line) for line in (out / "triggers.jsonl").read_text().splitlines()]
    return sorted((r["stream"], r["frame_id"], r["event_t_ns"], r["reason"], r["score"], r["t_start_ns"], r["t_end_ns"]) for r in rows)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, request):
    flow_env = request.getfixturevalue("module_flow_env")
    out = tmp_path_factory.mktemp("one_worker")
    run_flows([[PYTHON, "-m", "bytewax.run", "dataflows.facemoment"]], _env(flow_env, out))
    triggers = _triggers(out)
    assert triggers and {t[3] for t in triggers} == {"camera_gaze"}
    return triggers


def test_n_workers_give_the_same_triggers(reference, module_flow_env, tmp_path):
    run_flows([[PYTHON, "-m", "bytewax.run", "dataflows.facemoment", "-w", "3"]], _env(module_flow_env, tmp_path))
    assert _triggers(tmp_path) == reference


def test_bytewax_testing_two_processes_give_the_same_triggers(reference, module_flow_env, tmp_path):
    run_flows([[PYTHON, "-m", "bytewax.testing", "dataflows.facemoment", "-p", "2"]], _env(module_flow_env, tmp_path))
    assert _triggers(tmp_path) == reference


def test_two_process_cluster_gives_the_same_triggers(reference, module_flow_env, tmp_path):
    addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(2))
    cmds = [[PYTHON, "-m", "bytewax.run", "dataflows.facemoment", "-i", str(i), "-a", addresses] for i in range(2)]
    run_flows(cmds, _env(module_flow_env, tmp_path))
    assert _triggers(tmp_path) == reference


def test_two_cameras_keep_their_triggers_apart(module_flow_env, tmp_path):
    # cam1 shows the sample's background only: no face, so no trigger may carry its id.
    empty = tmp_path / "empty.avi"
    writer = cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 30, (640, 480))
    background = [f.index for f in sample_timeline().frames if f.face_box is None]
    for k in range(200):  # long enough for a per-stream fps_summary (every 5 s of event time)
        writer.write(render_frame(background[k % len(background)]))
    writer.release()
    out = tmp_path / "out"
    env = _env(module_flow_env, out, FACEMOMENT__SOURCE__EXTRA=f"cam1={empty}", FACEMOMENT__OUTPUT__CLIPS="true")
    run_flows([[PYTHON, "-m", "bytewax.run", "dataflows.facemoment", "-w", "2"]], env)
    triggers = _triggers(out)
    assert triggers and {t[0] for t in triggers} == {"cam0"}
    trace = [json.loads(line) for line in (out / "trace.jsonl").read_text().splitlines()]
    fused_streams = {r["stream"] for r in trace if r["record_type"] == "fps_summary"}
    assert fused_streams == {"cam0", "cam1"}
    clips = [json.loads(line) for line in (out / "clips" / "clips.jsonl").read_text().splitlines()]
    assert {c["stream"] for c in clips} == {"cam0"} and all(c["status"] == "ok" for c in clips)
    assert len(clips) == len(triggers)
