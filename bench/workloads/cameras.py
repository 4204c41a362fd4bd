"""10. Several cameras in one flow process, each against its offline full-fidelity run on the same frames.

Layouts (camera kinds from bench/workloads/camera_corpus.py):

- 1 camera at raw 1920x1080 (the rider scaled up), clips on: their size and length are checked;
- 1, 2, 4 and 8 cameras at 30 fps 640x480: 1 = rider; 2 = rider + empty;
  4 = rider, rider_shifted, empty, empty; 8 = those four twice; and 1 and 3 empty cameras
  alone (what an empty camera costs, with and without the process's fixed costs).

Each camera streams 390 frames (13 s: the sample's 12 s and a second of its loop,
CAMERA_FRAMES).

Each camera is one publisher process (bench/workloads/camera_publisher.py) sending its
video's decoded frames at 30 fps; all cameras of a layout go into ONE
`python -m bytewax.run dataflows.facemoment` (the first as `source.source`, the rest
through `source.extra`), trace level normal, TRIG to a local subscriber. Per camera the
trace and triggers.jsonl give the frames fused with every extractor, the frames shed,
the triggers against the offline reference, the TRIG decision latency and the budget's
schedule; the process's CPU while the cameras streamed is split over the cameras.
The seed's thread-pool loop runs on the 4-camera layout's frames as the baseline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from bench.meters import (cpu_jiffies, own_process_cpu_seconds, percentile, process_cpu_seconds,
                          process_tree_cpu_seconds, rounded, wait_for_quiet)
from bench.plan import LIVE_FPS, REPO, SAMPLE_FRAMES, Progress
from bench.workloads.camera_accounting import camera_summary, extraction_ms, match_triggers, split_cpu
from bench.workloads.camera_corpus import OCCUPIED_KINDS, camera_size, camera_video, offline_reference
from bench.workloads.inputs import flow_env, log_tail
from facemoment.runtime.loopback import free_port
from facemoment.runtime.summary import read_jsonl
from facemoment.runtime.trig_listener import TrigListener

DEFAULT_PRESET = "realtime,lean,park"
FOUR = ("rider", "rider_shifted", "empty", "empty")
LAYOUTS: Dict[str, Tuple[str, ...]] = {
    "1 camera 1920x1080": ("rider_1080",),
    "1 camera": ("rider",),
    # An empty camera's cost measured directly: the flow process with it alone.
    "1 empty camera": ("empty",),
    # ... and with two more: what each empty camera adds to a process, its fixed costs apart.
    "3 empty cameras": ("empty", "empty", "empty"),
    "2 cameras": ("rider", "empty"),
    "4 cameras": FOUR,
    "8 cameras": FOUR + FOUR,
}
QUICK_LAYOUTS = ("1 camera", "2 cameras")
CPU_PERIOD_S = 0.25
# The seed's loop runs on this many frames of each camera (5 s: the first trigger of each rider).
BASELINE_FRAMES = 150
# Each camera streams the sample's 12 s and one more second of its loop. A camera that
# stops sending has its last window closed by the idle flush (align.idle_flush_ms), so
# a moment decided on a stream's very last frame measures how a stream ends, not how
# a live camera runs; the sample's moments come every 2 s of cooldown, and the offline
# reference fires its last one on frame 359. With the extra second none falls on the
# last frame.
CAMERA_FRAMES = SAMPLE_FRAMES + 30


@dataclass
class Camera:
    stream: str
    kind: str
    video: Path


class _CpuSampler(threading.Thread):
    """Every CPU_PERIOD_S until the flow exits: the flow's CPU seconds, and what the
    machine's cores did beside the flow (with its children), its publishers, this process
    and interrupt handling (others), and the hypervisor's steal."""

    def __init__(self, pid: int, publishers: Sequence[int] = ()) -> None:
        super().__init__(name="bench-cpu", daemon=True)
        self.pid = pid
        self.publishers = list(publishers)
        self.samples: List[Tuple[int, float]] = []
        # (wall ns, others' CPU seconds, steal seconds), cumulative.
        self.machine: List[Tuple[int, float, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        last_seen = {pid: 0.0 for pid in self.publishers}  # a publisher that exited keeps its last value
        tree = 0.0
        while not self.stop.is_set():
            value = process_cpu_seconds(self.pid)
            if value is None:
                break
            # The flow's own children (clip encoders) are the run's too.
            tree = process_tree_cpu_seconds(self.pid) or tree
            for pid in self.publishers:
                seen = process_cpu_seconds(pid)
                if seen is not None:
                    last_seen[pid] = seen
            busy, interrupt, steal = cpu_jiffies()
            now = time.time_ns()
            self.samples.append((now, value))
            others = (busy - interrupt) / tick - tree - sum(last_seen.values()) - own_process_cpu_seconds()
            self.machine.append((now, others, steal / tick))
            self.stop.wait(CPU_PERIOD_S)

    def between(self, start_ns: int, end_ns: int) -> Optional[float]:
        inside = [(t, v) for t, v in self.samples if start_ns <= t <= end_ns]
        if len(inside) < 2:
            return None
        return inside[-1][1] - inside[0][1]

    def others(self, start_ns: int, end_ns: int) -> Optional[Dict[str, Any]]:
        """Cores used beside the run between two wall times: the mean, and the busiest second."""
        return others_load([m for m in self.machine if start_ns <= m[0] <= end_ns])


def others_load(samples: Sequence[Tuple[int, float, float]], window_ns: int = 1_000_000_000) -> Optional[Dict[str, Any]]:
    """From cumulative (wall ns, others' CPU s, steal s) samples: mean cores of others and of
    steal, and the busiest `window_ns` of others with the second of the stream it began in."""
    if len(samples) < 2:
        return None
    seconds = (samples[-1][0] - samples[0][0]) / 1e9
    busiest, at = 0.0, 0.0
    j = 0
    for t, cpu, _steal in samples:
        while j < len(samples) - 1 and samples[j][0] - t < window_ns:
            j += 1
        span = (samples[j][0] - t) / 1e9
        if span <= 0 or samples[j][0] - t < window_ns * 0.9:
            break
        cores = (samples[j][1] - cpu) / span
        if cores > busiest:
            busiest, at = cores, (t - samples[0][0]) / 1e9
    return {
        "mean_cores": rounded(max(0.0, (samples[-1][1] - samples[0][1]) / seconds), 3) if seconds > 0 else None,
        "steal_cores": rounded(max(0.0, (samples[-1][2] - samples[0][2]) / seconds), 3) if seconds > 0 else None,
        "busiest_second_cores": rounded(max(0.0, busiest), 3),
        "busiest_second_at_s": round(at, 2),
    }


def cameras_of(layout: Sequence[str], frames: int) -> List[Camera]:
    return [Camera(f"cam{i}", kind, camera_video(kind, frames)) for i, kind in enumerate(layout)]


def run_layout(name: str, cameras: Sequence[Camera], preset: str, work: Path, log: Progress,
               clips: bool = False) -> Dict[str, Any]:
    """One live run of `cameras` in one flow process; its raw outputs."""
    out_dir = work / name.replace(" ", "-")
    out_dir.mkdir(parents=True, exist_ok=True)
    addresses = [f"tcp://127.0.0.1:{free_port()}" for _ in cameras]
    trig_address = f"tcp://127.0.0.1:{free_port()}"
    env = flow_env({
        "FACEMOMENT_SOURCE": addresses[0],
        "FACEMOMENT__SOURCE__STREAM_ID": cameras[0].stream,
        "FACEMOMENT__SOURCE__EXTRA": ",".join(f"{c.stream}={a}" for c, a in zip(cameras[1:], addresses[1:])),
        "FACEMOMENT_IDLE_TIMEOUT_S": "2",
        "FACEMOMENT_PRESET": preset,
        "FACEMOMENT_TRIG_ADDRESS": trig_address,
        "FACEMOMENT_TRACE": "normal",
        "FACEMOMENT__OUTPUT__CLIPS": "true" if clips else "false",
        "FACEMOMENT_OUTPUT_DIR": str(out_dir),
    })
    if len(cameras) == 1:
        env.pop("FACEMOMENT__SOURCE__EXTRA")
    listener = TrigListener(trig_address)
    listener.start()
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    publishers = []
    results = [out_dir / f"publisher-{c.stream}.json" for c in cameras]
    for cam, address, result in zip(cameras, addresses, results):
        handle = open(logs / f"{out_dir.name}-{cam.stream}-publisher.log", "wb")
        publishers.append((subprocess.Popen(
            [sys.executable, "-m", "bench.workloads.camera_publisher", str(cam.video), address, str(result)],
            env=flow_env({}), cwd=REPO, stdout=handle, stderr=subprocess.STDOUT), handle))
    log_path = logs / f"{out_dir.name}.log"
    flow_log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "bytewax.run", "dataflows.facemoment"],
                            env=env, cwd=REPO, stdout=flow_log, stderr=subprocess.STDOUT)
    sampler = _CpuSampler(proc.pid, [pub.pid for pub, _ in publishers])
    sampler.start()
    log(f"cameras {name}: {len(cameras)} publishers and the flow started (preset {preset})")
    try:
        for pub, _ in publishers:
            if pub.wait(timeout=900) != 0:
                raise RuntimeError(f"cameras {name}: a publisher failed:\n{log_tail(log_path)}")
        code = proc.wait(timeout=300)
        if code != 0:
            raise RuntimeError(f"cameras {name}: the flow exited with {code}:\n{log_tail(log_path)}")
    finally:
        for pub, handle in publishers:
            if pub.poll() is None:
                pub.kill()
                pub.wait()
            handle.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        flow_log.close()
        sampler.stop.set()
        sampler.join(timeout=5)
        listener.close(timeout=10)
    sent = {c.stream: json.loads(r.read_text()) for c, r in zip(cameras, results)}
    start = min(p["send_wall_ns"][0] for p in sent.values())
    end = max(p["send_wall_ns"][-1] for p in sent.values())
    return {
        "out_dir": out_dir,
        "publishers": sent,
        "stream_seconds": (end - start) / 1e9,
        "cpu_s": sampler.between(start, end),
        # What other processes and the hypervisor took from the cores meanwhile.
        "others": sampler.others(start, end),
        "received": len(listener.received),
    }


