"""7. ZMQ ingest of raw 1080p frames: the pipe alone and the project's source in a Bytewax flow."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np

from bench.meters import rounded
from bench.plan import INGEST_SIZE, LIVE_FPS, REPO, Plan, Progress
from bench.workloads.inputs import flow_env
from facemoment.core.config import SourceConfig
from facemoment.core.records import as_dict
from facemoment.core.types import Frame
from facemoment.runtime.loopback import free_port


def serve_raw_frames(address: str, count: int, size: Tuple[int, int], wait_s: float = 60.0) -> Dict[str, Any]:
    """Publish `count` raw frames as fast as the subscriber takes them (child process side).

    An XPUB with ZMQ_XPUB_NODROP and blocking sends: a full queue makes the
    publisher wait instead of losing frames, so the rate is the subscriber's. The
    pixels are packed once; each frame gets its own header (id and timestamp).
    """
    import zmq

    from facemoment.formats.wire import HEADER, pack_frame

    width, height = size
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    topic, _header, pixels = pack_frame(0, 0, image)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.XPUB)
    sock.setsockopt(zmq.SNDHWM, 4)
    sock.setsockopt(zmq.XPUB_NODROP, 1)
    sock.setsockopt(zmq.SNDTIMEO, 30_000)
    sock.setsockopt(zmq.LINGER, 10_000)
    sock.bind(address)
    try:
        if not sock.poll(int(wait_s * 1000), zmq.POLLIN):
            return {"error": f"no subscriber within {wait_s} s"}
        sock.recv()  # the subscription
        blocked = 0.0
        start = time.perf_counter()
        for i in range(count):
            header = HEADER.pack(i, int(i * 1e9 / LIVE_FPS), width, height, 3)
            before = time.perf_counter()
            sock.send_multipart([topic, header, pixels], copy=False)
            blocked += time.perf_counter() - before
        seconds = time.perf_counter() - start
        return {"sent": count, "seconds": round(seconds, 3), "fps": round(count / seconds, 2), "send_call_s": round(blocked, 3)}
    finally:
        sock.close()
        ctx.term()


def _start_frame_server(count: int, size: Tuple[int, int], work: Path) -> Tuple[subprocess.Popen, str, Path]:
    address = f"tcp://127.0.0.1:{free_port()}"
    result = work / f"server-{time.monotonic_ns()}.json"
    cmd = [sys.executable, "-m", "bench", "--serve-raw-frames", address,
           "--serve-count", str(count), "--serve-size", f"{size[0]}x{size[1]}", "--serve-result", str(result)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=flow_env({}), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return proc, address, result


def _server_result(proc: subprocess.Popen, result: Path) -> Dict[str, Any]:
    try:
        _out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        _out, err = proc.communicate()
    if not result.exists():
        raise RuntimeError(f"frame server failed ({proc.returncode}): {err.decode('utf-8', 'replace')[-2000:]}")
    data = json.loads(result.read_text())
    if "error" in data:
        raise RuntimeError(f"frame server: {data['error']}")
    return data


def measure_ingest(plan: Plan, work: Path, log: Progress) -> Dict[str, Any]:
    """Raw 1080p frames over ZMQ: into a plain SUB (the pipe and publisher), then into
    the project's ZmqFrameSource in a Bytewax flow whose only step counts frames."""
    import zmq
    from bytewax import operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import run_main

    from connectors.frame_receiver import RECEIVE_HWM
    from connectors.zmq_source import ZmqFrameSource
    from facemoment.formats.wire import FRAME_TOPIC

    count = plan.ingest_frames
    width, height = INGEST_SIZE
    mb_per_frame = width * height * 3 / 1e6

    # The pipe alone: a SUB with the source's receive high-water mark, no copies.
    proc, address, result_path = _start_frame_server(count, INGEST_SIZE, work)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, RECEIVE_HWM)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, FRAME_TOPIC)
    sub.connect(address)
    got = 0
    first = last = 0.0
    try:
        while got < count:
            if not sub.poll(30_000):
                break
            sub.recv_multipart(copy=False)
            last = time.perf_counter()
            if got == 0:
                first = last
            got += 1
    finally:
        sub.close()
        ctx.term()
    server = _server_result(proc, result_path)
    pipe_fps = (got - 1) / (last - first) if got > 1 and last > first else None
    pipe = {"frames": got, "fps": rounded(pipe_fps), "mb_per_s": rounded(pipe_fps * mb_per_frame if pipe_fps else None, 1), "publisher": server}
    log(f"ingest: raw pipe {pipe['fps']} fps ({pipe['mb_per_s']} MB/s), publisher loop {server['fps']} fps")

    # The project's source in a Bytewax flow.
    proc, address, result_path = _start_frame_server(count, INGEST_SIZE, work)
    seen = {"frames": 0, "first": 0.0, "last": 0.0, "records": Counter()}

    def count_item(_step: str, item: Any) -> None:
        if isinstance(item, Frame):
            now = time.perf_counter()
            if seen["frames"] == 0:
                seen["first"] = now
            seen["last"] = now
            seen["frames"] += 1
        else:  # a trace record
            seen["records"][as_dict(item).get("record_type")] += 1

    source = ZmqFrameSource(address, "ingest", SourceConfig(idle_timeout_s=1.0), connect_timeout_s=60.0)
    flow = Dataflow("bench_ingest")
    op.inspect("count", op.input("frames", flow, source), count_item)
    run_main(flow)
    server2 = _server_result(proc, result_path)
    stats = next(iter(source.partitions.values())).stats.as_dict() if source.partitions else {}
    span = seen["last"] - seen["first"]
    fps = (seen["frames"] - 1) / span if seen["frames"] > 1 and span > 0 else None
    flow_result = {
        "frames": seen["frames"],
        "fps": rounded(fps),
        "mb_per_s": rounded(fps * mb_per_frame if fps else None, 1),
        "source_stats": stats,
        "publisher": server2,
        "buffer_frames": 8,
    }
    log(f"ingest: ZmqFrameSource in Bytewax {flow_result['fps']} fps ({flow_result['mb_per_s']} MB/s), "
        f"{seen['frames']}/{count} frames, dropped {stats.get('dropped_backpressure')} at the buffer")
    return {"frame_size": f"{width}x{height}", "mb_per_frame": round(mb_per_frame, 2), "frames_published": count,
            "raw_pipe": pipe, "zmq_frame_source": flow_result}
