"""FaceMoment as a Bytewax dataflow.

    python -m bytewax.run dataflows.facemoment          # configuration from the environment

Reads top to bottom like the architecture (docs/architecture.md): frames in (A),
per-frame extraction (B*), event-time alignment, fusion (C), TRIG timing, then TRIG
messages, triggers.jsonl, clips and the trace out. Each stage is one named step that
returns its items and its trace records; the records of all stages are merged once,
for the trace sink and the live status.

Sources only produce frames. The extract stage reads ahead: its `ReadAhead` wraps
each source, so the lanes start on a frame as soon as it is read, and the `extract`
step takes the results up. Both halves share the flow's one orchestrator.

Importing this module only builds `flow`. The run-time set-up (Ctrl-C handler, summary
at exit, metrics endpoint, sync view) happens when the flow starts running in a
process: `facemoment.runtime.startup.start`.
"""

from __future__ import annotations

import copy
import functools
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source

from connectors.frames_in import CameraSet, frames_in
from connectors.obs_source import ObsSource
from connectors.sources import StreamSpec, build_source, camera_shares, record_spec, stream_specs, whole_cameras
from dataflows.outputs import publish_obs, send_trig, write_clips, write_observations, write_trace, write_triggers
from facemoment.core.config import Config, ConfigError, obs_input
from facemoment.core.records import Record
from facemoment.core.streams import ItemsAndRecords
from facemoment.core.types import Extracted, Frame, Trigger
from facemoment.runtime import cluster, preflight, shutdown, startup
from operators.align import align
from operators.extraction.orchestrator import SharedOrchestrator, extract
from operators.extraction.read_ahead import ReadAhead
from operators.extraction.registry import check_backends
from operators.fusion_step import FusedFrameHook, fuse
from operators.trig_timing import time_triggers


@dataclass
class Taps:
    """Hooks into a running flow for the programs around it (the Python API, debug).

    `on_frame`: each frame as it is read; `on_fused`: each fused frame with its
    fusion state and its trigger (or None); `on_trigger`: each trigger as it fires.
    """

    on_frame: Optional[Callable[[Frame], None]] = None
    on_fused: Optional[FusedFrameHook] = None
    on_trigger: Optional[Callable[[Trigger], None]] = None


def build_flow(
    cfg: Config,
    start: bool = False,
    taps: Optional[Taps] = None,
    orchestrator: Optional[SharedOrchestrator] = None,
) -> Dataflow:
    """The whole pipeline for one configuration (tests and tools build it with theirs).

    `start=True`: the process's run-time set-up (`runtime.startup.start`) runs when
    the flow starts running, so `python -m bytewax.run` gets it without doing it at import.
    `orchestrator`: the extraction lanes to use (a benchmark warms them up first);
    by default the flow makes its own, loaded when its first source starts.
    """
    if cfg.source.obs_inputs:
        return build_fusion_flow(cfg, start)
    check_backends(cfg)  # missing model weights stop the start-up, not the stream
    taps = taps or Taps()
    flow = Dataflow("facemoment")
    specs = stream_specs(cfg)
    live = any(spec.is_live for spec in specs)
    cfg = _deadline_for(cfg, live)
    lanes = orchestrator or SharedOrchestrator(cfg, live=live)

    shares = camera_shares(specs, cfg)
    frames = frames_in("frames_in", flow, camera_inputs(specs, cfg, lanes), _on_start(cfg, start), count_frames=bool(cfg.output.metrics_port))
    extracted = extract("extract", frames.items, lanes)
    aligned = align("align", extracted.items, cfg, live, shares)
    fused = fuse("fuse", aligned.items, cfg, taps.on_fused)
    records = [frames.records, extracted.records, aligned.records, fused.records]
    if cfg.output.trig_address:
        # TRIG leaves when the stream reached the clip's end (live) or at the decision.
        timed = time_triggers("trig_timing", fused.items, extracted.items, cfg, live)
        send_trig("trig_out", timed.items, cfg)
        records.append(timed.records)
    write_triggers("triggers_out", fused.items, cfg, stills=bool(cfg.output.clips))
    if cfg.output.clips:
        recorded = record_in(specs, cfg, flow)
        if recorded is not None:
            records.append(recorded.records)
        write_clips("clips_out", fused.items, frames.items, cfg, specs, recorded.items if recorded is not None else None)
    if cfg.output.observations:
        write_observations("observations_out", extracted.items, cfg)
    if cfg.output.obs_address:
        publish_obs("obs_out", extracted.items, cfg)
    write_trace("trace_out", cfg, *records)

    if taps.on_frame is not None:
        op.inspect("tap_frames", frames.items, lambda _step, frame: taps.on_frame(frame))
    if taps.on_trigger is not None:
        op.inspect("tap_triggers", fused.items, lambda _step, kv: taps.on_trigger(kv[1]))
    return flow