def _clip_check(out_dir: Path, rows: Sequence[Mapping[str, Any]], size: Tuple[int, int]) -> Dict[str, Any]:
    """Every trigger's clip: its frame size and length against the trigger's span."""
    import cv2

    clips = sorted((out_dir / "clips").glob("*.mp4")) if (out_dir / "clips").exists() else []
    checked = []
    for path in clips:
        cap = cv2.VideoCapture(str(path))
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        count, fps = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), cap.get(cv2.CAP_PROP_FPS) or LIVE_FPS
        cap.release()
        checked.append({"file": path.name, "size": f"{width}x{height}", "seconds": round(count / fps, 2)})
    spans = sorted(round((int(r["t_end_ns"]) - int(r["t_start_ns"])) / 1e9, 2) for r in rows)
    full_size = all(c["size"] == f"{size[0]}x{size[1]}" for c in checked)
    # A clip is full length when it holds the trigger's span within a frame or two.
    lengths = sorted(c["seconds"] for c in checked)
    full_length = len(checked) == len(rows) and all(
        abs(a - b) <= 2.0 / LIVE_FPS + 0.01 for a, b in zip(lengths, spans))
    return {"clips": len(checked), "triggers": len(rows), "full_size": full_size and bool(checked),
            "full_length": full_length, "clip_seconds": lengths, "trigger_spans_s": spans, "files": checked[:10]}


