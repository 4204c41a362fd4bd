"""CPU per frame per extractor, before and after the settings that cut it.

Four settings on the same frames: MediaPipe's default executor threads (one per core,
as before `extract.graph_threads`), one thread per graph (the default now), the
`lean` preset's declared rates (pose on even frames, hands on odd ones), and those
rates with the cascade (pose and hands only where face found someone). CPU time is the
process's (all threads), so it counts MediaPipe's own threads and not other
processes; a rated extractor's per-frame figure is amortised over every frame.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Sequence, Tuple

from bench.plan import Progress
from facemoment.core.config import KNOWN_EXTRACTORS, PRESETS, Config
from facemoment.core.config.rates import extractor_rates, is_due
from facemoment.core.types import Frame
from operators.extraction.orchestrator import CASCADED, found_nobody

LEAN = list(PRESETS["lean"]["extract"]["every"])
# (label, extract.graph_threads, extract.every, extract.cascade)
SETTINGS: Tuple[Tuple[str, int, List[str], bool], ...] = (
    ("before: MediaPipe's default threads", 0, [], False),
    ("one thread per graph", 1, [], False),
    ("lean: pose on even frames, hands on odd ones", 1, LEAN, False),
    ("lean + cascade: pose and hands only where face found someone", 1, LEAN, True),
)


def _config(threads: int, every: List[str], cascade: bool = False) -> Config:
    cfg = Config()
    cfg.extract.graph_threads = threads
    cfg.extract.every = list(every)
    cfg.extract.cascade = cascade
    cfg.extract.deadline_ms = 0.0
    cfg.output.trace = "off"
    return cfg


def _per_extractor(cfg: Config, frames: Sequence[Frame]) -> Dict[str, float]:
    """CPU ms per frame of each extractor alone, one thread, amortised over all frames."""
    from operators.extraction.registry import build_extractor

    rates = extractor_rates(cfg.extract)
    out: Dict[str, float] = {}
    nobody: set = set()  # frames where face found no one (face runs first)
    for name in KNOWN_EXTRACTORS:
        extractor = build_extractor(name, cfg)
        try:
            getattr(extractor, "load", lambda: None)()
            extractor.extract(frames[0])  # first-call costs are not per-frame costs
            started = time.process_time()
            for frame in frames:
                if cfg.extract.cascade and name in CASCADED and frame.frame_id in nobody:
                    continue
                if is_due(frame.frame_id, rates.get(name)):
                    obs = extractor.extract(frame)
                    if name == "face" and found_nobody(obs):
                        nobody.add(frame.frame_id)
            out[name] = round((time.process_time() - started) * 1000.0 / len(frames), 2)
        finally:
            extractor.close()
    return out


def _pipelined(cfg: Config, frames: Sequence[Frame]) -> Dict[str, float]:
    """All extractors on their lanes (the orchestrator, no Bytewax): CPU per frame and fps."""
    from operators.extraction.orchestrator import Orchestrator

    orchestrator = Orchestrator(cfg)
    try:
        orchestrator.run(list(frames[:2]))
        wall, cpu = time.perf_counter(), time.process_time()
        for start in range(0, len(frames), 4):
            orchestrator.run(list(frames[start:start + 4]))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        orchestrator.close()
    return {"cpu_ms_per_frame": round(cpu * 1000.0 / len(frames), 2), "fps": round(len(frames) / wall, 2)}


def measure_extraction_cpu(frames: Sequence[Frame], log: Progress) -> Dict[str, Any]:
    """Every setting on the same consecutive frames (rates need consecutive frame ids)."""
    frames = [Frame(f.stream_id, index, f.t_src_ns, f.image) for index, f in enumerate(frames)]
    rows = []
    for label, threads, every, cascade in SETTINGS:
        cfg = _config(threads, every, cascade)
        row = {"setting": label, "graph_threads": threads, "every": every, "cascade": cascade,
               "per_extractor_ms": _per_extractor(cfg, frames), **_pipelined(cfg, frames)}
        row["sum_ms"] = round(sum(row["per_extractor_ms"].values()), 2)
        rows.append(row)
        log(f"extraction CPU, {label}: {row['per_extractor_ms']} (sum {row['sum_ms']} ms), "
            f"pipelined {row['cpu_ms_per_frame']} ms/frame, {row['fps']} fps")
    return {"frames": len(frames), "settings": rows}


def render(section: Dict[str, Any]) -> List[str]:
    lines = [f"## 8. CPU per frame per extractor, before and after ({section['frames']} frames, 640x480)", ""]
    lines.append("| setting | " + " | ".join(KNOWN_EXTRACTORS) + " | sum (one thread) | all lanes, CPU ms/frame | all lanes, fps |")
    lines.append("|---" * (len(KNOWN_EXTRACTORS) + 4) + "|")
    for row in section["settings"]:
        cells = [row["per_extractor_ms"].get(name) for name in KNOWN_EXTRACTORS]
        lines.append(f"| {row['setting']} | " + " | ".join(str(c) for c in cells)
                     + f" | {row['sum_ms']} | {row['cpu_ms_per_frame']} | {row['fps']} |")
    lines += [
        "",
        "- CPU time of this process (all its threads) per frame; a rated extractor's cost is spread over every "
        "frame. What each setting can change in what fires: docs/algorithms.md, \"Less work per frame\"; "
        "tests/test_rates.py counts it.",
        "",
    ]
    return lines