def build_fusion_flow(cfg: Config, start: bool = False) -> Dataflow:
    """C alone: observations from remote extractors' OBS publishers, aligned and fused."""
    flow = Dataflow("facemoment")
    publishers: Dict[str, List[str]] = {}
    for entry in cfg.source.obs_inputs:
        stream_id, address = obs_input(entry, cfg.source.stream_id)
        publishers.setdefault(stream_id, []).append(address)
    hold_s = cfg.align.idle_flush_ms / 1000.0
    sources = {
        stream_id: ObsSource(
            stream_id, addresses, idle_timeout_s=cfg.source.idle_timeout_s, hold_s=hold_s, publishers=cfg.source.obs_publishers
        )
        for stream_id, addresses in publishers.items()
    }
    extracted = frames_in("obs_in", flow, sources, _on_start(cfg, start), kind="obs")
    aligned = align("align", extracted.items, cfg, True)
    fused = fuse("fuse", aligned.items, cfg)
    # Files named as sources can still be cut for clips; live streams have no frames here.
    clip_specs = [spec for spec in stream_specs(cfg) if not spec.is_live]
    _outputs(cfg, fused.items, extracted.items, [extracted.records, aligned.records, fused.records], True, clip_specs)
    return flow


def build_extract_flow(cfg: Config, start: bool = False) -> Dataflow:
    """B* alone (`facemoment extract`): frames in, extraction, every observation out as OBS."""
    check_backends(cfg)
    if not cfg.output.obs_address:
        raise ConfigError("extraction alone needs an OBS address (FACEMOMENT_OBS_ADDRESS)")
    flow = Dataflow("facemoment_extract")
    specs = stream_specs(cfg)
    lanes = SharedOrchestrator(cfg, live=any(spec.is_live for spec in specs))
    frames = frames_in("frames_in", flow, camera_inputs(specs, cfg, lanes), _on_start(cfg, start))
    extracted = extract("extract", frames.items, lanes)
    publish_obs("obs_out", extracted.items, cfg)
    write_trace("trace_out", cfg, frames.records, extracted.records)
    return flow


def build_observation_flow(cfg: Config, source: Source) -> Dataflow:
    """Observations straight in (scripted scenarios, recorded OBS): align, fuse, out."""
    flow = Dataflow("facemoment_observations")
    extracted = op.input("observations_in", flow, source)
    aligned = align("align", extracted, cfg)
    fused = fuse("fuse", aligned.items, cfg)
    _outputs(cfg, fused.items, extracted, [aligned.records, fused.records], False, [])
    return flow


def _outputs(
    cfg: Config,
    triggers: Stream[Tuple[str, Trigger]],
    extracted: Stream[Extracted],
    records: List[Stream[Record]],
    live: bool,
    clip_specs: List[StreamSpec],
) -> None:
    """The output stages of the flows that start from observations (no frames)."""
    if cfg.output.trig_address:
        timed = time_triggers("trig_timing", triggers, extracted, cfg, live)
        send_trig("trig_out", timed.items, cfg)
        records = records + [timed.records]
    write_triggers("triggers_out", triggers, cfg, stills=bool(cfg.output.clips and clip_specs))
    if cfg.output.clips and clip_specs:
        write_clips("clips_out", triggers, None, cfg, clip_specs)
    if cfg.output.observations:
        write_observations("observations_out", extracted, cfg)
    if cfg.output.obs_address:
        publish_obs("obs_out", extracted, cfg)
    write_trace("trace_out", cfg, *records)


