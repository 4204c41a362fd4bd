"""`facemoment benchmark VIDEO`: the bench figures on any file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from facemoment.formats.sample import render_frame
from tests.conftest import REPO, _flow_env

FRAMES = 40


@pytest.fixture(scope="module")
def footage(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("footage") / "mine.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20, (320, 240))
    for i in range(FRAMES):
        writer.write(cv2.resize(render_frame(60 + 3 * i), (320, 240)))
    writer.release()
    return path


def _benchmark(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facemoment", "benchmark", *args], cwd=REPO, env=_flow_env(),
                          capture_output=True, text=True, timeout=600)


def test_benchmark_reports_costs_and_end_to_end_fps(footage: Path):
    run = _benchmark(str(footage), "--frames", "8", "--extractors", "face,quality", "--json")
    assert run.returncode == 0, run.stderr[-3000:]
    r = json.loads(run.stdout)
    assert (r["width"], r["height"], r["frames_in_video"], r["frames_measured"]) == (320, 240, FRAMES, 8)
    assert r["video_fps"] == pytest.approx(20.0)
    assert set(r["extractors"]) == {"face", "quality"}
    for cost in r["extractors"].values():
        assert cost["frames"] == 8 and 0 < cost["median_ms"] <= cost["p90_ms"] + 1e-9
    assert r["sum_median_ms"] == pytest.approx(sum(c["median_ms"] for c in r["extractors"].values()), abs=0.02)
    e2e = r["end_to_end"]
    assert e2e["seconds"] > 0 and e2e["fps"] == pytest.approx(FRAMES / e2e["seconds"], rel=0.01)
    # Every frame went through fusion (the dataflow ran for real).
    assert e2e["frames_fused"] is not None and e2e["frames_fused"] >= FRAMES - 20


def test_benchmark_text_and_bad_input(footage: Path, tmp_path: Path):
    run = _benchmark(str(footage), "--frames", "4", "--extractors", "quality", "--no-end-to-end")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Per-extractor cost" in run.stdout and "quality" in run.stdout and "End to end" not in run.stdout
    assert _benchmark(str(tmp_path / "none.mp4")).returncode == 2
    assert _benchmark(str(footage), "--extractors", "face,nose").returncode == 2
