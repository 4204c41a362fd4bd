"""`facemoment debug`: the annotated video is written, decodes, and is drawn on where the face is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facemoment.formats.sample import ensure_sample_video, sample_timeline
from tests.conftest import REPO, _flow_env, decode_all

FRAMES = 100  # the face comes in at 2.0 s, camera_gaze fires near 3.0 s


@pytest.fixture(scope="module")
def debug_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("debug") / "annotated.mp4"
    env = _flow_env()
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    run = subprocess.run(
        [sys.executable, "-m", "facemoment", "debug", "sample", "-o", str(out), "--show", "--max-frames", str(FRAMES)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run, out


def _changed_share(a: np.ndarray, b: np.ndarray, box) -> float:
    """Share of pixels around the face's box (the box grown by half) that the drawing changed."""
    h, w = a.shape[:2]
    x, y, bw, bh = box
    x0, y0 = max(0, int((x - bw / 2) * w)), max(0, int((y - bh / 2) * h))
    x1, y1 = min(w, int((x + 1.5 * bw) * w)), min(h, int((y + 1.5 * bh) * h))
    diff = np.abs(a[y0:y1, x0:x1].astype(np.int16) - b[y0:y1, x0:x1].astype(np.int16)).max(axis=2)
    return float((diff > 60).mean())


def test_annotated_video_decodes_with_every_frame(debug_run):
    run, out = debug_run
    frames = decode_all(out)
    assert len(frames) == FRAMES
    assert frames[0].shape == (480, 640, 3)
    assert f"{FRAMES} frames annotated (640x480)" in run.stdout
    assert "no display here" in run.stderr  # --show without a display still writes the file


def test_face_box_is_drawn_where_the_face_is_and_not_elsewhere(debug_run):
    _run, out = debug_run
    annotated = decode_all(out)
    raw = decode_all(ensure_sample_video())
    timeline = sample_timeline()
    with_face = 80
    box = timeline.frames[with_face].face_box
    assert box is not None and timeline.frames[with_face].face_inside
    assert timeline.frames[10].face_box is None
    drawn = _changed_share(annotated[with_face], raw[with_face], box)
    nothing = _changed_share(annotated[10], raw[10], box)  # same place, no face: only coding noise
    assert drawn > 0.02 and nothing < 0.005, (drawn, nothing)


def test_each_trigger_is_shown_as_it_fires(debug_run):
    run, out = debug_run
    fired = [line for line in run.stdout.splitlines() if "TRIGGER camera_gaze" in line]
    assert fired, run.stdout
    frame_id = int(fired[0].split()[1])
    annotated = decode_all(out)
    raw = decode_all(ensure_sample_video())
    strip = lambda img: img[:30].astype(np.int16)  # noqa: E731 - the banner's strip
    assert np.abs(strip(annotated[frame_id]) - strip(raw[frame_id])).mean() > 40
    assert np.abs(strip(annotated[frame_id - 5]) - strip(raw[frame_id - 5])).mean() < 15


def test_debug_reads_a_visualbase_stream(tmp_path):
    """A tcp:// source: frames from a running daemon are annotated until it goes quiet."""
    from facemoment.runtime.loopback import free_port

    port = free_port()
    env = _flow_env()
    daemon = subprocess.Popen(
        [sys.executable, "-m", "facemoment", "daemon", "--source", "sample", "--address", f"tcp://127.0.0.1:{port}",
         "--fps", "30", "--max-frames", "30", "--wait-subscribers", "1"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    out = tmp_path / "live.mp4"
    try:
        run = subprocess.run(
            [sys.executable, "-m", "facemoment", "debug", f"tcp://127.0.0.1:{port}", "-o", str(out), "--idle-timeout", "3"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
        )
    finally:
        if daemon.poll() is None:
            daemon.kill()
        daemon.wait()
    assert run.returncode == 0, run.stderr[-3000:]
    frames = decode_all(out)
    # A slow annotator may miss some of a live stream's frames, never add any.
    assert 0 < len(frames) <= 30 and frames[0].shape == (480, 640, 3)
    assert f"{len(frames)} frames annotated (640x480)" in run.stdout


def _scenario_video(path: Path) -> Path:
    """A second scene: the sample played backwards (the rider is there first, then leaves)."""
    import cv2

    frames = decode_all(ensure_sample_video())[::-1]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (frames[0].shape[1], frames[0].shape[0]))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def _flow_triggers(source: str, cfg, out_dir: Path):
    """What `python -m bytewax.run` fires on `source` with `cfg`, through the Python API's run."""
    from facemoment.tools.api import MomentDetector

    detector = MomentDetector(config=cfg, output_dir=out_dir)
    return detector.process_file(source)


@pytest.mark.parametrize("scene", ["sample", "backwards"])
def test_debug_fires_what_the_flow_fires(scene, tmp_path):
    """debug runs the flow's own stages: the same triggers, at the same times, also with
    the lean preset, whose carried results only the flow's fusion step fills in."""
    from facemoment.core.config import load_config
    from facemoment.tools.debug_view import run_debug

    source = "sample" if scene == "sample" else str(_scenario_video(tmp_path / "backwards.mp4"))
    cfg = load_config(env={}, presets=["batch", "lean"])
    cfg.output.clips = False
    cfg.output.trig_address = None
    debugged = run_debug(source, None, cfg)
    fired = _flow_triggers(source, cfg, tmp_path / "flow")
    key = lambda t: (t.reason, t.t_start_ns, t.t_end_ns, round(t.score, 6))  # noqa: E731
    assert fired, "the scene must fire something for the comparison to mean anything"
    assert [key(t) for t in debugged.triggers] == [key(t) for t in fired]
    assert debugged.frames > 0