def camera_inputs(specs: List[StreamSpec], cfg: Config, lanes: SharedOrchestrator) -> Dict[str, Source]:
    """The flow's frame inputs: one per camera, split into shares over the workers; or,
    with more cameras than workers, one input whose partitions are whole cameras, so
    Bytewax spreads the cameras over the workers (connectors/frames_in.py, CameraSet)."""
    sources = read_ahead(specs, cfg, lanes, camera_shares(specs, cfg))
    if whole_cameras(specs, cfg):
        return {"cameras": CameraSet(sources)}
    return sources


def record_in(specs: List[StreamSpec], cfg: Config, flow: Dataflow) -> Optional[ItemsAndRecords[Frame]]:
    """The full streams of the cameras analysed on a separate detect stream: their
    frames feed the live clips only (None when no camera has one)."""
    recorded = [spec for spec in specs if spec.record is not None]
    if not recorded:
        return None
    sources: Dict[str, Source] = {spec.stream_id: build_source(record_spec(spec), cfg, shares=1) for spec in recorded}
    if len(sources) > 1:
        # One input, so the full streams spread over the workers as whole cameras do
        # (the same sorted names: with every camera recorded, each beside its detect stream).
        sources = {"cameras": CameraSet(sources)}
    return frames_in("record_in", flow, sources, kind="record")


def read_ahead(
    specs: List[StreamSpec], cfg: Config, lanes: SharedOrchestrator, shares: Optional[Dict[str, int]] = None
) -> Dict[str, Source]:
    """Each stream's frame source, wrapped so that extraction starts as frames are read
    (`shares`: each stream's number of shares; default: `stream_shares`)."""
    sources: Dict[str, Source] = {}
    for spec in specs:
        # A live source buffers (and drops by its strategy) what extraction cannot take;
        # an unbounded buffer (buffer_frames 0, lossless) reads every frame ahead.
        if spec.is_live:
            depth = cfg.source.buffer_frames if cfg.source.buffer_frames > 0 else sys.maxsize
        else:
            depth = 8
        stop = shutdown.STOP if spec.rereads else None  # live sources watch it themselves
        width = cfg.extract.detect_width if spec.detect_width is None else spec.detect_width
        source = build_source(spec, cfg, None if shares is None else shares[spec.stream_id])
        sources[spec.stream_id] = ReadAhead(source, lanes, depth, stop, rereads=spec.rereads, detect_width=width)
    return sources


def _deadline_for(cfg: Config, live: bool) -> Config:
    if cfg.extract.deadline_ms and not live:
        # Files are read only as fast as extraction goes: nothing queues up, so a
        # deadline would only throw results away.
        cfg = copy.deepcopy(cfg)
        cfg.extract.deadline_ms = 0.0
    return cfg


def _on_start(cfg: Config, start: bool) -> Optional[Callable[[], Any]]:
    return functools.partial(startup.start, cfg) if start else None


def __getattr__(name: str) -> Dataflow:
    # `python -m bytewax.run dataflows.facemoment` looks up `flow`: the configured
    # flow is built then (a bad configuration is one line and exit 2), not when a test
    # or tool imports this module. Building it starts nothing; see runtime/startup.py.
    if name == "flow":
        value = globals()["flow"] = build_flow(preflight.startup_config(), start=True)
        if cluster.inside_bytewax_run():
            # bytewax.run looks `flow` up on its main thread, the one thread that can
            # install the draining Ctrl-C/SIGTERM handler; the workers run on other
            # threads when there are several (runtime/shutdown.py).
            shutdown.install_sigint_handler()
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
