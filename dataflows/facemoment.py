"""FaceMoment as a Bytewax dataflow.

    python -m bytewax.run dataflows.facemoment          # configuration from the environment

Reads top to bottom like the architecture: frames in (A), per-frame extraction (B*),
event-time alignment, fusion (C), then TRIG messages, triggers.jsonl, clips and the
trace out. Each stage returns its items and its trace records; the records of all
stages are merged once, for the trace sink and the live status.

Importing this module only builds `flow`. The run-time set-up (Ctrl-C handler, summary
at exit, metrics endpoint, sync view) happens when the flow starts running in a
process: `facemoment.runtime.startup.start`.
"""

from __future__ import annotations

import copy
import functools
import os
import socket
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source

from connectors.clips import ClipSink
from connectors.frames_in import frames_in
from connectors.obs_pub import ObsPubSink
from connectors.obs_source import ObsSource
from connectors.prefetch import PrefetchingSource
from connectors.sources import FINITE_KINDS, StreamSpec, build_source, stream_shares, stream_specs
from connectors.trace_sink import JsonlSink, TraceSink, observation_record
from connectors.trig_pub import SENDS_FILE, TrigPubSink
from connectors.triggers_jsonl import TriggersJsonlSink
from facemoment.core.config import Config, ConfigError, obs_input
from facemoment.core.records import Level, Record
from facemoment.core.types import Frame, Observation, Trigger
from facemoment.formats.frame_ring import encode_frame
from facemoment.runtime import cluster, preflight, shutdown, startup
from operators.align import FRAME_MARKER, align
from operators.extraction.orchestrator import extract, worker_orchestrator
from operators.extraction.registry import check_backends
from operators.fusion_step import fuse
from operators.trig_timing import time_triggers


def build_flow(cfg: Config, start: bool = False, on_trigger: Optional[Callable[[Trigger], None]] = None) -> Dataflow:
    """The whole pipeline for one configuration (tests build it with their own).

    `start=True`: the process's run-time set-up (`runtime.startup.start`) runs when
    the flow starts running, so `python -m bytewax.run` gets it without doing it at import.
    `on_trigger` is called with each trigger as it fires (the Python API's hook).
    """
    if cfg.source.obs_inputs:
        return build_fusion_flow(cfg, start)
    check_backends(cfg)  # missing model weights stop the start-up, not the stream
    flow = Dataflow("facemoment")
    specs = stream_specs(cfg)
    live = any(spec.is_live for spec in specs)
    if cfg.extract.deadline_ms and not live:
        # Files are read only as fast as extraction goes: nothing queues up, so a
        # deadline would only throw results away.
        cfg = copy.deepcopy(cfg)
        cfg.extract.deadline_ms = 0.0
    extraction = functools.partial(worker_orchestrator, cfg)
    sources = {spec.stream_id: _read_ahead(spec, build_source(spec, cfg), extraction) for spec in specs}

    frames = frames_in("frames_in", flow, sources, _on_start(cfg, start), count_frames=bool(cfg.output.metrics_port))
    observations = extract("extract", frames.items, cfg)
    inputs = {spec.stream_id: stream_shares(spec, cfg) for spec in specs}
    aligned = align("align", observations.items, cfg, live, inputs)
    fused = fuse("fuse", aligned.items, cfg)
    records = [frames.records, observations.records, aligned.records, fused.records]
    outputs(cfg, fused.items, observations.items, records, specs, frames.items, live)
    if on_trigger is not None:
        op.inspect("on_trigger", fused.items, lambda _step, kv: on_trigger(kv[1]))
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
        stream_id: ObsSource(stream_id, addresses, idle_timeout_s=cfg.source.idle_timeout_s, hold_s=hold_s)
        for stream_id, addresses in publishers.items()
    }
    observations = frames_in("obs_in", flow, sources, _on_start(cfg, start), kind="obs")
    aligned = align("align", observations.items, cfg, True)
    fused = fuse("fuse", aligned.items, cfg)
    # Files named as sources can still be cut for clips; live streams have no frames here.
    clip_specs = [spec for spec in stream_specs(cfg) if not spec.is_live]
    records = [observations.records, aligned.records, fused.records]
    outputs(cfg, fused.items, observations.items, records, clip_specs, None, live=True)
    return flow


def build_extract_flow(cfg: Config, start: bool = False) -> Dataflow:
    """B* alone (`facemoment extract`): frames in, extraction, every observation out as OBS."""
    check_backends(cfg)
    if not cfg.output.obs_address:
        raise ConfigError("extraction alone needs an OBS address (FACEMOMENT_OBS_ADDRESS)")
    flow = Dataflow("facemoment_extract")
    extraction = functools.partial(worker_orchestrator, cfg)
    sources = {spec.stream_id: _read_ahead(spec, build_source(spec, cfg), extraction) for spec in stream_specs(cfg)}
    frames = frames_in("frames_in", flow, sources, _on_start(cfg, start))
    observations = extract("extract", frames.items, cfg)
    obs_out(observations.items, cfg)
    trace_out(cfg, op.merge("records", frames.records, observations.records), Path(cfg.output.output_dir))
    return flow


