"""1. the extractors alone, 2. the dataflow on 1 worker and 4. the seed's loops, taking turns in this process."""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from bench.meters import own_process_cpu_seconds, percentile, rounded, spread
from bench.plan import Progress
from bench.workloads.inputs import Inputs
from facemoment.core.config import KNOWN_EXTRACTORS, Config, load_config
from facemoment.core.types import Frame
from facemoment.runtime.summary import read_jsonl


def load_extractors(cfg: Config, warm_frame: Frame) -> Dict[str, Any]:
    """One loaded instance per extractor, each run once so first-call costs are paid."""
    from facemoment.tools.costs import warm_up
    from operators.extraction.registry import build_extractor

    extractors = {}
    for name in KNOWN_EXTRACTORS:
        extractor = build_extractor(name, cfg)
        warm_up(extractor, warm_frame)
        extractors[name] = extractor
    return extractors


def sequential_costs(frames: Sequence[Frame], extractors: Mapping[str, Any], log: Progress) -> Dict[str, Any]:
    """Each extractor on its own over all frames, one thread: per-frame cost in ms."""
    from facemoment.tools.costs import frame_costs_ms

    per_extractor: Dict[str, Any] = {}
    for name, extractor in extractors.items():
        costs = frame_costs_ms(name, extractor, frames)
        per_extractor[name] = {
            "mean_ms": round(statistics.fmean(costs), 2),
            "median_ms": round(statistics.median(costs), 2),
            "p90_ms": rounded(percentile(costs, 90)),
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
    cpu_before = own_process_cpu_seconds()
    start = time.perf_counter()
    go.set()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    return {"seconds": wall, "lanes": busy, "cores_used": (own_process_cpu_seconds() - cpu_before) / wall}


# The file runs: full fidelity (every extractor on every frame) and the fast path
# (lean's declared rates, still no deadline, so nothing is shed).
FULL_FIDELITY = "batch"
FAST_PATH = "batch,lean"


def batch_config(video: Path, out_dir: Path, preset: str = FULL_FIDELITY) -> Config:
    """The dataflow's configuration for the file runs: batch preset, trace, clips and TRIG off."""
    return load_config(
        {
            "FACEMOMENT_SOURCE": str(video),
            "FACEMOMENT_PRESET": preset,
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


def dataflow_once(module: Any, inputs: Inputs, out_dir: Path, preset: str = FULL_FIDELITY) -> Dict[str, Any]:
    """The dataflow on 1 worker, in this process with `bytewax.testing.run_main`.

    The process's extraction orchestrator (one lane per extractor, models loaded)
    is built and run once on one frame before the clock starts, as the flow's first
    batch would build it; the timed span is `run_main` from start to end: reading
    and decoding the file, extraction, alignment, fusion and the outputs.
    """
    from bytewax.testing import run_main

    from operators.extraction.orchestrator import SharedOrchestrator

    cfg = batch_config(inputs.video, out_dir, preset)
    lanes = SharedOrchestrator(cfg)
    flow = module.build_flow(cfg, orchestrator=lanes)
    orchestrator = lanes.acquire()  # held until the timed run is over, so its lanes stay up
    orchestrator.run([inputs.frames[0]])
    cpu_before = own_process_cpu_seconds()
    start = time.perf_counter()
    run_main(flow)
    seconds = time.perf_counter() - start
    cores_used = (own_process_cpu_seconds() - cpu_before) / seconds
    lanes.release()
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
    import dataflows.facemoment as module  # builds nothing and starts nothing at import

    cfg = Config()
    bare_runs: List[Dict[str, Any]] = []
    flow_runs: List[Dict[str, Any]] = []
    fast_runs: List[Dict[str, Any]] = []
    loops: Dict[str, List[Any]] = {"sequential_loop": [], "thread_pool_loop": []}
    for rep in range(repeats):
        bare_runs.append(pipelined_once(frames, extractors))
        flow_runs.append(dataflow_once(module, inputs, work / f"dataflow-1w-{rep}"))
        fast_runs.append(dataflow_once(module, inputs, work / f"dataflow-lean-1w-{rep}", FAST_PATH))
        for loop in (sequential_loop, thread_pool_loop):
            loops[loop.__name__].append(loop(frames, extractors, cfg))
        log(f"run {rep + 1}/{repeats}: bare pipelined {count / bare_runs[-1]['seconds']:.2f} fps "
            f"({bare_runs[-1]['cores_used']:.2f} cores), dataflow {count / flow_runs[-1]['seconds']:.2f} fps "
            f"({flow_runs[-1]['cores_used']:.2f} cores), lean {count / fast_runs[-1]['seconds']:.2f} fps, "
            f"sequential loop {loops['sequential_loop'][-1].fps:.2f} fps, "
            f"thread pool {loops['thread_pool_loop'][-1].fps:.2f} fps")
    bare_s = spread([r["seconds"] for r in bare_runs])
    flow_s = spread([r["seconds"] for r in flow_runs])
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
        "fast_path": _fast_path(fast_runs, count, keys[0]),
    }
    baselines: Dict[str, Any] = {}
    for name, results in loops.items():
        middle_run = sorted(results, key=lambda r: r.seconds)[len(results) // 2]
        entry = middle_run.as_dict()
        entry["runs_s"] = [round(r.seconds, 3) for r in results]
        entry["dataflow_speedup"] = round(dataflow["fps"] / middle_run.fps, 3) if middle_run.fps else None
        loop_keys = sorted(t.key for t in middle_run.triggers)
        entry["same_triggers_as_dataflow"] = loop_keys == dataflow["trigger_keys"]
        fast = dataflow["fast_path"]
        entry["fast_path_speedup"] = round(fast["fps"] / middle_run.fps, 3) if middle_run.fps else None
        entry["same_triggers_as_fast_path"] = loop_keys == fast["trigger_keys"]
        baselines[name] = entry
    log(f"bare: sequential {bare['sequential_fps']} fps (sum {bare['sum_mean_ms']} ms/frame); "
        f"pipelined {bare['pipelined_fps']} fps")
    log(f"dataflow 1 worker: {dataflow['fps']} fps, overhead ratio {dataflow['overhead_ratio']} "
        f"(runs {dataflow['overhead_ratio_runs']}); decode alone {decode['ms_per_frame']} ms/frame")
    log(f"dataflow 1 worker, lean: {dataflow['fast_path']['fps']} fps")
    for name, entry in baselines.items():
        log(f"baseline {name}: {entry['fps']} fps; the dataflow is {entry['dataflow_speedup']}x, "
            f"lean {entry['fast_path_speedup']}x (same triggers: {entry['same_triggers_as_fast_path']})")
    return bare, dataflow, baselines


def _fast_path(runs: List[Dict[str, Any]], count: int, full_fidelity_keys: List[str]) -> Dict[str, Any]:
    """The dataflow with the fast path's declared rates, on the same file, taking the same turns."""
    seconds = spread([r["seconds"] for r in runs])
    keys = [r["trigger_keys"] for r in runs]
    return {
        "preset": FAST_PATH,
        "every": list(load_config({"FACEMOMENT_PRESET": FAST_PATH}).extract.every),
        "seconds": seconds["median"],
        "runs_s": seconds["runs"],
        "fps": round(count / seconds["median"], 2),
        "cores_used": round(statistics.median(r["cores_used"] for r in runs), 2),
        "triggers": len(keys[0]),
        "trigger_keys": keys[0],
        "same_triggers_every_run": all(k == keys[0] for k in keys),
        "same_triggers_as_full_fidelity": keys[0] == full_fidelity_keys,
    }