def summarize_layout(name: str, cameras: Sequence[Camera], raw: Mapping[str, Any],
                     references: Mapping[str, List[Dict[str, Any]]], preset: str) -> Dict[str, Any]:
    out_dir: Path = raw["out_dir"]
    trace = read_jsonl(out_dir / "trace.jsonl")
    rows = read_jsonl(out_dir / "triggers.jsonl") if (out_dir / "triggers.jsonl").exists() else []
    per_camera: Dict[str, Any] = {}
    for cam in cameras:
        summary = camera_summary(trace, rows, cam.stream, references[cam.kind], raw["publishers"][cam.stream])
        summary["kind"] = cam.kind
        summary["occupied_kind"] = OCCUPIED_KINDS[cam.kind]
        per_camera[cam.stream] = summary
    # CPU per camera-second: the process's CPU while the cameras streamed, split per camera.
    cpu_s = raw["cpu_s"]
    seconds = raw["stream_seconds"] or 1.0
    work_ms = extraction_ms(trace)
    frames = {c.stream: per_camera[c.stream]["frames_sent"] for c in cameras}
    fixed = 0.0
    if cpu_s:
        fixed = min(1.0, max(0.0, 1.0 - (sum(work_ms.values()) / 1000.0) / cpu_s))
        split = split_cpu(cpu_s, work_ms, frames, fixed)
        for cam in cameras:
            per_camera[cam.stream]["cpu_cores"] = rounded(split[cam.stream] / seconds, 3)
    result = {
        "cameras": len(cameras),
        "preset": preset,
        "frame_size": "x".join(map(str, camera_size(cameras[0].kind))),
        "stream_seconds": round(seconds, 2),
        "process_cpu_cores": rounded(cpu_s / seconds, 3) if cpu_s else None,
        "fixed_share": round(fixed, 3),
        "trig_received": raw["received"],
        "others": raw.get("others"),
        "per_camera": per_camera,
    }
    if name.endswith("1920x1080"):
        result["clips"] = _clip_check(out_dir, rows, camera_size(cameras[0].kind))
    return result


