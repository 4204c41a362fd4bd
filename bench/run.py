"""FaceMoment's benchmark: every figure measured side by side in one run on this machine.

    .venv/bin/python bench/run.py [--quick] [--out bench/]

Writes results.json and results.md into --out. All figures use 640x480 frames of the
built-in sample (the ingest figure uses raw 1080p frames). What each measurement
does and how its time is taken is in bench/README.md and in each function's doc.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

# bench/ is not an installed package: make `bench.baselines` importable when run as a script.
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from facemoment.core.config import Config, load_config  # noqa: E402
from facemoment.core.records import as_dict  # noqa: E402
from facemoment.runtime.loopback import free_port  # noqa: E402
from facemoment.runtime.summary import read_jsonl  # noqa: E402
from facemoment.core.types import Frame  # noqa: E402

EXTRACTORS = ("face", "pose", "gesture", "quality")
SAMPLE_FRAMES = 360  # the built-in sample: 12 s at 30 fps
LIVE_FPS = 30.0
STREAM_ID = "cam0"
INGEST_SIZE = (1920, 1080)
OVERLOAD_LARGE_SIZE = (1920, 1080)
RSS_PERIOD_S = 0.5
# Memory counts as flat when the RSS trend after the warm-up stays within this many MB
# per minute: about what a one-minute run resolves with the allocator's steps of a few MB.
MEMORY_SLOPE_LIMIT = 5.0
RSS_WARMUP_S = 10.0
# Other processes' load (cores) from which a figure is flagged as taken on a busy machine.
FOREIGN_LOAD_NOTE = 0.3
PROCESS_TIMEOUT_S = 600.0

Record = Dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """How big each measurement is; --quick shrinks them to fit in about 3 minutes."""

    quick: bool
    frames: int
    latency_s: float
    overload_s: float
    ingest_frames: int
    # Longest wait, before each measurement, for other processes to leave the cores.
    quiet_wait_s: float
    # Alternating bare-pipelined / dataflow runs (medians are reported).
    repeats: int

    @classmethod
    def for_mode(cls, quick: bool) -> "Plan":
        if quick:
            return cls(True, frames=120, latency_s=12.0, overload_s=15.0, ingest_frames=300, quiet_wait_s=10.0, repeats=1)
        return cls(False, frames=SAMPLE_FRAMES, latency_s=60.0, overload_s=60.0, ingest_frames=900, quiet_wait_s=60.0, repeats=3)


# ----------------------------------------------------------------------------- output


class Progress:
    """Progress lines on stdout, stamped with the seconds since the benchmark started."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        print(f"[bench {time.monotonic() - self.started:6.1f}s] {message}", flush=True)


# ----------------------------------------------------------------------- pure helpers


