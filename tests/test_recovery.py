"""Crash and resume with Bytewax recovery: SIGKILL anywhere, restart, and the triggers
and clips are those of an uninterrupted run — none lost, none doubled."""

from __future__ import annotations

import json
import random
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from facemoment.formats.sample import ensure_sample_video

from conftest import PYTHON, REPO, write_sample_recording

pytestmark = pytest.mark.slow

KILL_POINTS = 5
SEED = 20261126


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    # Stamped as a publisher of the sample video stamps it, so it shares the video's time base.
    return write_sample_recording(tmp_path_factory.mktemp("rec") / "sample.fmrec", video_time_base=True)


def _env(base: Dict[str, str], out: Path, source: Path = None) -> Dict[str, str]:
    env = dict(base)
    env.update(
        {
            "FACEMOMENT_SOURCE": str(source or ensure_sample_video()),
            "FACEMOMENT_OUTPUT_DIR": str(out),
            "FACEMOMENT_PRESET": "batch",
            "FACEMOMENT_TRIG_ADDRESS": "none",
            "FACEMOMENT__EXTRACT__EXTRACTORS": "face,quality",
        }
    )
    return env


def _start(env: Dict[str, str], recovery: Path) -> subprocess.Popen:
    cmd = [PYTHON, "-m", "bytewax.run", "dataflows.facemoment", "-r", str(recovery), "-s", "1", "-b", "0"]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _extracted_up_to(trace: Path) -> int:
    if not trace.exists():
        return -1
    best = -1
    for line in trace.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line being written
        if record.get("record_type") == "frame_extract":
            best = max(best, record["frame_id"])
    return best


def _outcome(out: Path) -> Tuple[List[str], List[str], int]:
    triggers = [json.loads(line)["key"] for line in (out / "triggers.jsonl").read_text().splitlines()]
    manifest = [json.loads(line) for line in (out / "clips" / "clips.jsonl").read_text().splitlines()]
    clips = [m["key"] for m in manifest if m["status"] == "ok"]
    return triggers, clips, len(list((out / "clips").glob("*.mp4")))


def _init_recovery(path: Path) -> None:
    path.mkdir(parents=True)
    subprocess.run([PYTHON, "-m", "bytewax.recovery", str(path), "1"], check=True, cwd=REPO, timeout=60)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, module_flow_env):
    root = tmp_path_factory.mktemp("uninterrupted")
    _init_recovery(root / "rec")
    proc = _start(_env(module_flow_env, root / "out"), root / "rec")
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, output[-3000:]
    triggers, clips, files = _outcome(root / "out")
    assert triggers and sorted(clips) == sorted(triggers) and files == len(triggers)
    return sorted(triggers)


@pytest.mark.parametrize(
    "source, point", [("video", p) for p in range(KILL_POINTS)] + [("recording", p) for p in range(2)]
)
def test_sigkill_and_resume_gives_the_uninterrupted_result(source, point, uninterrupted, recording, module_flow_env, tmp_path):
    # Seeded kill points: after frame k has been extracted, k drawn per (source, point).
    kill_after_frame = random.Random(f"{SEED}:{source}:{point}").randrange(20, 340)
    env = _env(module_flow_env, tmp_path / "out", recording if source == "recording" else None)
    _init_recovery(tmp_path / "rec")
    proc = _start(env, tmp_path / "rec")
    deadline = time.monotonic() + 240
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if _extracted_up_to(tmp_path / "out" / "trace.jsonl") >= kill_after_frame:
                proc.kill()  # SIGKILL: no flush, no close
                break
            time.sleep(0.05)  # polling the trace file for the kill point, bounded by the deadline
    finally:
        if proc.poll() is None and time.monotonic() >= deadline:
            proc.kill()
        proc.communicate(timeout=60)
    assert proc.returncode == -9, f"the run ended before frame {kill_after_frame} was extracted"

    resumed = _start(env, tmp_path / "rec")
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output[-3000:]
    triggers, clips, files = _outcome(tmp_path / "out")
    assert len(triggers) == len(set(triggers)), "a trigger was written twice"
    assert len(clips) == len(set(clips)), "a clip was cut twice"
    assert sorted(triggers) == uninterrupted
    assert sorted(clips) == uninterrupted
    assert files == len(uninterrupted)