def seed_baseline(cameras: Sequence[Camera], references: Mapping[str, List[Dict[str, Any]]],
                  log: Progress, frames_per_camera: int = BASELINE_FRAMES) -> Dict[str, Any]:
    """The seed's thread-pool loop on the 4-camera layout's frames, camera after camera, as fast as it goes.

    Each camera's first `frames_per_camera` frames (the loop runs at a few frames per
    second here, so all of them would take many minutes); its triggers are matched
    against the offline triggers that fired on those frames.
    """
    from bench.baselines import thread_pool_loop
    from bench.meters import own_process_cpu_seconds
    from bench.workloads.in_process import load_extractors
    from bench.workloads.inputs import decode_video
    from facemoment.core.config import Config

    cfg = Config()
    per_camera: Dict[str, Any] = {}
    total_frames = 0
    total_s = 0.0
    frames_of = {c.stream: decode_video(c.video, c.stream) for c in cameras}
    extractors = load_extractors(cfg, frames_of[cameras[0].stream][0])
    try:
        for cam in cameras:
            frames = frames_of[cam.stream][:frames_per_camera]
            cpu0 = own_process_cpu_seconds()
            result = thread_pool_loop(frames, extractors, cfg)
            cpu = own_process_cpu_seconds() - cpu0
            live = [{"reason": t.reason, "t_start_ns": t.t_start_ns, "t_end_ns": t.t_end_ns} for t in result.triggers]
            reference = [r for r in references[cam.kind] if int(r["frame_id"]) < len(frames)]
            match = match_triggers(reference, live)
            per_camera[cam.stream] = {"kind": cam.kind, "fps": round(result.fps, 2), "timeouts": result.timeouts,
                                      "triggers": match, "cpu_s_per_camera_s": round(cpu / (len(frames) / LIVE_FPS), 3)}
            total_frames += len(frames)
            total_s += result.seconds
            log(f"cameras seed thread-pool {cam.stream} ({cam.kind}): {result.fps:.1f} fps, "
                f"triggers matched {match['matched']}/{match['offline']}, extra {match['extra']}")
    finally:
        for extractor in extractors.values():
            extractor.close()
    fps = total_frames / total_s if total_s else 0.0
    return {
        "cameras": len(cameras),
        "frames_per_camera": frames_per_camera,
        "frames": total_frames,
        "seconds": round(total_s, 2),
        "fps": round(fps, 2),
        "needed_fps": LIVE_FPS * len(cameras),
        "cameras_kept_up": round(fps / LIVE_FPS, 2),
        "per_camera": per_camera,
        "method": f"the seed's ExtractorOrchestrator (ThreadPoolExecutor(4), as_completed(timeout=0.15)) over the first "
                  f"{frames_per_camera} frames of each camera in turn (triggers against the offline ones fired on them), unpaced: the frames it gets through per second against the "
                  f"{LIVE_FPS * len(cameras):.0f} fps the cameras send; a frame a camera sends while the loop is busy "
                  "with another is lost in a live setting",
    }