def percentile(values: Sequence[float], q: float) -> Optional[float]:
    """The q-th percentile (0-100) with linear interpolation between ranks; None when empty."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _round(value: Optional[float], digits: int = 2) -> Optional[float]:
    return None if value is None else round(float(value), digits)


def trigger_latencies(
    send_wall_ns: Mapping[int, int],
    received: Sequence[Tuple[int, str]],
    trigger_rows: Sequence[Record],
) -> Dict[str, Any]:
    """Latency of every TRIG message received: receive wall time minus the send time of its frame.

    `received` holds (wall-clock ns, TRIG text) as the subscriber got them;
    `trigger_rows` are triggers.jsonl rows, whose `message` is that TRIG text and
    whose `frame_id` is the frame the trigger fired on. Rows are matched to messages
    in order, so identical texts pair up one to one.
    """
    rows_by_message: Dict[str, List[Record]] = {}
    for row in trigger_rows:
        rows_by_message.setdefault(str(row.get("message")), []).append(row)
    items: List[Dict[str, Any]] = []
    unmatched: List[str] = []
    for wall_ns, text in received:
        candidates = rows_by_message.get(text)
        if not candidates:
            unmatched.append(text)
            continue
        row = candidates.pop(0)
        frame_id = int(row["frame_id"])
        sent = send_wall_ns.get(frame_id)
        if sent is None:
            unmatched.append(text)
            continue
        items.append(
            {
                "frame_id": frame_id,
                "reason": row.get("reason"),
                "latency_ms": round((wall_ns - sent) / 1e6, 3),
            }
        )
    latencies = [item["latency_ms"] for item in items]
    return {
        "count": len(items),
        "p50_ms": _round(percentile(latencies, 50)),
        "p99_ms": _round(percentile(latencies, 99)),
        "max_ms": _round(max(latencies) if latencies else None),
        "triggers": items,
        "unmatched_messages": unmatched,
        "not_received": sum(len(rows) for rows in rows_by_message.values()),
    }


def _dropped_count(record: Record) -> int:
    if isinstance(record.get("dropped_count"), int):
        return int(record["dropped_count"])
    return len(record.get("dropped_frame_ids") or [])


def drop_accounting(records: Iterable[Record], frames_attempted: int, publisher_dropped: int = 0) -> Dict[str, Any]:
    """Where every published frame went, from a normal-level trace.

    A frame is fused (its fusion `timing` record), dropped before extraction
    (`frame_drop` with reason `backpressure`: the source buffer; `queue_full`: lost at
    the publisher's high-water mark, seen as a gap in frame ids), or lost after
    extraction because its whole frame arrived after its window closed (a late
    `sync_delay` for `frame`). `timeout` drops are different: the frame is still
    fused, without the extractors that missed the deadline; they are counted per
    extractor and as partial frames.
    """
    fused: set = set()
    drops: Counter = Counter()
    timeout_by_extractor: Counter = Counter()
    partial: set = set()
    late_frames: set = set()
    waiting: Counter = Counter()
    out_of_order = 0
    summary: Optional[Record] = None
    for r in records:
        kind = r.get("record_type")
        if kind == "timing" and r.get("component") == "fusion_process":
            fused.add(r.get("frame_id"))
        elif kind == "frame_drop":
            reason = str(r.get("reason"))
            if reason == "timeout":
                partial.add(r.get("frame_id"))
                timeout_by_extractor.update(r.get("extractors") or [])
            else:
                drops[reason] += _dropped_count(r)
        elif kind == "sync_delay":
            if r.get("late") and "frame" in (r.get("waiting_for") or []):
                late_frames.add(r.get("frame_id"))
            elif not r.get("late"):
                waiting.update(r.get("waiting_for") or [])
        elif kind == "out_of_order":
            out_of_order += 1
        elif kind == "source_summary":
            summary = r
    late_unfused = late_frames - fused
    accounted = len(fused) + sum(drops.values()) + len(late_unfused)
    return {
        "frames_attempted": frames_attempted,
        "publisher_dropped": publisher_dropped,
        "fused": len(fused),
        "fused_complete": len(fused - partial),
        "dropped_by_reason": dict(sorted(drops.items())),
        "partial_frames_timeout": len(partial),
        "timeouts_by_extractor": dict(sorted(timeout_by_extractor.items())),
        "missing_at_fusion_by_extractor": dict(sorted(waiting.items())),
        "late_frames_not_fused": len(late_unfused),
        "out_of_order": out_of_order,
        "unaccounted": frames_attempted - accounted,
        "source_summary": summary,
    }


def _slope_per_minute(samples: Sequence[Tuple[float, float]]) -> Optional[float]:
    if len(samples) < 2 or samples[-1][0] <= samples[0][0]:
        return None
    times = np.array([t for t, _ in samples], dtype=float) / 60.0
    values = np.array([v for _, v in samples], dtype=float)
    return float(np.polyfit(times, values, 1)[0])


def rss_stats(samples: Sequence[Tuple[float, float]], warmup_s: float = RSS_WARMUP_S) -> Dict[str, Any]:
    """Min, max and least-squares trend (MB per minute) of (seconds, MB) samples.

    The trend that decides "flat" is taken after the first `warmup_s` seconds,
    when the first windows, trace buffers and allocator pools have been built.
    """
    if not samples:
        return {"samples": 0, "min_mb": None, "max_mb": None, "first_mb": None, "last_mb": None,
                "slope_mb_per_min": None, "warmup_s": warmup_s, "slope_after_warmup_mb_per_min": None,
                "range_after_warmup_mb": None, "range_last_third_mb": None}
    values = [v for _, v in samples]
    start = samples[0][0]
    settled = [(t, v) for t, v in samples if t - start >= warmup_s]
    last = [(t, v) for t, v in samples if t - start >= (samples[-1][0] - start) * 2 / 3]
    return {
        "samples": len(samples),
        "min_mb": round(min(values), 1),
        "max_mb": round(max(values), 1),
        "first_mb": round(values[0], 1),
        "last_mb": round(values[-1], 1),
        "slope_mb_per_min": _round(_slope_per_minute(samples), 2),
        "warmup_s": warmup_s,
        "slope_after_warmup_mb_per_min": _round(_slope_per_minute(settled), 2),
        "range_after_warmup_mb": round(max(v for _, v in settled) - min(v for _, v in settled), 1) if settled else None,
        "range_last_third_mb": round(max(v for _, v in last) - min(v for _, v in last), 1) if last else None,
    }


def read_rss_mb(pid: int) -> Optional[float]:
    """VmRSS of a process in MB, or None once it has gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


# ------------------------------------------------------------------ CPU accounting


def system_cpu_jiffies() -> Tuple[int, int]:
    """(busy, steal) jiffies of all cores since boot, from /proc/stat's first line."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields] + [0] * 8
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return user + nice + system + irq + softirq, steal


def own_cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have been waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class CpuMeter:
    """How busy the cores were during a measurement, and how much of that was not ours.

    Other work on the machine (other people's test runs) slows every figure; the
    `foreign_cores` of each measurement says how much of it there was. Children
    count as ours once waited for, so measure around spans that wait for them.
    """

    def __init__(self) -> None:
        self.tick = os.sysconf("SC_CLK_TCK")
        self.result: Dict[str, float] = {}

    def __enter__(self) -> "CpuMeter":
        self._start = time.monotonic()
        self._busy, self._steal = system_cpu_jiffies()
        self._own = own_cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = max(1e-6, time.monotonic() - self._start)
        busy, steal = system_cpu_jiffies()
        system = (busy - self._busy) / self.tick / wall
        own = (own_cpu_seconds() - self._own) / wall
        self.result = {
            "seconds": round(wall, 2),
            "system_cores": round(system, 2),
            "own_cores": round(own, 2),
            "foreign_cores": round(max(0.0, system - own), 2),
            "steal_cores": round((steal - self._steal) / self.tick / wall, 2),
        }


def wait_for_quiet(log: "Progress", max_wait_s: float, threshold_cores: float = FOREIGN_LOAD_NOTE, probe_s: float = 1.0) -> float:
    """Before a measurement: wait (bounded) while other processes keep the cores busy.

    Returns the foreign load of the last probe, in cores.
    """
    deadline = time.monotonic() + max_wait_s
    while True:
        with CpuMeter() as meter:
            time.sleep(probe_s)  # a sampling interval: the benchmark is idle while it measures others
        foreign = meter.result["foreign_cores"]
        if foreign < threshold_cores or time.monotonic() >= deadline:
            if foreign >= threshold_cores:
                log(f"other processes still use {foreign} cores; measuring anyway")
            return foreign
        log(f"other processes use {foreign} cores; waiting for the machine to quieten")


# --------------------------------------------------------------------- environment


def machine_info() -> Dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    def _version(name: str) -> Optional[str]:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "cpu_model": cpu_model or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "memory_gb": memory_gb,
        "python": platform.python_version(),
        "bytewax": _version("bytewax"),
        "mediapipe": _version("mediapipe"),
        "numpy": _version("numpy"),
        "opencv": _version("opencv-contrib-python") or _version("opencv-python"),
        "pyzmq": _version("pyzmq"),
    }


def load_average() -> List[float]:
    return [round(x, 2) for x in os.getloadavg()]



def flow_env(extra: Mapping[str, str]) -> Dict[str, str]:
    """This process's environment without FACEMOMENT/BYTEWAX settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACEMOMENT", "BYTEWAX"))}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


# ---------------------------------------------------------------------------- inputs


@dataclass
class Inputs:
    """The frames every measurement shares, as a video file and decoded in memory."""

    video: Path  # the N benchmark frames, encoded
    frames: List[Frame]  # the N frames decoded from `video`: what the dataflow sees
    sample_images: List[np.ndarray]  # the whole sample in order, for paced live streams


def bench_indices(count: int, total: int = SAMPLE_FRAMES) -> List[int]:
    """`count` sample frame indices spread evenly over the sample (all of it when count >= total)."""
    if count <= 0:
        raise ValueError(f"frame count must be positive, got {count}")
    if count >= total:
        return list(range(total))
    return [i * total // count for i in range(count)]


def write_video(path: Path, images: Sequence[np.ndarray], fps: float = LIVE_FPS) -> Path:
    """Encode BGR images to an mp4 the way the sample video is encoded."""
    from facemoment.formats import media

    height, width = images[0].shape[:2]
    cmd = [
        media.ffmpeg_exe(), "-hide_banner", "-y", "-loglevel", "error",
        "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "-",
        "-an", *media.video_encoder_args(keyint=15), "-r", str(fps), "-f", "mp4", str(path),
    ]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    try:
        for image in images:
            proc.stdin.write(np.ascontiguousarray(image).tobytes())
    except BrokenPipeError:
        pass  # ffmpeg's exit status says why
    finally:
        proc.stdin.close()
    errors = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
    if proc.wait(timeout=300) != 0:
        raise RuntimeError(f"encoding {path} failed: {errors.strip()}")
    return path


def decode_video(path: Path, stream_id: str = STREAM_ID) -> List[Frame]:
    from facemoment.formats.frames import open_frames

    reader = open_frames(str(path))
    frames = []
    try:
        while (item := reader.read()) is not None:
            frame_id, t_ns, image = item
            frames.append(Frame(stream_id, frame_id, t_ns, image))
    finally:
        reader.close()
    return frames


def prepare_inputs(plan: Plan, work: Path, log: Progress) -> Inputs:
    from facemoment.formats.sample import ensure_sample_video, render_frame

    indices = bench_indices(plan.frames)
    images = [render_frame(i) for i in indices]
    video = write_video(work / f"bench-{len(images)}.mp4", images)
    frames = decode_video(video)
    if len(frames) != len(images):
        raise RuntimeError(f"{video} decodes to {len(frames)} frames, expected {len(images)}")
    sample = [f.image for f in decode_video(ensure_sample_video())]
    log(f"inputs: {len(frames)} frames of {frames[0].width}x{frames[0].height} in {video.name}; "
        f"sample stream of {len(sample)} frames for live runs")
    return Inputs(video, frames, sample)


# ------------------------------------------------------------------ 1. bare extractors


def load_extractors(cfg: Config, warm_frame: Frame) -> Dict[str, Any]:
    """One loaded instance per extractor, each run once so first-call costs are paid."""
    from operators.extraction.registry import build_extractor

    extractors = {}
    for name in EXTRACTORS:
        extractor = build_extractor(name, cfg)
        load = getattr(extractor, "load", None)
        if load is not None:
            load()
        extractor.extract(warm_frame)
        extractors[name] = extractor
    return extractors


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def sequential_costs(frames: Sequence[Frame], extractors: Mapping[str, Any], log: Progress) -> Dict[str, Any]:
    """Each extractor on its own over all frames, one thread: per-frame cost in ms."""
    per_extractor: Dict[str, Any] = {}
    for name, extractor in extractors.items():
        costs = []
        for frame in frames:
            start = time.perf_counter_ns()
            obs = extractor.extract(frame)
            costs.append((time.perf_counter_ns() - start) / 1e6)
            if obs.error:
                raise RuntimeError(f"{name} extractor failed on frame {frame.frame_id}: {obs.error}")
        per_extractor[name] = {
            "mean_ms": round(statistics.fmean(costs), 2),
            "median_ms": round(statistics.median(costs), 2),
            "p90_ms": _round(percentile(costs, 90)),
            "total_s": round(sum(costs) / 1000, 3),
        }
        log(f"bare: {name} {per_extractor[name]['mean_ms']} ms/frame (one thread)")
    return per_extractor


def pipelined_once(frames: Sequence[Frame], extractors: Mapping[str, Any]) -> Dict[str, Any]:
    """One thread per extractor, all started together, each through every frame."""
    busy: Dict[str, float] = {}
    go = threading.Event()

    def lane(name: str) -> None:
        go.wait()
        start = time.perf_counter()
        for frame in frames:
            extractors[name].extract(frame)
        busy[name] = time.perf_counter() - start

    threads = [threading.Thread(target=lane, args=(name,), name=f"bare-{name}") for name in extractors]
    for thread in threads:
        thread.start()
    cpu_before = _cpu_seconds()
    start = time.perf_counter()
    go.set()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    return {"seconds": wall, "lanes": busy, "cores_used": (_cpu_seconds() - cpu_before) / wall}


def _spread(values: Sequence[float]) -> Dict[str, Any]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "runs": [round(v, 3) for v in values]}


# ------------------------------------- 2. the dataflow, side by side with 1. and 4.


def _import_dataflow_module():
    """`dataflows.facemoment`, imported without keeping its module-level side effects.

    The module builds a flow from the environment at import (the `bytewax.run`
    entry point): it installs a Ctrl-C handler and a summary printed at exit; the
    benchmark keeps its own signal handling and prints nothing at exit.
    """
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    saved_env = {k: os.environ.get(k) for k in ("FACEMOMENT__OUTPUT__SUMMARY", "FACEMOMENT_TRIG_ADDRESS")}
    os.environ["FACEMOMENT__OUTPUT__SUMMARY"] = "false"
    os.environ["FACEMOMENT_TRIG_ADDRESS"] = "none"
    try:
        import dataflows.facemoment as module
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        logging.getLogger().setLevel(logging.WARNING)
    return module


def batch_config(video: Path, out_dir: Path) -> Config:
    """The dataflow's configuration for the file runs: batch preset, trace, clips and TRIG off."""
    return load_config(
        {
            "FACEMOMENT_SOURCE": str(video),
            "FACEMOMENT_PRESET": "batch",
            "FACEMOMENT_TRACE": "off",
            "FACEMOMENT_TRIG_ADDRESS": "none",
            "FACEMOMENT__OUTPUT__CLIPS": "false",
            "FACEMOMENT__OUTPUT__SUMMARY": "false",
            "FACEMOMENT_OUTPUT_DIR": str(out_dir),
        }
    )


def measure_decode(video: Path) -> Dict[str, Any]:
    """Decoding the benchmark video alone: part of the dataflow's work the bare figure has not."""
    from facemoment.formats.frames import open_frames

    reader = open_frames(str(video))
    count = 0
    start = time.perf_counter()
    try:
        while reader.read() is not None:
            count += 1
    finally:
        reader.close()
    seconds = time.perf_counter() - start
    return {"frames": count, "seconds": round(seconds, 3), "ms_per_frame": round(seconds * 1000 / max(1, count), 2)}


def dataflow_once(module: Any, inputs: Inputs, out_dir: Path) -> Dict[str, Any]:
    """The dataflow on 1 worker, in this process with `bytewax.testing.run_main`.

    The process's extraction orchestrator (one lane per extractor, models loaded)
    is built and run once on one frame before the clock starts, as the flow's first
    batch would build it; the timed span is `run_main` from start to end: reading
    and decoding the file, extraction, alignment, fusion and the outputs.
    """
    from bytewax.testing import run_main

    from operators.extraction.orchestrator import worker_orchestrator

    cfg = batch_config(inputs.video, out_dir)
    flow = module.build_flow(cfg)
    orchestrator = worker_orchestrator(cfg)  # the object the flow's extract step will use
    orchestrator.run([inputs.frames[0]])
    cpu_before = _cpu_seconds()
    start = time.perf_counter()
    run_main(flow)
    seconds = time.perf_counter() - start
    cores_used = (_cpu_seconds() - cpu_before) / seconds
    orchestrator.close()
    triggers = read_jsonl(out_dir / "triggers.jsonl")
    return {"seconds": seconds, "cores_used": cores_used, "trigger_keys": sorted(str(t.get("key")) for t in triggers)}


def measure_in_process(
    inputs: Inputs, extractors: Mapping[str, Any], work: Path, repeats: int, log: Progress
) -> Tuple[Dict[str, Any], Dict[str, Any], Dict[str, Any]]:
    """1. the extractors alone, 2. the dataflow on 1 worker, 4. the seed's loops, on the same frames.

    Sequential: each extractor alone over all frames on one thread; the per-frame
    costs add up to what one core needs per frame. Pipelined (the limit on this
    machine): one thread per extractor, all threads through all frames at once, so
    extractors overlap with each other and with later frames. The pipelined run, the
    dataflow and the two seed loops take turns `repeats` times, so all see the same
    machine; figures are medians.
    """
    from bench.baselines import sequential_loop, thread_pool_loop

    frames = inputs.frames
    count = len(frames)
    per_extractor = sequential_costs(frames, extractors, log)
    sum_mean = sum(v["mean_ms"] for v in per_extractor.values())
    sequential_s = sum(v["total_s"] for v in per_extractor.values())
    module = _import_dataflow_module()
    cfg = Config()
    bare_runs: List[Dict[str, Any]] = []
    flow_runs: List[Dict[str, Any]] = []
    loops: Dict[str, List[Any]] = {"sequential_loop": [], "thread_pool_loop": []}
    for rep in range(repeats):
        bare_runs.append(pipelined_once(frames, extractors))
        flow_runs.append(dataflow_once(module, inputs, work / f"dataflow-1w-{rep}"))
        for loop in (sequential_loop, thread_pool_loop):
            loops[loop.__name__].append(loop(frames, extractors, cfg))
        log(f"run {rep + 1}/{repeats}: bare pipelined {count / bare_runs[-1]['seconds']:.2f} fps "
            f"({bare_runs[-1]['cores_used']:.2f} cores), dataflow {count / flow_runs[-1]['seconds']:.2f} fps "
            f"({flow_runs[-1]['cores_used']:.2f} cores), sequential loop {loops['sequential_loop'][-1].fps:.2f} fps, "
            f"thread pool {loops['thread_pool_loop'][-1].fps:.2f} fps")
    bare_s = _spread([r["seconds"] for r in bare_runs])
    flow_s = _spread([r["seconds"] for r in flow_runs])
    middle = sorted(bare_runs, key=lambda r: r["seconds"])[len(bare_runs) // 2]
    bare = {
        "frames": count,
        "per_extractor": per_extractor,
        "sum_mean_ms": round(sum_mean, 2),
        "sequential_s": round(sequential_s, 3),
        "sequential_fps": round(count / sequential_s, 2),
        "pipelined_s": bare_s["median"],
        "pipelined_runs_s": bare_s["runs"],
        "pipelined_fps": round(count / bare_s["median"], 2),
        "pipelined_lane_s": {k: round(v, 3) for k, v in middle["lanes"].items()},
        "pipelined_cores_used": round(statistics.median(r["cores_used"] for r in bare_runs), 2),
        # What all cores could give if the summed cost split perfectly between them.
        "ideal_fps_all_cores": round((os.cpu_count() or 1) * 1000 / sum_mean, 2),
    }
    decode = measure_decode(inputs.video)
    keys = [r["trigger_keys"] for r in flow_runs]
    dataflow = {
        "method": "in-process bytewax.testing.run_main; models loaded and warmed before the clock starts; "
                  f"taking turns with the bare pipelined run and the seed loops, median of {repeats}",
        "frames": count,
        "seconds": flow_s["median"],
        "runs_s": flow_s["runs"],
        "fps": round(count / flow_s["median"], 2),
        "cores_used": round(statistics.median(r["cores_used"] for r in flow_runs), 2),
        "overhead_ratio": round(flow_s["median"] / bare_s["median"], 3),
        "overhead_ratio_runs": [round(f["seconds"] / b["seconds"], 3) for f, b in zip(flow_runs, bare_runs)],
        "decode": decode,
        "triggers": len(keys[0]),
        "trigger_keys": keys[0],
        "same_triggers_every_run": all(k == keys[0] for k in keys),
    }
    baselines: Dict[str, Any] = {}
    for name, results in loops.items():
        middle_run = sorted(results, key=lambda r: r.seconds)[len(results) // 2]
        entry = middle_run.as_dict()
        entry["runs_s"] = [round(r.seconds, 3) for r in results]
        entry["dataflow_speedup"] = round(dataflow["fps"] / middle_run.fps, 3) if middle_run.fps else None
        entry["same_triggers_as_dataflow"] = sorted(t.key for t in middle_run.triggers) == dataflow["trigger_keys"]
        baselines[name] = entry
    log(f"bare: sequential {bare['sequential_fps']} fps (sum {bare['sum_mean_ms']} ms/frame); "
        f"pipelined {bare['pipelined_fps']} fps")
    log(f"dataflow 1 worker: {dataflow['fps']} fps, overhead ratio {dataflow['overhead_ratio']} "
        f"(runs {dataflow['overhead_ratio_runs']}); decode alone {decode['ms_per_frame']} ms/frame")
    for name, entry in baselines.items():
        log(f"baseline {name}: {entry['fps']} fps; the dataflow is {entry['dataflow_speedup']}x")
    return bare, dataflow, baselines


@dataclass
class ProcessRun:
    seconds: float  # from the first process's models being ready to the last exit
    returncodes: List[int]
    logs: List[Path] = field(default_factory=list)
    cores_used: Optional[float] = None  # over the same span
    ready_spread_s: float = 0.0  # between the first and the last process's models being ready


# Written into a directory on the flow processes' PYTHONPATH as sitecustomize.py: each
# process notes the wall-clock moment its orchestrator has every extractor loaded,
# after which it starts extracting frames.
READY_HOOK = '''"""FaceMoment benchmark: note when this process's extraction models are loaded."""
import os
import time

_path = os.environ.get("BENCH_READY_FILE")
if _path:
    from operators.extraction import orchestrator as _orchestrator

    _init = _orchestrator.Orchestrator.__init__

    def _init_and_note(self, *args, **kwargs):
        _init(self, *args, **kwargs)
        with open(_path, "a") as out:
            out.write(f"{os.getpid()} {time.time_ns()}\\n")

    _orchestrator.Orchestrator.__init__ = _init_and_note
'''


def install_ready_hook(work: Path) -> Path:
    directory = work / "ready-hook"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(READY_HOOK)
    return directory


def process_cpu_seconds(pid: int) -> Optional[float]:
    """utime + stime of a live process (all its threads), from /proc/<pid>/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_ready_times(path: Path) -> Dict[int, int]:
    """pid -> wall-clock ns at which that process's models were ready (first note per pid)."""
    ready: Dict[int, int] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
                ready.setdefault(int(parts[0]), int(parts[1]))
    return ready


def run_flow_processes(
    commands: Sequence[Sequence[str]], env: Mapping[str, str], hook_dir: Path, log_dir: Path, tag: str
) -> ProcessRun:
    """Start every command at once and wait for all; time from the first process's
    models being ready to the last exit, and the cores the processes kept busy meanwhile."""
    log_dir.mkdir(parents=True, exist_ok=True)
    ready_file = log_dir / f"{tag}.ready"
    ready_file.unlink(missing_ok=True)
    run_env = dict(env)
    run_env["PYTHONPATH"] = str(hook_dir) + os.pathsep + run_env.get("PYTHONPATH", "")
    run_env["BENCH_READY_FILE"] = str(ready_file)
    procs: List[Tuple[subprocess.Popen, Any]] = []
    logs = []
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    children_before = children.ru_utime + children.ru_stime
    cpu_at_ready: Optional[float] = None
    deadline = time.monotonic() + PROCESS_TIMEOUT_S
    try:
        for i, cmd in enumerate(commands):
            path = log_dir / f"{tag}-{i}.log"
            handle = open(path, "wb")
            logs.append(path)
            procs.append((subprocess.Popen(list(cmd), env=run_env, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT), handle))
        # Sample the processes' CPU as soon as the first one is ready (polling a file the children write).
        while any(p.poll() is None for p, _ in procs) and time.monotonic() < deadline:
            if cpu_at_ready is None and read_ready_times(ready_file):
                cpu_at_ready = sum(process_cpu_seconds(p.pid) or 0.0 for p, _ in procs)
            time.sleep(0.01)  # sampling period of the poll above
        codes = [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p, _ in procs]
        end_ns = time.time_ns()
    finally:
        for proc, handle in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            handle.close()
    ready = read_ready_times(ready_file)
    if len(ready) < len(commands):
        return ProcessRun(0.0, codes or [-1], logs)
    start_ns = min(ready.values())
    seconds = (end_ns - start_ns) / 1e9
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cores = None
    if cpu_at_ready is not None and seconds > 0:
        cores = (children.ru_utime + children.ru_stime - children_before - cpu_at_ready) / seconds
    return ProcessRun(seconds, codes, logs, _round(cores), (max(ready.values()) - start_ns) / 1e9)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


LAYOUTS = ("1 process", "1 process, -w 2", "2 processes")


def _flow_commands(layout: str) -> List[List[str]]:
    base = [sys.executable, "-m", "bytewax.run", "dataflows.facemoment"]
    if layout == "1 process":
        return [base]
    if layout == "1 process, -w 2":
        return [base + ["-w", "2"]]
    if layout == "2 processes":
        addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
        return [base + ["-i", str(i), "-a", addresses] for i in range(2)]
    raise ValueError(f"unknown layout {layout!r}")


def measure_processes(inputs: Inputs, work: Path, repeats: int, log: Progress) -> Dict[str, Any]:
    """`python -m bytewax.run dataflows.facemoment` as 1 process, 1 process with -w 2, and 2 processes.

    The timed span starts when the first process has its models loaded (noted by a
    sitecustomize hook around the orchestrator's constructor, which returns once
    every extractor is loaded) and ends when the last process has exited; imports,
    model loading and cluster set-up are outside it. Layouts take turns `repeats`
    times; the figures are medians.
    """
    frames = len(inputs.frames)
    hook_dir = install_ready_hook(work)
    runs: Dict[str, List[ProcessRun]] = {layout: [] for layout in LAYOUTS}
    for rep in range(repeats):
        for layout in LAYOUTS:
            tag = f"{layout.replace(' ', '_').replace(',', '')}-{rep}"
            env = flow_env(
                {
                    "FACEMOMENT_SOURCE": str(inputs.video),
                    "FACEMOMENT_PRESET": "batch",
                    "FACEMOMENT_TRIG_ADDRESS": "none",
                    "FACEMOMENT_TRACE": "off",
                    "FACEMOMENT__OUTPUT__CLIPS": "false",
                    "FACEMOMENT_OUTPUT_DIR": str(work / f"procs-{tag}"),
                }
            )
            run = run_flow_processes(_flow_commands(layout), env, hook_dir, work / "logs", tag)
            if any(run.returncodes) or run.seconds <= 0:
                raise RuntimeError(f"{layout} exited with {run.returncodes}:\n" + "\n".join(_tail(p) for p in run.logs))
            runs[layout].append(run)
            log(f"processes: {layout}: {frames / run.seconds:.2f} fps, {run.cores_used} cores "
                f"(run {rep + 1}/{repeats}, models ready {run.ready_spread_s:.2f} s apart)")
    layouts: Dict[str, Any] = {}
    for layout, items in runs.items():
        spread = _spread([r.seconds for r in items])
        layouts[layout] = {
            "processes": len(items[0].returncodes),
            "seconds": spread["median"],
            "runs_s": spread["runs"],
            "fps": round(frames / spread["median"], 2),
            "cores_used": _round(statistics.median([r.cores_used for r in items if r.cores_used is not None] or [0.0])),
            "ready_spread_s": round(max(r.ready_spread_s for r in items), 3),
        }
    one = layouts["1 process"]["fps"]
    for layout in LAYOUTS[1:]:
        layouts[layout]["speedup_vs_1_process"] = round(layouts[layout]["fps"] / one, 3)
    return {
        "method": "wall time from the first process's models being loaded to the last process's exit, "
                  f"median of {repeats}",
        "frames": frames,
        "layouts": layouts,
    }


# ------------------------------------------------------------ 5./6. live runs over ZMQ


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


class _TrigListener(threading.Thread):
    """SUB on the flow's TRIG address; records (wall ns, text) of every message."""

    def __init__(self, address: str) -> None:
        super().__init__(name="bench-trig", daemon=True)
        import zmq

        self.received: List[Tuple[int, str]] = []
        self.stop = threading.Event()
        self._ctx = zmq.Context()
        self._sub = self._ctx.socket(zmq.SUB)
        self._sub.setsockopt(zmq.LINGER, 0)
        self._sub.setsockopt(zmq.SUBSCRIBE, b"msg")
        self._sub.connect(address)

    def run(self) -> None:
        import zmq

        try:
            while True:
                stopping = self.stop.is_set()
                while self._sub.poll(0 if stopping else 50):
                    parts = self._sub.recv_multipart(zmq.NOBLOCK)
                    self.received.append((time.time_ns(), parts[-1].decode("utf-8", "replace")))
                if stopping:
                    break
        finally:
            self._sub.close()
            self._ctx.term()


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
) -> LiveRun:
    """Publish the sample at 30 fps into `python -m bytewax.run dataflows.facemoment` (realtime preset).

    The publisher is a `FramePublisher` (XPUB, waits for the flow's subscription,
    which the flow makes after its models are loaded), paced on a monotonic
    schedule: frame i is due at start + i/30 s; its wall-clock send time is
    recorded. Frame ids and timestamps keep counting when the sample loops.
    """
    from facemoment.tools.daemon import FramePublisher
    from facemoment.formats.sample import frame_t_ns

    out_dir = work / name
    frames_address = f"tcp://127.0.0.1:{free_port()}"
    trig_address = f"tcp://127.0.0.1:{free_port()}"
    env = flow_env(
        {
            "FACEMOMENT_SOURCE": frames_address,
            "FACEMOMENT_IDLE_TIMEOUT_S": "2",
            "FACEMOMENT_PRESET": "realtime",
            "FACEMOMENT_TRIG_ADDRESS": trig_address,
            "FACEMOMENT_TRACE": "normal",
            "FACEMOMENT__OUTPUT__CLIPS": "false",
            "FACEMOMENT_OUTPUT_DIR": str(out_dir),
        }
    )
    total = int(round(seconds * LIVE_FPS))
    period_ns = int(round(1e9 / LIVE_FPS))
    publisher = FramePublisher(frames_address, wait_subscribers=1)
    listener = _TrigListener(trig_address)
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
            raise RuntimeError(f"{name}: the dataflow did not subscribe within 180 s:\n{_tail(log_path)}")
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
                raise RuntimeError(f"{name}: the dataflow exited early ({proc.returncode}):\n{_tail(log_path)}")
        stream_end = time.monotonic()
        code = proc.wait(timeout=120)
        if code != 0:
            raise RuntimeError(f"{name}: the dataflow exited with {code}:\n{_tail(log_path)}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        handle.close()
        listener.stop.set()
        listener.join(timeout=10)
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


def _trace_timings(records: Sequence[Record]) -> Dict[str, Any]:
    """Per-extractor processing time and the orchestrator's per-frame wait, from timing records."""
    by_component: Dict[str, List[float]] = {}
    for r in records:
        if r.get("record_type") == "timing" and isinstance(r.get("processing_ms"), (int, float)) and not r.get("late"):
            by_component.setdefault(str(r.get("component")), []).append(float(r["processing_ms"]))
    return {
        name: {"median_ms": _round(percentile(v, 50)), "p99_ms": _round(percentile(v, 99)), "count": len(v)}
        for name, v in sorted(by_component.items())
        if name != "fusion_process"
    }


def late_frame_delays(records: Iterable[Record], send_wall_ns: Mapping[int, int]) -> Dict[str, Any]:
    """Capture-to-alignment time of whole frames that reached alignment late (ms)."""
    delays = []
    for r in records:
        if (r.get("record_type") == "sync_delay" and r.get("late") and "frame" in (r.get("waiting_for") or [])
                and isinstance(r.get("actual_ns"), int) and r.get("frame_id") in send_wall_ns):
            delays.append((r["actual_ns"] - send_wall_ns[r["frame_id"]]) / 1e6)
    return {"count": len(delays), "p50_ms": _round(percentile(delays, 50)),
            "min_ms": _round(min(delays) if delays else None), "max_ms": _round(max(delays) if delays else None)}


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
        "timings": _trace_timings(trace),
        "late_frames_capture_to_alignment": late_frame_delays(trace, run.send_wall_ns),
        "latency": trigger_latencies(run.send_wall_ns, run.received, rows),
    }


def kept_up(live: Mapping[str, Any]) -> bool:
    """Every frame fused with every extractor: no frame lost, none partial."""
    acc = live["accounting"]
    lost = sum(acc["dropped_by_reason"].values()) + acc["publisher_dropped"] + acc["late_frames_not_fused"]
    return lost == 0 and acc["partial_frames_timeout"] == 0 and acc["unaccounted"] == 0


def measure_latency(inputs: Inputs, plan: Plan, work: Path, log: Progress) -> Dict[str, Any]:
    run = live_run("latency", inputs.sample_images, plan.latency_s, work, log)
    result = summarize_live(run)
    cfg = load_config({"FACEMOMENT_PRESET": "realtime"})
    frame_ms = 1000.0 / LIVE_FPS
    result["target_ms"] = round(cfg.align.window_ms + cfg.align.allowed_lateness_ms + 2 * frame_ms, 1)
    result["target_parts_ms"] = {
        "window": cfg.align.window_ms,
        "allowed_lateness": cfg.align.allowed_lateness_ms,
        "two_frames": round(2 * frame_ms, 1),
    }
    result["frame_size"] = "640x480"
    lat = result["latency"]
    log(f"latency: {lat['count']} triggers, p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms "
        f"(target {result['target_ms']} ms); fused {result['fused_fps']} fps, "
        f"complete {result['complete_fps']} fps; drops {result['accounting']['dropped_by_reason']}, "
        f"timeouts {result['accounting']['timeouts_by_extractor']}")
    return result


def measure_overload(inputs: Inputs, plan: Plan, work: Path, size: Tuple[int, int], why: str, log: Progress) -> Dict[str, Any]:
    run = live_run("overload", inputs.sample_images, plan.overload_s, work, log, size=size, sample_rss=True)
    result = summarize_live(run)
    result["frame_size"] = f"{size[0]}x{size[1]}"
    result["frame_size_reason"] = why
    result["rss"] = rss_stats(run.rss)
    result["rss_samples"] = [(round(t, 2), round(mb, 1)) for t, mb in run.rss]
    log(f"overload {result['frame_size']}: RSS {result['rss']['min_mb']}-{result['rss']['max_mb']} MB, "
        f"slope {result['rss']['slope_mb_per_min']} MB/min; fused {result['fused_fps']} fps; "
        f"drops {result['accounting']['dropped_by_reason']}, timeouts {result['accounting']['timeouts_by_extractor']}")
    return result


# ------------------------------------------------------------------ 7. ZMQ ingest


def serve_raw_frames(address: str, count: int, size: Tuple[int, int], wait_s: float = 60.0) -> Dict[str, Any]:
    """Publish `count` raw frames as fast as the subscriber takes them (child process side).

    An XPUB with ZMQ_XPUB_NODROP and blocking sends: a full queue makes the
    publisher wait instead of losing frames, so the rate is the subscriber's. The
    pixels are packed once; each frame gets its own header (id and timestamp).
    """
    import zmq

    from facemoment.formats.wire import FRAME_TOPIC, HEADER, pack_frame

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
    cmd = [sys.executable, str(Path(__file__).resolve()), "--serve-raw-frames", address,
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

    from connectors.zmq_source import RECEIVE_HWM, ZmqFrameSource
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
    pipe = {"frames": got, "fps": _round(pipe_fps), "mb_per_s": _round(pipe_fps * mb_per_frame if pipe_fps else None, 1), "publisher": server}
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

    source = ZmqFrameSource(address, "ingest", idle_timeout_s=1.0, connect_timeout_s=60.0)
    flow = Dataflow("bench_ingest")
    op.inspect("count", op.input("frames", flow, source), count_item)
    run_main(flow)
    server2 = _server_result(proc, result_path)
    stats = next(iter(source.partitions.values())).stats.as_dict() if source.partitions else {}
    span = seen["last"] - seen["first"]
    fps = (seen["frames"] - 1) / span if seen["frames"] > 1 and span > 0 else None
    flow_result = {
        "frames": seen["frames"],
        "fps": _round(fps),
        "mb_per_s": _round(fps * mb_per_frame if fps else None, 1),
        "source_stats": stats,
        "publisher": server2,
        "buffer_frames": 8,
    }
    log(f"ingest: ZmqFrameSource in Bytewax {flow_result['fps']} fps ({flow_result['mb_per_s']} MB/s), "
        f"{seen['frames']}/{count} frames, dropped {stats.get('dropped_backpressure')} at the buffer")
    return {"frame_size": f"{width}x{height}", "mb_per_frame": round(mb_per_frame, 2), "frames_published": count,
            "raw_pipe": pipe, "zmq_frame_source": flow_result}


# ------------------------------------------------------------------ targets, report


def _pct(value: Optional[float]) -> str:
    return "–" if value is None else f"{value * 100:.0f}%"


def _share(part: Optional[float], whole: Optional[float]) -> Optional[float]:
    return part / whole if part is not None and whole else None


def evaluate_targets(results: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """Each target with the measured value, whether it is met, by how much it is missed, and why."""
    out: List[Dict[str, Any]] = []
    bare = results.get("bare") or {}
    cores = (results.get("machine") or {}).get("cores") or 1

    def add(name: str, goal: str, measured: Any, met: Optional[bool], shortfall: Optional[str], why: str) -> None:
        out.append({"name": name, "target": goal, "measured": measured, "met": met, "shortfall": shortfall, "why": why})

    df = results.get("dataflow")
    if df and bare:
        ratio = df["overhead_ratio"]
        met = ratio <= 1.05
        decode_share = df["decode"]["seconds"] / bare["pipelined_s"]
        why = (f"same frames, same one-thread-per-extractor lanes; the dataflow also reads and decodes the file "
               f"({df['decode']['ms_per_frame']} ms/frame, {_pct(decode_share)} of the bare time) and runs Bytewax's "
               f"steps, alignment and fusion; it kept {df['cores_used']} cores busy, the bare lanes "
               f"{bare.get('pipelined_cores_used')}; per-run ratios {df['overhead_ratio_runs']}")
        add("dataflow / bare extractor time (1 worker)", "<= 1.05", ratio, met,
            None if met else f"{ratio - 1.05:.3f} over", why)
    procs = (results.get("processes") or {}).get("layouts") or {}
    if procs.get("2 processes") and procs.get("1 process"):
        two, one = procs["2 processes"], procs["1 process"]
        speedup = two.get("speedup_vs_1_process")
        met = speedup is not None and speedup >= 1.8
        why = (f"both run on the same {cores} cores: 1 process keeps {one.get('cores_used')} cores busy "
               f"({one.get('fps')} fps), 2 processes {two.get('cores_used')} ({two.get('fps')} fps). ")
        if met:
            why += ("The gain is the core time a single process leaves idle; it is not more hardware, and it "
                    "cannot grow past the cores.")
        else:
            why += ("A second process can only use the core time the first leaves idle; on this machine that caps "
                    "the speed-up below 1.8x, which needs more cores or a second machine.")
        add("2 processes vs 1 (same machine)", ">= 1.8x", speedup, met,
            None if met or speedup is None else f"{(1.8 - speedup):.2f}x short ({_pct(speedup / 1.8)} of the target)", why)
    base = results.get("baselines") or {}
    seq = base.get("sequential_loop")
    if seq and bare:
        speedup = seq.get("dataflow_speedup")
        met = speedup is not None and speedup >= 2.0
        ceiling = bare["pipelined_fps"] / bare["sequential_fps"] if bare.get("sequential_fps") else None
        best = max((v.get("fps") or 0) for v in procs.values()) if procs else None
        why = (f"the sequential loop pays the summed extractor cost, {bare.get('sum_mean_ms')} ms per frame, on one "
               f"core; {cores} cores can at best divide that by {cores}, and the bare pipelined limit measured here "
               f"is {_round(ceiling)}x the sequential extractor figure")
        if ceiling is not None and ceiling < 2.0:
            why += " (below 2x: no scheduler reaches the target on this machine)"
        if best:
            why += f"; the fastest layout in 3 reached {best} fps ({_round(best / seq['fps'])}x the loop)"
        add("dataflow (1 worker) vs the seed's sequential loop", ">= 2x", speedup, met,
            None if met or speedup is None else f"{(2.0 - speedup):.2f}x short ({_pct(speedup / 2.0)} of the target)", why)
    lat = results.get("latency")
    if lat:
        target = lat["target_ms"]
        p99 = lat["latency"]["p99_ms"]
        orch = ((lat.get("timings") or {}).get("orchestrator") or {})
        why = (f"a trigger is sent once its frame's window has closed, i.e. once a frame "
               f"{lat['target_parts_ms']['allowed_lateness']:.0f} ms (the allowed lateness) past the window's end has "
               f"been extracted: the firing frame waits for the rest of its window, the allowed lateness and that later "
               f"frame's extraction (orchestrator median {orch.get('median_ms')} ms, p99 {orch.get('p99_ms')} ms from a "
               f"frame's submission to its collection, deadline 150 ms), where the target allows two frame times "
               f"({lat['target_parts_ms']['two_frames']} ms); {lat['latency']['count']} triggers measured")
        if p99 is None:
            add("TRIG latency p99, 30 fps 640x480 (realtime)", f"<= {target} ms", None, None, "no trigger received", why)
        else:
            met = p99 <= target
            add("TRIG latency p99, 30 fps 640x480 (realtime)", f"<= {target} ms", p99, met,
                None if met else f"{p99 - target:.0f} ms over", why)
    over = results.get("overload")
    if over:
        rss = over["rss"]
        slope = rss["slope_after_warmup_mb_per_min"]
        met = slope is not None and abs(slope) <= MEMORY_SLOPE_LIMIT
        add(
            f"flat memory under overload ({over['frame_size']}, after {rss['warmup_s']:.0f} s warm-up)",
            f"|slope| <= {MEMORY_SLOPE_LIMIT} MB/min",
            slope, met, None if met or slope is None else f"{abs(slope) - MEMORY_SLOPE_LIMIT:.1f} MB/min over",
            f"RSS {rss['min_mb']}-{rss['max_mb']} MB, {rss['range_after_warmup_mb']} MB range after the warm-up and "
            f"{rss['range_last_third_mb']} MB over the last third of the run (whole-run slope {rss['slope_mb_per_min']} "
            f"MB/min); a {over['stream_seconds']:.0f} s run cannot tell growth that levels off from a slow leak; "
            "clips off (the live ring buffer grows by design up to its 120 s / 512 MB bound)",
        )
    ingest = results.get("ingest")
    if ingest:
        fps = ingest["zmq_frame_source"]["fps"]
        met = fps is not None and fps >= 60
        add("ZMQ ingest of raw 1080p frames", ">= 60 fps", fps, met,
            None if met or fps is None else f"{60 - fps:.0f} fps short",
            f"the pipe alone (plain SUB) carries {ingest['raw_pipe']['fps']} fps; the source copies each "
            f"{ingest['mb_per_frame']} MB frame once out of the ZMQ buffer")
    cpu = results.get("cpu") or {}
    measured_in = {"dataflow / bare": "in_process", "dataflow (1 worker)": "in_process", "2 processes": "processes",
                   "TRIG latency": "latency", "flat memory": "overload", "ZMQ ingest": "ingest"}
    for target in out:
        key = next((v for k, v in measured_in.items() if target["name"].startswith(k)), None)
        foreign = (cpu.get(key) or {}).get("foreign_cores", 0.0) if key else 0.0
        if foreign >= FOREIGN_LOAD_NOTE:
            target["why"] += f" (other processes used {foreign} cores during this measurement)"
    return out


def _versus_30(fps: float) -> str:
    if fps < LIVE_FPS:
        return f"below the {LIVE_FPS:.0f} fps needed"
    if fps < LIVE_FPS * 1.2:
        return f"barely above the {LIVE_FPS:.0f} fps needed"
    return f"above the {LIVE_FPS:.0f} fps needed"


def _live_runs_640(results: Mapping[str, Any]) -> List[Tuple[str, Mapping[str, Any]]]:
    return [(key, results[key]) for key in ("latency", "overload")
            if results.get(key) and results[key].get("frame_size") == "640x480"]


def headline(results: Mapping[str, Any]) -> Dict[str, Any]:
    """Do all four extractors keep up with a live 30 fps 640x480 stream, with no backpressure drops?"""
    runs = _live_runs_640(results)
    if not runs:
        return {"answer": None, "text": "No live 640x480 run was made."}
    drops: Counter = Counter()
    timeouts: Counter = Counter()
    attempted = fused = complete = late = partial = publisher = 0
    seconds = 0.0
    for _, r in runs:
        acc = r["accounting"]
        drops.update(acc["dropped_by_reason"])
        timeouts.update(acc["timeouts_by_extractor"])
        attempted += acc["frames_attempted"]
        fused += acc["fused"]
        complete += acc["fused_complete"]
        late += acc["late_frames_not_fused"]
        partial += acc["partial_frames_timeout"]
        publisher += acc["publisher_dropped"]
        seconds += r["stream_seconds"]
    answer = all(kept_up(r) for _, r in runs)
    bare = results.get("bare") or {}
    per = bare.get("per_extractor") or {}
    slowest = max(per, key=lambda n: per[n]["mean_ms"]) if per else None
    lost = sum(drops.values()) + late
    parts = [
        f"{attempted} frames sent at 30 fps ({' and '.join(k for k, _ in runs)} runs):",
        f"backpressure drops {drops.get('backpressure', 0)}, lost at the publisher/wire "
        f"{drops.get('queue_full', 0) + max(0, publisher - drops.get('queue_full', 0))},",
        f"whole frames lost late at alignment {late};",
        f"fused {fused} ({fused / seconds:.1f} fps), of which {complete} with all four extractors "
        f"({complete / seconds:.1f} fps against 30);",
        f"{partial} frames fused without an extractor that missed the 150 ms deadline"
        + (f" ({', '.join(f'{k} {v}' for k, v in sorted(timeouts.items()))})." if timeouts else "."),
    ]
    if answer:
        verdict = "Yes."
    elif drops.get("backpressure", 0) == 0 and lost == 0:
        verdict = "No backpressure drops and no frame lost, but not every extractor on every frame."
    elif drops.get("backpressure", 0) == 0:
        verdict = "No: no backpressure drop, but frames are lost or incomplete."
    else:
        verdict = "No."
    why = ""
    if not answer and bare:
        timings: Dict[str, List[float]] = {}
        for _, r in runs:
            for name, t in (r.get("timings") or {}).items():
                if name in per and t.get("median_ms") is not None:
                    timings.setdefault(name, []).append(t["median_ms"])
        in_flow = {name: statistics.median(v) for name, v in timings.items()}
        lane = max(in_flow, key=in_flow.get) if in_flow else slowest
        why = (f" Why: the four extractors cost {bare['sum_mean_ms']} ms per frame summed on one core "
               f"({slowest} alone {per[slowest]['mean_ms']} ms); {results.get('machine', {}).get('cores')} cores "
               f"give {bare['pipelined_fps']} fps in the bare pipelined limit of this run "
               f"({_versus_30(bare['pipelined_fps'])}). Sharing "
               f"the cores with the other lanes, {lane} takes {in_flow.get(lane, per[lane]['mean_ms']):.1f} ms per "
               f"frame (median, from the trace) against 33.3 ms between frames, so its lane falls behind and frames "
               f"reach their 150 ms deadline without it.")
        if late:
            delays = [r["late_frames_capture_to_alignment"] for _, r in runs if r.get("late_frames_capture_to_alignment")]
            p50 = statistics.median([d["p50_ms"] for d in delays if d.get("p50_ms") is not None] or [0.0])
            why += (f" Frames lost late reached alignment {p50:.0f} ms (median) after capture, further behind the "
                    f"newest frame than the allowed lateness.")
    return {
        "answer": answer,
        "frames_attempted": attempted,
        "backpressure_drops": drops.get("backpressure", 0),
        "dropped_by_reason": dict(drops),
        "late_frames_not_fused": late,
        "partial_frames": partial,
        "timeouts_by_extractor": dict(timeouts),
        "fused_fps": round(fused / seconds, 2),
        "complete_fps": round(complete / seconds, 2),
        "text": f"{verdict} " + " ".join(parts) + why,
    }


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "none"
    return str(value).replace("|", "\\|")  # a bare pipe would split the table cell


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def render_markdown(results: Mapping[str, Any]) -> str:
    """results.md from a results dict; sections for measurements that did not run are left out."""
    m = results.get("machine") or {}
    lines = [
        "# FaceMoment benchmark results",
        "",
        f"- date: {results.get('date')}",
        f"- command: `{results.get('command')}` ({'quick' if results.get('quick') else 'full'} mode, "
        f"{results.get('duration_s')} s)",
        f"- machine: {m.get('platform')}; {m.get('cpu_model')}, {m.get('cores')} cores, {m.get('memory_gb')} GB",
        f"- software: Python {m.get('python')}, bytewax {m.get('bytewax')}, mediapipe {m.get('mediapipe')}, "
        f"numpy {m.get('numpy')}, opencv {m.get('opencv')}, pyzmq {m.get('pyzmq')}",
        f"- load average (1, 5, 15 min) before: {_cell(results.get('load_before'))}, after: {_cell(results.get('load_after'))}"
        + (f" — {results['load_note']}" if results.get("load_note") else ""),
        "",
    ]
    head = results.get("headline")
    if head:
        lines += ["## Headline: do all four extractors keep up with a live 30 fps 640x480 stream?", "", head["text"], ""]
    targets = results.get("targets") or []
    if targets:
        lines += ["## Targets", ""]
        lines += _table(
            ["target", "goal", "measured", "met", "missed by", "why"],
            [(t["name"], t["target"], t["measured"], t["met"], t["shortfall"], t["why"]) for t in targets],
        )
        lines.append("")
    bare = results.get("bare")
    if bare:
        lines += [f"## 1. Extractors alone ({bare['frames']} frames, 640x480, no Bytewax)", ""]
        lines += _table(
            ["extractor", "mean ms", "median ms", "p90 ms", "pipelined lane s"],
            [(n, v["mean_ms"], v["median_ms"], v["p90_ms"], bare["pipelined_lane_s"].get(n)) for n, v in bare["per_extractor"].items()],
        )
        lines += [
            "",
            f"- sequential, one thread (sum of per-extractor costs, {bare['sum_mean_ms']} ms/frame): "
            f"**{bare['sequential_fps']} fps**",
            f"- pipelined, one thread per extractor over all frames (the limit on this machine): "
            f"**{bare['pipelined_fps']} fps** (median {bare['pipelined_s']} s of runs {bare['pipelined_runs_s']}, "
            f"{bare['pipelined_cores_used']} cores busy)",
            f"- all {m.get('cores')} cores with the summed cost split perfectly would give {bare['ideal_fps_all_cores']} fps",
            "",
        ]
    df = results.get("dataflow")
    if df:
        lines += [
            "## 2. The dataflow, 1 worker (batch preset, trace, clips and TRIG off)",
            "",
            f"- {df['frames']} frames from a video file in {df['seconds']} s (median of runs {df['runs_s']}): "
            f"**{df['fps']} fps**, {df['cores_used']} cores busy",
            f"- overhead ratio (dataflow time / bare pipelined time): **{df['overhead_ratio']}** "
            f"(per run: {df['overhead_ratio_runs']})",
            f"- decoding the video alone: {df['decode']['ms_per_frame']} ms/frame",
            f"- method: {df['method']}",
            "",
        ]
    procs = results.get("processes")
    if procs:
        lines += ["## 3. Processes and workers (`python -m bytewax.run dataflows.facemoment`)", ""]
        lines += _table(
            ["layout", "fps", "speed-up vs 1 process", "cores busy", "seconds (median)", "runs s"],
            [(name, v["fps"], v.get("speedup_vs_1_process"), v.get("cores_used"), v["seconds"], v["runs_s"])
             for name, v in procs["layouts"].items()],
        )
        lines += ["", f"- method: {procs['method']}", ""]
    base = results.get("baselines")
    if base:
        lines += ["## 4. The seed's loops on the same frames and models", ""]
        lines += _table(
            ["baseline", "fps", "dataflow speed-up", "triggers", "same triggers as the dataflow", "timeouts", "runs s"],
            [(n, v["fps"], v["dataflow_speedup"], v["triggers"], v["same_triggers_as_dataflow"], v["timeouts"], v.get("runs_s"))
             for n, v in base.items()],
        )
        lines += ["", "- sequential_loop: each frame, every extractor in turn, then fusion; thread_pool_loop: the seed's "
                  "ExtractorOrchestrator, ThreadPoolExecutor(max_workers=4) and as_completed(timeout=0.15) per frame, "
                  "then fusion (bench/baselines.py)", ""]
    for key, title in (("latency", "5. Trigger latency, 30 fps paced input (realtime preset)"),
                       ("overload", "6. Overload: 30 fps paced input")):
        run = results.get(key)
        if not run:
            continue
        acc = run["accounting"]
        lines += [f"## {title}", ""]
        lines += [
            f"- frame size {run['frame_size']}, {acc['frames_attempted']} frames over {run['stream_seconds']} s"
            + (f" ({run['frame_size_reason']})" if run.get("frame_size_reason") else ""),
            f"- fused {run['fused_fps']} fps, fused with all four extractors {run['complete_fps']} fps",
            f"- publisher: sent {run['publisher']['sent']}, dropped at its high-water mark "
            f"{run['publisher']['dropped_at_hwm']}, max lag behind schedule {run['publisher']['max_schedule_lag_ms']} ms",
            f"- frames: fused {acc['fused']} + dropped {_cell(acc['dropped_by_reason'])} + late {acc['late_frames_not_fused']}"
            f" = {acc['frames_attempted'] - acc['unaccounted']} of {acc['frames_attempted']} sent"
            f" (unaccounted {acc['unaccounted']})",
            f"- partial frames (an extractor missed the deadline): {acc['partial_frames_timeout']}; "
            f"by extractor: {_cell(acc['timeouts_by_extractor'])}",
        ]
        late = run.get("late_frames_capture_to_alignment") or {}
        if late.get("count"):
            lines.append(f"- whole frames late at alignment: {late['count']}, reaching it {late['min_ms']}-{late['max_ms']} ms "
                         f"(median {late['p50_ms']} ms) after capture")
        if run.get("timings"):
            lines.append("- per-frame processing from the trace (median / p99 ms): "
                         + ", ".join(f"{k} {v['median_ms']} / {v['p99_ms']}" for k, v in run["timings"].items()))
        lat = run.get("latency")
        if lat:
            line = (f"- TRIG latency (receive time minus the send time of the frame it fired on), "
                    f"{lat['count']} triggers: **p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms**, max {lat['max_ms']} ms")
            parts = run.get("target_parts_ms")
            if parts:
                line += (f"; target {run['target_ms']} ms (window {parts['window']} + lateness "
                         f"{parts['allowed_lateness']} + two frames {parts['two_frames']})")
            lines.append(line)
        rss = run.get("rss")
        if rss:
            lines.append(
                f"- dataflow RSS while streaming ({rss['samples']} samples every {RSS_PERIOD_S} s): "
                f"min {rss['min_mb']} MB, max {rss['max_mb']} MB, slope {rss['slope_mb_per_min']} MB/min over the "
                f"whole stream; after the first {rss['warmup_s']:.0f} s: **{rss['slope_after_warmup_mb_per_min']} MB/min**, "
                f"range {rss['range_after_warmup_mb']} MB; last third of the run: range {rss['range_last_third_mb']} MB"
            )
        lines.append("")
    ingest = results.get("ingest")
    if ingest:
        pipe, src = ingest["raw_pipe"], ingest["zmq_frame_source"]
        lines += [
            f"## 7. ZMQ ingest of raw {ingest['frame_size']} frames ({ingest['mb_per_frame']} MB each)",
            "",
            f"- ZmqFrameSource in a Bytewax flow (count only): **{src['fps']} fps, {src['mb_per_s']} MB/s**; "
            f"{src['frames']} of {ingest['frames_published']} frames, buffer drops "
            f"{(src.get('source_stats') or {}).get('dropped_backpressure')}",
            f"- the pipe alone (plain SUB, no copy): {pipe['fps']} fps, {pipe['mb_per_s']} MB/s",
            f"- publisher send loop (blocking, lossless): {pipe['publisher']['fps']} fps with the plain SUB, "
            f"{src['publisher']['fps']} fps with the source, waiting in send for the subscriber "
            f"{_pct(_share(src['publisher'].get('send_call_s'), src['publisher'].get('seconds')))} of its time "
            "(so the subscriber, not the publisher, sets the rate)",
            "",
        ]
    cpu = results.get("cpu") or {}
    if cpu:
        lines += ["## CPU during each measurement (average cores busy)", ""]
        lines += _table(
            ["measurement", "seconds", "all processes", "the benchmark and its children", "other processes", "steal"],
            [(name, c["seconds"], c["system_cores"], c["own_cores"], c["foreign_cores"], c["steal_cores"]) for name, c in cpu.items()],
        )
        lines.append("")
    notes = results.get("notes") or []
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def _parse_size(text: str) -> Tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}")
    return int(width), int(height)


def run_benchmark(plan: Plan, out: Path, command: str, overload_size: Optional[Tuple[int, int]], log: Progress) -> Dict[str, Any]:
    results: Dict[str, Any] = {
        "date": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
        "command": command,
        "quick": plan.quick,
        "machine": machine_info(),
        "load_before": load_average(),
        "plan": {"frames": plan.frames, "repeats": plan.repeats, "latency_s": plan.latency_s,
                 "overload_s": plan.overload_s, "ingest_frames": plan.ingest_frames},
    }
    log(f"machine: {results['machine']['cpu_model']}, {results['machine']['cores']} cores; "
        f"load average {results['load_before']}")

    def measured(name: str, fn: Callable[[], Any]) -> Any:
        """Run one measurement after a bounded wait for a quiet machine; record the CPU it saw."""
        wait_for_quiet(log, plan.quiet_wait_s)
        with CpuMeter() as meter:
            value = fn()
        results.setdefault("cpu", {})[name] = meter.result
        log(f"{name}: cores busy {meter.result['system_cores']}, ours {meter.result['own_cores']}, "
            f"other processes {meter.result['foreign_cores']}")
        return value

    with tempfile.TemporaryDirectory(prefix="facemoment-bench-") as tmp:
        work = Path(tmp)
        inputs = prepare_inputs(plan, work, log)
        extractors = load_extractors(Config(), inputs.frames[0])
        try:
            results["bare"], results["dataflow"], results["baselines"] = measured(
                "in_process", lambda: measure_in_process(inputs, extractors, work, plan.repeats, log)
            )
        finally:
            for extractor in extractors.values():
                extractor.close()
        results["processes"] = measured("processes", lambda: measure_processes(inputs, work, plan.repeats, log))
        results["latency"] = measured("latency", lambda: measure_latency(inputs, plan, work, log))
        if overload_size is None:
            if kept_up(results["latency"]):
                overload_size = OVERLOAD_LARGE_SIZE
                why = "640x480 kept up in the latency run, so larger frames make the processing slower than 30 fps"
            else:
                overload_size = (640, 480)
                why = "640x480 is already more than this machine processes completely at 30 fps (see 5.)"
        else:
            why = "frame size chosen on the command line"
        results["overload"] = measured(
            "overload", lambda: measure_overload(inputs, plan, work, overload_size, why, log)
        )
        results["ingest"] = measured("ingest", lambda: measure_ingest(plan, work, log))
    results["load_after"] = load_average()
    results["duration_s"] = round(time.monotonic() - log.started, 1)
    results["headline"] = headline(results)
    results["targets"] = evaluate_targets(results)
    foreign = max((c["foreign_cores"] for c in results["cpu"].values()), default=0.0)
    results["load_note"] = (
        f"other processes used up to {foreign} cores on average during a measurement (see the CPU table)"
        if foreign >= FOREIGN_LOAD_NOTE else "the machine was otherwise quiet during the measurements"
    )
    results["notes"] = [
        "All figures come from this one run; the dataflow, bare and baseline figures use the same 640x480 frames "
        "(decoded from the same encoded video).",
        "Live runs (5, 6) use the realtime preset (150 ms extractor deadline, 100 ms window, 200 ms allowed "
        "lateness), trace level normal (the drop accounting comes from it) and clips off: TRIG goes to "
        "visualbase, which cuts the clips; the in-process live ring buffer would add a JPEG encode per frame.",
        "Before each measurement the benchmark waits (up to "
        f"{plan.quiet_wait_s:.0f} s) for other processes to leave the cores; the CPU table shows what they still used.",
    ]
    return results


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller runs, under 3 minutes")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="where results.json/md go")
    parser.add_argument("--overload-size", type=_parse_size, default=None,
                        help="frame size for the overload run (default: 640x480 unless it kept up, then 1920x1080)")
    # The raw frame publisher for the ingest measurement runs as a child process of the benchmark.
    parser.add_argument("--serve-raw-frames", metavar="ADDRESS", help=argparse.SUPPRESS)
    parser.add_argument("--serve-count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--serve-size", type=_parse_size, default=INGEST_SIZE, help=argparse.SUPPRESS)
    parser.add_argument("--serve-result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_raw_frames:
        result = serve_raw_frames(args.serve_raw_frames, args.serve_count, args.serve_size)
        args.serve_result.write_text(json.dumps(result))
        return 0

    log = Progress()
    plan = Plan.for_mode(args.quick)
    command = shlex.join([os.path.relpath(sys.executable) if sys.executable.startswith(str(REPO)) else sys.executable,
                          os.path.relpath(__file__) if __file__.startswith(os.getcwd()) else __file__,
                          *(argv if argv is not None else sys.argv[1:])])
    results = run_benchmark(plan, args.out, command, args.overload_size, log)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (args.out / "results.md").write_text(render_markdown(results))
    log(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'}")
    print(results["headline"]["text"], flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
