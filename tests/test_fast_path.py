"""The fast path fires what full fidelity fires: the sample through the dataflow with
the batch preset (every extractor on every frame, one process) against the default
settings with declared rates, in one process, `bytewax.testing -p 2` and a two-process
cluster. Triggers are compared on (reason, t_start_ns, t_end_ns)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from facemoment.formats.sample import ensure_sample_video

from conftest import LOSSLESS_LIVE, PYTHON, finish, free_port, run_env, run_flows

pytestmark = pytest.mark.slow

# The lean preset's schedule: pose on even frames, hands on odd ones.
LEAN_EVERY = "pose=2,gesture=2@1"
FAST = {"FACEMOMENT__EXTRACT__EVERY": LEAN_EVERY}


def _env(flow_env, out: Path, **extra) -> Dict[str, str]:
    # All four extractors; 10 fps keeps three runs short.
    settings = {"FACEMOMENT__SOURCE__FPS": "10", "FACEMOMENT__OUTPUT__CLIPS": "false"}
    return run_env(flow_env, ensure_sample_video(), out, **{**settings, **extra})


def _triggers(out: Path) -> List[Tuple[str, int, int]]:
    rows = [json.loads(line) for line in (out / "triggers.jsonl").read_text().splitlines()]
    return sorted((r["reason"], r["t_start_ns"], r["t_end_ns"]) for r in rows)


def _trace(out: Path) -> List[dict]:
    return [json.loads(line) for line in (out / "trace.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def full_fidelity(tmp_path_factory, request):
    flow_env = request.getfixturevalue("module_flow_env")
    out = tmp_path_factory.mktemp("batch")
    run_flows([[PYTHON, "-m", "bytewax.run", "dataflows.facemoment"]], _env(flow_env, out, FACEMOMENT_PRESET="batch"))
    triggers = _triggers(out)
    assert triggers
    assert not [r for r in _trace(out) if r["record_type"] == "frame_carry"]
    return triggers


def _check_fast(out: Path, reference) -> None:
    assert _triggers(out) == reference
    trace = _trace(out)
    carries = [r for r in trace if r["record_type"] == "frame_carry"]
    fused = {r["frame_id"] for r in trace if r["record_type"] == "timing" and r["component"] == "fusion_process"}
    # Odd frames carry pose, even ones hands, from the frame before; only the first
    # frame has no hands result yet.
    odd = sorted(f for f in fused if f % 2)
    even = sorted(f for f in fused if not f % 2)
    assert odd and sorted(c["frame_id"] for c in carries if c["source"] == "pose") == odd
    assert sorted(c["frame_id"] for c in carries if c["source"] == "gesture") == even
    first = min(fused)
    assert all(c["from_frame_id"] == c["frame_id"] - 1 for c in carries if c["frame_id"] != first)
    assert not [r for r in trace if r["record_type"] == "sync_delay"]


def test_one_process_fast_path_fires_what_full_fidelity_fires(full_fidelity, module_flow_env, tmp_path):
    run_flows([[PYTHON, "-m", "bytewax.run", "dataflows.facemoment"]], _env(module_flow_env, tmp_path, **FAST))
    _check_fast(tmp_path, full_fidelity)


def test_the_cascade_fires_what_full_fidelity_fires_and_skips_pose_and_hands_without_a_face(
    full_fidelity, module_flow_env, tmp_path
):
    env = _env(module_flow_env, tmp_path, FACEMOMENT_PRESET="batch", FACEMOMENT__EXTRACT__CASCADE="true")
    run_flows([[PYTHON, "-m", "bytewax.run", "dataflows.facemoment"]], env)
    assert _triggers(tmp_path) == full_fidelity
    trace = _trace(tmp_path)
    extracted = [r for r in trace if r["record_type"] == "frame_extract"]
    faceless = {r["frame_id"] for r in extracted if r["source"] == "face" and r["face_count"] == 0}
    skips = [r for r in trace if r["record_type"] == "frame_skip"]
    # The sample opens and ends without a rider: pose and hands skip exactly those frames.
    assert faceless and {r["frame_id"] for r in skips if r["source"] == "pose"} == faceless
    assert {r["frame_id"] for r in skips if r["source"] == "gesture"} == faceless
    assert not {r["frame_id"] for r in extracted if r["source"] == "pose"} & faceless


def test_two_processes_fast_path_fires_what_full_fidelity_fires(full_fidelity, module_flow_env, tmp_path):
    run_flows([[PYTHON, "-m", "bytewax.testing", "dataflows.facemoment", "-p", "2"]], _env(module_flow_env, tmp_path, **FAST))
    _check_fast(tmp_path, full_fidelity)


def test_two_process_cluster_fast_path_fires_what_full_fidelity_fires(full_fidelity, module_flow_env, tmp_path):
    addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(2))
    cmds = [[PYTHON, "-m", "bytewax.run", "dataflows.facemoment", "-i", str(i), "-a", addresses] for i in range(2)]
    run_flows(cmds, _env(module_flow_env, tmp_path, **FAST))
    _check_fast(tmp_path, full_fidelity)


# With two shares, lean's staggered schedule gives share 0's process every pose job and
# share 1's every hands job, so neither falls behind the other.
@pytest.mark.parametrize(
    "extractors, every", [("face,quality", ""), ("face,pose,gesture,quality", LEAN_EVERY)], ids=["full_fidelity", "lean"]
)
def test_a_live_two_process_cluster_fires_what_one_process_fires_on_the_file(extractors, every, module_flow_env, tmp_path):
    """Live: the sample published over ZMQ at 30 fps into a two-process cluster, each
    process subscribing and keeping its share; lossless and deadline-free (no deadline,
    no buffer bound, no observation late however far one process falls behind) so no
    frame is shed on a busy machine either, against every frame read from the file by
    one process at full fidelity."""
    import subprocess

    from conftest import REPO

    face_quality = {"FACEMOMENT__EXTRACT__EXTRACTORS": extractors, "FACEMOMENT__SOURCE__FPS": "none"}
    reference_out = tmp_path / "file"
    run_flows([[PYTHON, "-m", "bytewax.run", "dataflows.facemoment"]],
         _env(module_flow_env, reference_out, FACEMOMENT_PRESET="batch", **face_quality))
    reference = _triggers(reference_out)
    assert reference
    if every:
        face_quality["FACEMOMENT__EXTRACT__EVERY"] = every

    port = free_port()
    out = tmp_path / "live"
    env = _env(
        module_flow_env, out, FACEMOMENT_PRESET="batch", FACEMOMENT_SOURCE=f"tcp://127.0.0.1:{port}",
        FACEMOMENT_IDLE_TIMEOUT_S="3", **face_quality, **LOSSLESS_LIVE,
    )
    addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(2))
    cmds = [[PYTHON, "-m", "bytewax.run", "dataflows.facemoment", "-i", str(i), "-a", addresses] for i in range(2)]
    procs = [subprocess.Popen(c, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for c in cmds]
    try:
        sent = _publish_paced_and_lossless(f"tcp://127.0.0.1:{port}", subscribers=2)
    except BaseException:
        for p in procs:
            p.kill()
        raise
    finish(procs, timeout=240)
    assert sent == 360
    trace = _trace(out)
    assert not [r for r in trace if r["record_type"] in ("frame_drop", "sync_delay")]
    assert _triggers(out) == reference


def _publish_paced_and_lossless(address: str, subscribers: int) -> int:
    """The sample's frames at 30 fps to every subscriber; a send waits for a slow one
    instead of dropping (the daemon drops at a queue of two frames, as live cameras
    do), so both sides of the comparison see every frame."""
    import time

    import zmq

    from facemoment.formats.frames import open_frames
    from facemoment.formats.wire import pack_frame

    context = zmq.Context()
    socket = context.socket(zmq.XPUB)
    socket.setsockopt(zmq.XPUB_VERBOSE, 1)
    socket.setsockopt(zmq.XPUB_NODROP, 1)
    socket.setsockopt(zmq.LINGER, 2000)
    socket.bind(address)
    sent = 0
    try:
        joined = 0
        deadline = time.monotonic() + 180
        while joined < subscribers:  # every process's models loaded and subscribed
            assert time.monotonic() < deadline, "the dataflow processes did not subscribe"
            if socket.poll(100) and socket.recv()[:1] == b"\x01":
                joined += 1
        start = time.monotonic()
        for frame_id, t_ns, image in open_frames(str(ensure_sample_video())):
            due = start + sent / 30.0
            time.sleep(max(0.0, due - time.monotonic()))  # paced like a camera
            socket.send_multipart(pack_frame(frame_id, t_ns, image))  # blocks, never drops
            sent += 1
    finally:
        socket.close()
        context.term()
    return sent