def build_observation_flow(cfg: Config, source: Source) -> Dataflow:
    """Observations straight in (scripted scenarios, recorded OBS): align, fuse, out."""
    flow = Dataflow("facemoment_observations")
    observations = op.input("observations_in", flow, source)
    aligned = align("align", observations, cfg)
    fused = fuse("fuse", aligned.items, cfg)
    outputs(cfg, fused.items, observations, [aligned.records, fused.records])
    return flow


def _read_ahead(spec: StreamSpec, source: Source, extraction: Callable[[], object]) -> Source:
    """Extraction of a frame starts as soon as it is read, not when the dataflow takes it."""
    if spec.kind == "zmq":
        # Models load before subscribing, so a live stream's first frames are not dropped
        # while they load; accepted frames go to the extractors at once.
        source.before_connect = source.prefetcher = extraction  # type: ignore[attr-defined]
    elif spec.kind in FINITE_KINDS:
        source = PrefetchingSource(source, extraction, stop_event=shutdown.STOP)
    return source


def _on_start(cfg: Config, start: bool):
    return functools.partial(startup.start, cfg) if start else None


# --- out: TRIG, triggers.jsonl, clips, observations, OBS, trace ------------------
def outputs(
    cfg: Config,
    triggers: Stream[Tuple[str, Trigger]],
    observations: Stream[Observation],
    records: List[Stream[Record]],
    specs: Optional[List[StreamSpec]] = None,
    frames: Optional[Stream[Frame]] = None,
    live: bool = False,
) -> None:
    out_dir = Path(cfg.output.output_dir)
    keep = cfg.output.keep_existing
    if keep is None:
        keep = cluster.recovery_directory() is not None  # a resumed run continues its outputs
    if cfg.output.trig_address:
        # TRIG leaves when the stream reached the clip's end (live) or at the decision.
        timed = time_triggers("trig_timing", triggers, observations, cfg, live)
        records = records + [timed.records]
        ledger = out_dir / "trig_sent.keys" if keep else None
        sink = TrigPubSink(cfg.output.trig_address, cfg.output.trig_topic.encode(), ledger=ledger, sends=out_dir / SENDS_FILE)
        op.output("trig_pub", timed.items, sink)
    op.output("triggers_jsonl", triggers, TriggersJsonlSink(out_dir, keep_existing=keep, stills=bool(cfg.output.clips and specs)))
    if cfg.output.clips and specs:
        clip_items = [triggers]
        live_ids = {spec.stream_id for spec in specs if spec.is_live}
        if live_ids and frames is not None:
            # Live frames are kept (encoded) for clips; files are re-read instead.
            live_frames = op.filter("live_frames", frames, lambda f: f.stream_id in live_ids)
            encoded = op.map("encode", live_frames, functools.partial(encode_frame, quality=cfg.output.jpeg_quality))
            clip_items.append(op.key_on("key_encoded", encoded, lambda e: e.stream_id))
        op.output(
            "clips",
            op.merge("clip_items", *clip_items),
            ClipSink(
                out_dir,
                {s.stream_id: s.clip_descriptor() for s in specs},
                ring_buffer_sec=cfg.output.ring_buffer_sec,
                ring_buffer_max_mb=cfg.output.ring_buffer_max_mb,
                fps=cfg.source.fps or 30.0,
            ),
        )
    if cfg.output.observations:
        op.output(
            "observations_jsonl",
            op.key_on("key_observations", op.map("observation_records", observations, observation_record), lambda _r: "observations"),
            JsonlSink(out_dir / "observations.jsonl", keep=lambda r: r.source != FRAME_MARKER),
        )
    if cfg.output.obs_address:
        obs_out(observations, cfg)
    trace_out(cfg, op.merge("records", *records), out_dir)


def obs_out(observations: Stream[Observation], cfg: Config) -> None:
    """Every observation as OBS text on a ZMQ PUB, for fusion elsewhere."""
    publisher = cfg.output.obs_publisher or f"{socket.gethostname()}-{os.getpid()}"
    sink = ObsPubSink(cfg.output.obs_address or "", cfg.output.trig_topic.encode(), publisher, cfg.output.obs_subscriber_wait_s)
    op.output("obs_pub", op.key_on("key_obs_pub", observations, lambda _o: "obs"), sink)


def trace_out(cfg: Config, records: Stream[Record], out_dir: Path) -> None:
    """The live status (metrics, sync view) and trace.jsonl, from every stage's records."""
    if cfg.output.metrics_port or cfg.output.sync_view:
        op.inspect("live_status", records, startup.live_status)
    if Level.parse(cfg.output.trace) > Level.OFF:
        trace_path = Path(cfg.output.trace_path) if cfg.output.trace_path else out_dir / "trace.jsonl"
        op.output("trace", op.key_on("key_trace", records, lambda _r: "trace"), TraceSink(trace_path, cfg.output.trace))


def __getattr__(name: str) -> Dataflow:
    # `python -m bytewax.run dataflows.facemoment` looks up `flow`: the configured
    # flow is built then (a bad configuration is one line and exit 2), not when a test
    # or tool imports this module. Building it starts nothing; see runtime/startup.py.
    if name == "flow":
        value = globals()["flow"] = build_flow(preflight.startup_config(), start=True)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
