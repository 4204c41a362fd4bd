"""5./6. paced live runs over ZMQ: TRIG latency and overload (memory, where every frame went)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from bench.meters import read_rss_mb, rss_stats
from bench.plan import LIVE_FPS, REPO, RSS_PERIOD_S, Plan, Progress
from bench.workloads.accounting import drop_accounting, late_frame_delays, release_latencies, trace_timings, trigger_latencies
from bench.workloads.inputs import Inputs, flow_env, log_tail
from facemoment.core.config import load_config
from facemoment.runtime.loopback import free_port
from facemoment.runtime.summary import read_jsonl
from facemoment.runtime.trig_listener import TrigListener


@dataclass
class LiveRun:
    """One paced live run: what was sent when, what came back, what the flow wrote."""

    frames_attempted: int
    send_wall_ns: Dict[int, int]
    publisher_sent: int
    publisher_dropped: int
    max_schedule_lag_ms: float
    stream_seconds: float
    received: List[Tuple[int, str]]
    out_dir: Path
    rss: List[Tuple[float, float]]
    returncode: int


class _RssSampler(threading.Thread):
    """VmRSS of one process every RSS_PERIOD_S until it exits or `stop` is set."""

    def __init__(self, pid: int) -> None:
        super().__init__(name="bench-rss", daemon=True)
        self.pid = pid
        self.samples: List[Tuple[float, float]] = []  # (monotonic s, MB)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            value = read_rss_mb(self.pid)
            if value is None:
                break
            self.samples.append((time.monotonic(), value))
            self.stop.wait(RSS_PERIOD_S)


def _resized(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    import cv2

    if (image.shape[1], image.shape[0]) == size:
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)


def live_run(
    name: str,
    images: Sequence[np.ndarray],
    seconds: float,
    work: Path,
    log: Progress,
    size: Tuple[int, int] = (640, 480),
    sample_rss: bool = False,
    preset: str = "realtime",
) -> LiveRun:
    """Publish the sample at 30 fps into `python -m bytewax.run dataflows.facemoment` (realtime preset).

    The publisher is a `FramePublisher` (XPUB, waits for the flow's subscription,
    which the flow makes after its models are loaded), paced on a monotonic
    schedule: frame i is due at start + i/30 s; its wall-clock send time is
    recorded. Frame ids and timestamps keep counting when the sample loops.
    """
    from facemoment.formats.sample import frame_t_ns
    from facemoment.tools.daemon import FramePublisher

    out_dir = work / name
    frames_address = f"tcp://127.0.0.1:{free_port()}"
    trig_address = f"tcp://127.0.0.1:{free_port()}"
    env = flow_env(
        {
            "FACEMOMENT_SOURCE": frames_address,
            "FACEMOMENT_IDLE_TIMEOUT_S": "2",
            "FACEMOMENT_PRESET": preset,
            "FACEMOMENT_TRIG_ADDRESS": trig_address,
            "FACEMOMENT_TRACE": "normal",
            "FACEMOMENT__OUTPUT__CLIPS": "false",
            "FACEMOMENT_OUTPUT_DIR": str(out_dir),
        }
    )
    total = int(round(seconds * LIVE_FPS))
    period_ns = int(round(1e9 / LIVE_FPS))
    publisher = FramePublisher(frames_address, wait_subscribers=1)
    listener = TrigListener(trig_address)
    listener.start()
    (work / "logs").mkdir(parents=True, exist_ok=True)
    log_path = work / "logs" / f"{name}.log"
    handle = open(log_path, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bytewax.run", "dataflows.facemoment"],
        env=env, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT,
    )
    sampler = _RssSampler(proc.pid) if sample_rss else None
    if sampler is not None:
        sampler.start()
    send_wall: Dict[int, int] = {}
    max_lag_ns = 0
    stream_start = stream_end = time.monotonic()
    try:
        if not publisher.wait_for_subscribers(timeout=180):
            raise RuntimeError(f"{name}: the dataflow did not subscribe within 180 s:\n{log_tail(log_path)}")
        log(f"{name}: dataflow subscribed; streaming {total} frames of {size[0]}x{size[1]} at 30 fps")
        start_ns = time.monotonic_ns()
        stream_start = time.monotonic()
        for i in range(total):
            image = _resized(images[i % len(images)], size)
            due = start_ns + i * period_ns
            wait = due - time.monotonic_ns()
            if wait > 0:
                time.sleep(wait / 1e9)  # pacing the stream, not synchronisation
            max_lag_ns = max(max_lag_ns, time.monotonic_ns() - due)
            send_wall[i] = time.time_ns()
            publisher.publish(i, frame_t_ns(i), image)
            if proc.poll() is not None:
                raise RuntimeError(f"{name}: the dataflow exited early ({proc.returncode}):\n{log_tail(log_path)}")
        stream_end = time.monotonic()
        code = proc.wait(timeout=120)
        if code != 0:
            raise RuntimeError(f"{name}: the dataflow exited with {code}:\n{log_tail(log_path)}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        handle.close()
        listener.close(timeout=10)
        if sampler is not None:
            sampler.stop.set()
            sampler.join(timeout=5)
        sent, dropped = publisher.sent, publisher.dropped
        publisher.close()
    rss = []
    if sampler is not None:
        # Only while frames streamed: start-up (model loading) is growth by design.
        rss = [(t - stream_start, mb) for t, mb in sampler.samples if stream_start <= t <= stream_end]
    return LiveRun(
        frames_attempted=total,
        send_wall_ns=send_wall,
        publisher_sent=sent,
        publisher_dropped=dropped,
        max_schedule_lag_ms=round(max_lag_ns / 1e6, 2),
        stream_seconds=round(stream_end - stream_start, 3),
        received=list(listener.received),
        out_dir=out_dir,
        rss=rss,
        returncode=code,
    )


def summarize_live(run: LiveRun) -> Dict[str, Any]:
    trace = read_jsonl(run.out_dir / "trace.jsonl")
    rows = read_jsonl(run.out_dir / "triggers.jsonl")
    accounting = drop_accounting(trace, run.frames_attempted, run.publisher_dropped)
    seconds = run.stream_seconds or 1.0
    return {
        "returncode": run.returncode,
        "frames_attempted": run.frames_attempted,
        "stream_seconds": run.stream_seconds,
        "publisher": {
            "sent": run.publisher_sent,
            "dropped_at_hwm": run.publisher_dropped,
            "max_schedule_lag_ms": run.max_schedule_lag_ms,
        },
        "fused_fps": round(accounting["fused"] / seconds, 2),
        "complete_fps": round(accounting["fused_complete"] / seconds, 2),
        "accounting": accounting,
        "timings": trace_timings(trace),
        "late_frames_capture_to_alignment": late_frame_delays(trace, run.send_wall_ns),
        "latency": trigger_latencies(run.send_wall_ns, run.received, rows),
        "trig_release": release_latencies(run.send_wall_ns, trace, rows),
    }


def measure_latency(inputs: Inputs, plan: Plan, work: Path, log: Progress) -> Dict[str, Any]:
    run = live_run("latency", inputs.sample_images, plan.latency_s, work, log, preset=plan.live_preset)
    result = summarize_live(run)
    cfg = load_config({"FACEMOMENT_PRESET": plan.live_preset})
    frame_ms = 1000.0 / LIVE_FPS
    # A window closes once every share has delivered past its end: the firing frame
    # waits for the rest of its window, the next frame and that frame's extraction.
    extraction_p99 = ((result.get("timings") or {}).get("orchestrator") or {}).get("p99_ms") or 0.0
    result["preset"] = plan.live_preset
    result["target_ms"] = round(cfg.align.window_ms + 2 * frame_ms + extraction_p99, 1)
    result["target_parts_ms"] = {
        "window": cfg.align.window_ms,
        "two_frames": round(2 * frame_ms, 1),
        "extraction_p99": extraction_p99,
        "allowed_lateness": cfg.align.allowed_lateness_ms,
    }
    result["frame_size"] = "640x480"
    lat = result["latency"]
    log(f"latency: {lat['count']} triggers, p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms "
        f"(target {result['target_ms']} ms); fused {result['fused_fps']} fps, "
        f"complete {result['complete_fps']} fps; drops {result['accounting']['dropped_by_reason']}, "
        f"timeouts {result['accounting']['timeouts_by_extractor']}")
    return result


def measure_overload(inputs: Inputs, plan: Plan, work: Path, size: Tuple[int, int], why: str, log: Progress) -> Dict[str, Any]:
    run = live_run("overload", inputs.sample_images, plan.overload_s, work, log, size=size, sample_rss=True,
                   preset=plan.live_preset)
    result = summarize_live(run)
    result["frame_size"] = f"{size[0]}x{size[1]}"
    result["frame_size_reason"] = why
    result["rss"] = rss_stats(run.rss)
    result["rss_samples"] = [(round(t, 2), round(mb, 1)) for t, mb in run.rss]
    log(f"overload {result['frame_size']}: RSS {result['rss']['min_mb']}-{result['rss']['max_mb']} MB, "
        f"slope {result['rss']['slope_mb_per_min']} MB/min; fused {result['fused_fps']} fps; "
        f"drops {result['accounting']['dropped_by_reason']}, timeouts {result['accounting']['timeouts_by_extractor']}")
    return result
