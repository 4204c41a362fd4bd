"""The Python API: triggers by callback and by iterator, configured by arguments only."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from facemoment.api import MomentDetector
from facemoment.core.config import ConfigError
from tests.conftest import REPO, _flow_env


@pytest.fixture(scope="module")
def short_ride(tmp_path_factory) -> Path:
    """The sample's first 4.5 s: the face comes in and looks at the camera."""
    from facemoment.formats.sample import ensure_sample_video

    path = tmp_path_factory.mktemp("ride") / "ride.mp4"
    src = cv2.VideoCapture(str(ensure_sample_video()))
    out = None
    for _ in range(135):
        ok, image = src.read()
        assert ok
        if out is None:
            out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (image.shape[1], image.shape[0]))
        out.write(image)
    src.release()
    out.release()
    return path


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Python API"):]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's Python API section has no python block"
    return match.group(1)


def test_readme_example_runs(short_ride: Path, tmp_path: Path):
    code = readme_example()
    assert '"ride.mp4"' in code
    script = tmp_path / "example.py"
    script.write_text(code.replace('"ride.mp4"', repr(str(short_ride))))
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=_flow_env(), capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    printed = [line for line in run.stdout.splitlines() if " score=" in line]
    assert printed and all(line.startswith("camera_gaze score=") for line in printed), run.stdout
    written = [json.loads(line) for line in (tmp_path / "highlights" / "triggers.jsonl").read_text().splitlines()]
    assert len(written) == len(printed)


def test_process_file_calls_back_and_returns_the_same_triggers(short_ride: Path, tmp_path: Path, monkeypatch):
    # The environment is not read: a stray setting there changes nothing.
    monkeypatch.setenv("FACEMOMENT_TRACE", "off")
    monkeypatch.setenv("FACEMOMENT__FUSION__COOLDOWN_SEC", "99")
    detector = MomentDetector(presets=["batch"], output_dir=tmp_path / "out", clips=False, trace="minimal",
                              fusion__cooldown_sec=1.0)
    assert detector.config.output.trace == "minimal" and detector.config.fusion.cooldown_sec == 1.0
    seen = []
    found = detector.process_file(short_ride, on_trigger=seen.append)
    assert found and [t.key for t in seen] == [t.key for t in found]
    assert all(t.reason == "camera_gaze" and 0 < t.score <= 1 for t in found)
    lines = (tmp_path / "out" / "triggers.jsonl").read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == [t.key for t in found]
    assert (tmp_path / "out" / "trace.jsonl").exists()


def test_bad_settings_are_refused(tmp_path: Path):
    with pytest.raises(ConfigError):
        MomentDetector(fusion={"no_such_setting": 1}, output_dir=tmp_path)
    with pytest.raises(ConfigError):
        MomentDetector(cooldown_sec=3, output_dir=tmp_path)  # needs its section
    with pytest.raises(FileNotFoundError):
        MomentDetector(output_dir=tmp_path).process_file(tmp_path / "missing.mp4")


def test_iterator_on_a_live_stream_stops_when_the_loop_is_left(tmp_path: Path):
    """Leaving the loop early ends the live source; the run's outputs are complete."""
    import subprocess as sp

    from facemoment.runtime.loopback import free_port

    port = free_port()
    daemon = sp.Popen(
        [sys.executable, "-m", "facemoment", "daemon", "--source", "sample", "--address", f"tcp://127.0.0.1:{port}",
         "--fps", "30", "--loop", "--wait-subscribers", "1", "--lossless"],
        cwd=REPO, env=_flow_env(), stdout=sp.DEVNULL, stderr=sp.DEVNULL,
    )
    try:
        # Lossless and deadline-free (as conftest.LOSSLESS_LIVE): what fires first does
        # not depend on how busy the machine is.
        detector = MomentDetector(
            output_dir=tmp_path / "live", clips=False, extractors=["face", "quality"],
            extract={"deadline_ms": 0}, source={"buffer_frames": 0, "buffer_max_mb": 1024},
            align={"allowed_lateness_ms": 3_600_000, "idle_flush_ms": 3_600_000},
        )
        first = None
        for trigger in detector.triggers(f"tcp://127.0.0.1:{port}", idle_timeout_s=30):
            first = trigger
            break
        assert first is not None and first.reason == "camera_gaze"
    finally:
        daemon.kill()
        daemon.wait()
    lines = (tmp_path / "live" / "triggers.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["key"] == first.key
    trace = [json.loads(line) for line in (tmp_path / "live" / "trace.jsonl").read_text().splitlines()]
    ends = [r.get("end_reason") for r in trace if r["record_type"] == "source_summary"]
    assert ends == ["stop_event"]