def measure_cameras(layouts: Sequence[str], preset: str, work: Path, log: Progress,
                    frames: int = CAMERA_FRAMES, baseline: bool = True, quiet_wait_s: float = 0.0) -> Dict[str, Any]:
    kinds = sorted({k for name in layouts for k in LAYOUTS[name]} | (set(FOUR) if baseline else set()))
    log(f"cameras: corpus {', '.join(kinds)} ({frames} frames each)")
    references = {k: offline_reference(camera_video(k, frames), log) for k in kinds}
    results: Dict[str, Any] = {"preset": preset, "frames_per_camera": frames, "layouts": {},
                               "references": {k: len(v) for k, v in references.items()}}
    for name in layouts:
        cams = cameras_of(LAYOUTS[name], frames)
        if quiet_wait_s > 0:
            # What the run before left behind (an offline run's files being written back...) settles first.
            wait_for_quiet(log, quiet_wait_s)
        raw = run_layout(name, cams, preset, work, log, clips=name.endswith("1920x1080"))
        summary = summarize_layout(name, cams, raw, references, preset)
        results["layouts"][name] = summary
        log(f"cameras {name}: process {summary['process_cpu_cores']} cores; " + "; ".join(
            f"{s}: complete {c['fused_complete']}/{c['frames_sent']}, shed {c['shed']}, "
            f"triggers {c['triggers']['matched']}/{c['triggers']['offline']} (+{c['triggers']['extra']}), "
            f"decision p99 {c['decision_p99_ms']} ms, cpu {c.get('cpu_cores')}"
            for s, c in summary["per_camera"].items()))
    one, two = results["layouts"].get("1 camera"), results["layouts"].get("2 cameras")
    if one and two and one.get("process_cpu_cores") is not None and two.get("process_cpu_cores") is not None:
        # The empty camera's cost measured directly: the rider alone, then the rider and an empty camera.
        results["empty_camera_by_difference_cores"] = rounded(two["process_cpu_cores"] - one["process_cpu_cores"], 3)
    alone = results["layouts"].get("1 empty camera")
    if alone and alone.get("process_cpu_cores") is not None:
        results["empty_camera_alone_cores"] = alone["process_cpu_cores"]
        three = results["layouts"].get("3 empty cameras")
        if three and three.get("process_cpu_cores") is not None:
            # What each empty camera adds to a process: no rider whose rates the budget changes.
            results["empty_camera_added_cores"] = rounded((three["process_cpu_cores"] - alone["process_cpu_cores"]) / 2, 3)
    if baseline:
        results["seed_thread_pool"] = seed_baseline(cameras_of(FOUR, frames), references, log)
    results["cpu_method"] = (
        "the flow process's CPU time (/proc utime+stime, sampled every 0.25 s) between the first camera's first frame "
        "and the last camera's last frame, split over the cameras: the share not explained by extractor processing "
        "time (fixed_share: reading, scaling, the motion check, Bytewax, alignment, fusion) by frames, the rest by each "
        "camera's summed frame_extract processing time; divided by the stream's seconds. The empty camera's cost is "
        "also measured directly: the flow process with one empty camera alone (everything it costs, Bytewax's loop "
        "included), and what each empty camera adds to a process (3 empty cameras minus 1, halved: the process's "
        "fixed costs apart); the 2-camera run (rider + empty) minus the 1-camera run (rider) is shown too, though "
        "the budget runs the rider at other rates in each.")
    return results
