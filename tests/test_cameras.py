"""Several cameras on one box: whole cameras spread over the workers, the same
triggers with one worker, two workers and two processes, and a camera analysed on
its detect stream whose clips come from its full stream."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import cv2
import pytest

from facemoment.formats.sample import render_frame

from conftest import PYTHON, run_flows

# Four short cameras cut from the sample (30 fps indices; the face is in 72..270):
# forwards, backwards, and two more cuts.
CUTS = {
    "gate_a": list(range(40, 200)),
    "gate_b": list(range(300, 140, -1)),
    "gate_c": list(range(50, 170)),
    "gate_d": list(range(120, 280)),
}


def write_cut(path: Path, indices: Sequence[int]) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (640, 480))
    for index in indices:
        writer.write(render_frame(index))
    writer.release()
    return path


@pytest.fixture(scope="module")
def four_cameras(tmp_path_factory) -> Dict[str, Path]:
    folder = tmp_path_factory.mktemp("cameras")
    return {name: write_cut(folder / f"{name}.avi", indices) for name, indices in CUTS.items()}


def cameras_toml(files: Dict[str, Path], out: Path) -> str:
    lines = [
        'preset = "batch"',
        "[extract]",
        'extractors = ["face", "quality"]',
        "[source]",
        "fps = 15.0",
        "[output]",
        f"output_dir = {json.dumps(str(out))}",
        'trig_address = "none"',
        "clips = false",
    ]
    for name, path in files.items():
        lines += [f"[cameras.{name}]", f"source = {json.dumps(str(path))}"]
    return "\n".join(lines) + "\n"


def write_gate_video(path: Path, size: Tuple[int, int]) -> Path:
    """The sample's frames 60..269 (the face comes and goes) at `size`."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, size)
    for index in range(60, 270):
        image = render_frame(index)
        writer.write(image if size == (640, 480) else cv2.resize(image, size, interpolation=cv2.INTER_LINEAR))
    writer.release()
    return path


