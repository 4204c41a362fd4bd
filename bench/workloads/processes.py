"""3. `python -m bytewax.run dataflows.facemoment` as 1 process, 1 process with 2 workers and 2 processes."""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from bench.meters import process_cpu_seconds, rounded, spread
from bench.plan import PROCESS_TIMEOUT_S, REPO, Progress
from bench.workloads.inputs import Inputs, flow_env, log_tail
from facemoment.runtime import readiness
from facemoment.runtime.loopback import free_port


@dataclass
class ProcessRun:
    seconds: float  # from the first process's models being ready to the last exit
    returncodes: List[int]
    logs: List[Path] = field(default_factory=list)
    cores_used: Optional[float] = None  # over the same span
    ready_spread_s: float = 0.0  # between the first and the last process's models being ready


def ready_times(template: str) -> Dict[int, int]:
    """pid -> wall-clock ns at which that process's models were ready, from the
    ready files the flow processes write (`output.ready_file`, one per process)."""
    ready: Dict[int, int] = {}
    for info in readiness.read_ready_files(template):
        ready.setdefault(info["pid"], info["wall_ns"])
    return ready


def run_flow_processes(
    commands: Sequence[Sequence[str]], env: Mapping[str, str], log_dir: Path, tag: str
) -> ProcessRun:
    """Start every command at once and wait for all; time from the first process's
    models being ready to the last exit, and the cores the processes kept busy meanwhile."""
    log_dir.mkdir(parents=True, exist_ok=True)
    ready_dir = log_dir / f"{tag}.ready"
    ready_dir.mkdir(parents=True, exist_ok=True)
    for stale in ready_dir.iterdir():
        stale.unlink()
    template = str(ready_dir / "ready-{pid}.json")
    run_env = dict(env)
    run_env[readiness.ENV_NAME] = template
    procs: List[Tuple[subprocess.Popen, Any]] = []
    logs = []
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    children_before = children.ru_utime + children.ru_stime
    cpu_at_ready: Optional[float] = None
    deadline = time.monotonic() + PROCESS_TIMEOUT_S
    codes: List[int] = []
    try:
        for i, cmd in enumerate(commands):
            path = log_dir / f"{tag}-{i}.log"
            handle = open(path, "wb")
            logs.append(path)
            procs.append((subprocess.Popen(list(cmd), env=run_env, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT), handle))
        # Sample the processes' CPU as soon as the first one has its models ready.
        first = readiness.wait_ready(template, count=1, timeout_s=PROCESS_TIMEOUT_S,
                                     alive=lambda: any(p.poll() is None for p, _ in procs))
        if first:
            cpu_at_ready = sum(process_cpu_seconds(p.pid) or 0.0 for p, _ in procs)
        codes = [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p, _ in procs]
        end_ns = time.time_ns()
    finally:
        for proc, handle in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            handle.close()
    ready = ready_times(template)
    if len(ready) < len(commands):
        return ProcessRun(0.0, codes or [-1], logs)
    start_ns = min(ready.values())
    seconds = (end_ns - start_ns) / 1e9
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cores = None
    if cpu_at_ready is not None and seconds > 0:
        cores = (children.ru_utime + children.ru_stime - children_before - cpu_at_ready) / seconds
    return ProcessRun(seconds, codes, logs, rounded(cores), (max(ready.values()) - start_ns) / 1e9)


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

    The timed span starts when the first process has its models loaded and warmed
    (the `wall_ns` of its ready file, `FACEMOMENT_READY_FILE`) and ends when the last
    process has exited; imports,
    model loading and cluster set-up are outside it. Layouts take turns `repeats`
    times; the figures are medians.
    """
    frames = len(inputs.frames)
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
            run = run_flow_processes(_flow_commands(layout), env, work / "logs", tag)
            if any(run.returncodes) or run.seconds <= 0:
                raise RuntimeError(f"{layout} exited with {run.returncodes}:\n" + "\n".join(log_tail(p) for p in run.logs))
            runs[layout].append(run)
            log(f"processes: {layout}: {frames / run.seconds:.2f} fps, {run.cores_used} cores "
                f"(run {rep + 1}/{repeats}, models ready {run.ready_spread_s:.2f} s apart)")
    layouts: Dict[str, Any] = {}
    for layout, items in runs.items():
        times = spread([r.seconds for r in items])
        layouts[layout] = {
            "processes": len(items[0].returncodes),
            "seconds": times["median"],
            "runs_s": times["runs"],
            "fps": round(frames / times["median"], 2),
            "cores_used": rounded(statistics.median([r.cores_used for r in items if r.cores_used is not None] or [0.0])),
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
