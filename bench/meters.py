"""Meters: CPU (the machine's, this process's, another process's), RSS, load, the machine's description, and small statistics helpers."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from bench.plan import FOREIGN_LOAD_NOTE, RSS_WARMUP_S, Progress


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


def rounded(value: Optional[float], digits: int = 2) -> Optional[float]:
    return None if value is None else round(float(value), digits)


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
        "slope_mb_per_min": rounded(_slope_per_minute(samples), 2),
        "warmup_s": warmup_s,
        "slope_after_warmup_mb_per_min": rounded(_slope_per_minute(settled), 2),
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


def cpu_jiffies() -> Tuple[int, int, int]:
    """(busy, interrupt, steal) jiffies of all cores since boot, from /proc/stat's first line;
    busy counts irq and softirq, interrupt is those two alone (a loopback stream's packets
    are handled there)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields] + [0] * 8
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return user + nice + system + irq + softirq, irq + softirq, steal


def system_cpu_jiffies() -> Tuple[int, int]:
    """(busy, steal) jiffies of all cores since boot (see cpu_jiffies)."""
    busy, _interrupt, steal = cpu_jiffies()
    return busy, steal


def process_tree_cpu_seconds(pid: int) -> Optional[float]:
    """CPU seconds of a live process, its children already waited for and its live descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: Dict[int, int] = {}
    cpu: Dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        fields = text[text.rindex(")") + 2:].split()
        parents[int(entry.name)] = int(fields[1])
        cpu[int(entry.name)] = sum(int(v) for v in fields[11:15]) / tick
    if pid not in cpu:
        return None
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        total += cpu.get(current, 0.0)
        stack.extend(child for child, parent in parents.items() if parent == current)
    return total


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


def own_process_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def spread(values: Sequence[float]) -> Dict[str, Any]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "runs": [round(v, 3) for v in values]}


def process_cpu_seconds(pid: int) -> Optional[float]:
    """utime + stime of a live process (all its threads), from /proc/<pid>/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