def start_daemon(video: Path, env: Dict[str, str], *args: str) -> Any:
    """`facemoment daemon` publishing `video` at 15 fps, lossless, with `args` (addresses, waits)."""
    import subprocess

    return subprocess.Popen(
        [PYTHON, "-m", "facemoment", "daemon", str(video), "--fps", "15", "--lossless", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def live_gate_config(path: Path, out: Path, **camera: str) -> Path:
    """A config with one live camera `gate` (`camera`: its source and detect addresses), face and quality."""
    lines = [
        'preset = "batch"',
        "[extract]",
        'extractors = ["face", "quality"]',
        "[source]",
        "idle_timeout_s = 3.0",
        "[output]",
        f"output_dir = {json.dumps(str(out))}",
        'trig_address = "none"',
        "[cameras.gate]",
    ] + [f"{key} = {json.dumps(value)}" for key, value in camera.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_with_more_cameras_than_workers_each_camera_is_read_whole_on_one_worker(four_cameras, tmp_path):
    from bytewax.testing import cluster_main

    from dataflows.facemoment import Taps, build_flow
    from facemoment.core.config import load_config

    config = tmp_path / "cameras.toml"
    config.write_text(cameras_toml(four_cameras, tmp_path / "out").replace('["face", "quality"]', '["quality"]'))
    cfg = load_config(env={}, path=config)
    readers: Dict[str, set] = defaultdict(set)
    lock = threading.Lock()

    def on_frame(frame) -> None:
        with lock:
            readers[frame.stream_id].add(threading.get_ident())

    flow = build_flow(cfg, taps=Taps(on_frame=on_frame))
    cluster_main(flow, [], 0, worker_count_per_proc=2)
    assert set(readers) == set(CUTS)
    assert all(len(threads) == 1 for threads in readers.values()), readers  # a camera stays on its worker
    assert len(set.union(*readers.values())) == 2  # and the cameras spread over both workers
    fused = {}
    for line in (tmp_path / "out" / "trace.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["record_type"] == "gate_tally":
            fused[r["stream"]] = max(fused.get(r["stream"], 0), r["frames"])
    assert set(fused) == set(CUTS)  # every camera reached its own fusion


def _triggers(out: Path) -> List[tuple]:
    rows = [json.loads(line) for line in (out / "triggers.jsonl").read_text().splitlines()]
    return sorted((r["stream"], r["frame_id"], r["event_t_ns"], r["reason"], r["score"], r["t_start_ns"], r["t_end_ns"]) for r in rows)


@pytest.mark.slow
def test_four_cameras_fire_the_same_triggers_on_one_worker_two_workers_and_two_processes(
    four_cameras, module_flow_env, tmp_path
):
    runs = {
        "one": [[PYTHON, "-m", "bytewax.run", "dataflows.facemoment"]],
        "two_workers": [[PYTHON, "-m", "bytewax.run", "dataflows.facemoment", "-w", "2"]],
        "two_processes": [[PYTHON, "-m", "bytewax.testing", "dataflows.facemoment", "-p", "2"]],
    }
    results = {}
    outputs = {}
    for name, cmds in runs.items():
        out = tmp_path / name
        config = tmp_path / f"{name}.toml"
        config.write_text(cameras_toml(four_cameras, out))
        env = {k: v for k, v in module_flow_env.items() if not k.startswith("FACEMOMENT")}
        env["FACEMOMENT_CONFIG"] = str(config)
        outputs[name] = run_flows(cmds, env)[0]
        results[name] = _triggers(out)
    reference = results["one"]
    assert {t[0] for t in reference} == set(CUTS)  # every camera fired
    assert results["two_workers"] == reference
    assert results["two_processes"] == reference
    # The summary's line per camera, with that camera's triggers.
    for camera in CUTS:
        count = sum(1 for t in reference if t[0] == camera)
        line = next(line for line in outputs["one"].splitlines() if line.startswith(f"  {camera}: "))
        assert line.endswith(f", {count} trigger{'' if count == 1 else 's'}"), line


def test_a_camera_analysed_on_its_detect_stream_gets_clips_from_its_full_stream(module_flow_env, tmp_path):
    from conftest import finish, free_port

    full = write_gate_video(tmp_path / "full.avi", (1280, 720))
    full_address, detect_address = (f"tcp://127.0.0.1:{free_port()}" for _ in range(2))
    env = {k: v for k, v in module_flow_env.items() if not k.startswith("FACEMOMENT")}
    daemon = start_daemon(full, env, "--pub", full_address, "--detect", detect_address, "--detect-width", "640",
                          "--wait-subscribers", "1")
    out = tmp_path / "out"
    config = live_gate_config(tmp_path / "camera.toml", out, source=full_address, detect=detect_address)
    try:
        flow_output = run_flows([[PYTHON, "-m", "bytewax.run", "dataflows.facemoment"]], {**env, "FACEMOMENT_CONFIG": str(config)})[0]
    finally:
        daemon_output = finish([daemon], timeout=60)[0]
    assert "640 px wide to tcp://127.0.0.1:" in daemon_output, daemon_output
    triggers = [json.loads(line) for line in (out / "triggers.jsonl").read_text().splitlines()]
    assert triggers and {t["stream"] for t in triggers} == {"gate"}, flow_output[-3000:]
    trace = [json.loads(line) for line in (out / "trace.jsonl").read_text().splitlines()]
    # Both streams were read, each from its own socket.
    summaries = [r for r in trace if r["record_type"] == "source_summary"]
    assert {r["address"] for r in summaries} == {full_address, detect_address}
    clips = [json.loads(line) for line in (out / "clips" / "clips.jsonl").read_text().splitlines()]
    written = [c for c in clips if c.get("status") == "ok"]
    assert written and len(written) == len(triggers), clips
    for clip in written:
        capture = cv2.VideoCapture(str(out / "clips" / clip["file"]))
        ok, image = capture.read()
        capture.release()
        assert ok and image.shape[:2] == (720, 1280)  # cut from the full stream


def test_a_live_camera_read_in_shares_by_two_processes_gets_its_clips(module_flow_env, tmp_path):
    """Each process reads a share of the camera and compresses its frames for the clip
    ring where it read them; the ring's partition lives in one process, so the other's
    frames cross to it (as the JPEGs they become) and every trigger gets its clip."""
    from conftest import finish, free_port

    video = write_gate_video(tmp_path / "camera.avi", (640, 480))
    address = f"tcp://127.0.0.1:{free_port()}"
    env = {k: v for k, v in module_flow_env.items() if not k.startswith("FACEMOMENT")}
    daemon = start_daemon(video, env, "--pub", address, "--wait-subscribers", "2")
    out = tmp_path / "out"
    config = live_gate_config(tmp_path / "camera.toml", out, source=address)
    try:
        flow_output = run_flows(
            [[PYTHON, "-m", "bytewax.testing", "dataflows.facemoment", "-p", "2"]], {**env, "FACEMOMENT_CONFIG": str(config)}
        )[0]
    finally:
        finish([daemon], timeout=60)
    triggers = [json.loads(line) for line in (out / "triggers.jsonl").read_text().splitlines()]
    assert triggers, flow_output[-3000:]
    clips = [json.loads(line) for line in (out / "clips" / "clips.jsonl").read_text().splitlines()]
    written = [c for c in clips if c.get("status") == "ok"]
    assert len(written) == len(triggers), clips
