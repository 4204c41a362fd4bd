"""FaceMoment as a Bytewax dataflow.

    python -m bytewax.run dataflows.facemoment          # configuration from the environment

Reads top to bottom like the architecture: frames in (A), per-frame extraction (B*),
event-time alignment, fusion (C), then TRIG messages, triggers.jsonl, clips and the
trace out.
"""

from __future__ import annotations

import atexit
import copy
import functools
import logging
import os
import socket
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.operators.windowing import collect_window

from connectors.clips import ClipSink
from connectors.obs_pub import ObsPubSink
from connectors.obs_source import ObsSource
from connectors.sources import StreamSpec, build_source, stream_shares, stream_specs
from connectors.trig_pub import SENDS_FILE, TrigPubSink
from connectors.triggers_jsonl import TriggersJsonlSink
from facemoment.runtime import cluster, exit_status, memory, metrics, native_logs, preflight, shutdown
from facemoment.core.config import Config, ConfigError, extractor_rates, obs_input
from facemoment.core.records import as_dict
from facemoment.runtime.summary import print_summary_at_exit
from facemoment.runtime.sync_view import SyncView
from connectors.trace_sink import JsonlSink, TraceSink, observation_record
from facemoment.core.types import Frame, FrameObservations, Observation, TraceRecord, Trigger
from facemoment.formats.frame_ring import encode_frame
from operators.align import FRAME_MARKER, FrameGrouper, late_record, make_clock, make_windower
from operators.extraction.registry import check_backends
from operators.extraction.orchestrator import extract_batch, worker_orchestrator
from operators.fusion_step import Fuser
from operators.trig_timing import TrigTimer, resolve_timing

log = logging.getLogger("facemoment")


def _is_frame(item: Union[Frame, TraceRecord]) -> bool:
    return isinstance(item, Frame)


def _is_trigger(item: Union[Trigger, TraceRecord]) -> bool:
    return isinstance(item, Trigger)


def _unkey(kv: Tuple[str, TraceRecord]) -> TraceRecord:
    return kv[1]


def _live_status(view: Optional[SyncView], _step_id: str, record: TraceRecord) -> None:
    metrics.observe_record(record)
    if view is not None:
        view.feed((record,))


def build_flow(
    cfg: Config, sync_view: Optional[SyncView] = None, on_trigger: Optional[Callable[[Trigger], None]] = None
) -> Dataflow:
    """The whole pipeline for one configuration (tests build it with their own).

    `on_trigger` is called with each trigger as it fires (the Python API's hook).
    """
    if not cfg.source.obs_inputs:  # fusion alone loads no model
        check_backends(cfg)  # missing model weights stop the start-up, not the stream
    flow = Dataflow("facemoment")
    specs = stream_specs(cfg)
    if cfg.extract.deadline_ms and not any(spec.is_live for spec in specs):
        # Files are read only as fast as extraction goes: nothing queues up, so a
        # deadline would only throw results away.
        cfg = copy.deepcopy(cfg)
        cfg.extract.deadline_ms = 0.0
    records: List[Stream[TraceRecord]] = []

    if cfg.source.obs_inputs:
        # Extractors run elsewhere (`facemoment extract`): observations come as OBS.
        observations = observations_in(flow, cfg, records)
        triggers = align_and_fuse(observations, cfg, records, live=True)
        clip_specs = [spec for spec in specs if not spec.is_live]  # no frames here for a ring buffer
        outputs(triggers, observations, cfg, records, clip_specs, None, sync_view, live=True)
        return flow
    frames_by_stream = frames_in(flow, specs, cfg, records)
    frames = op.merge("frames", *frames_by_stream.values())
    observations = extract(frames, cfg, records)
    live = any(spec.is_live for spec in specs)
    inputs = {spec.stream_id: stream_shares(spec, cfg) for spec in specs}
    triggers = align_and_fuse(observations, cfg, records, live=live, inputs=inputs)
    outputs(triggers, observations, cfg, records, specs, frames_by_stream, sync_view, live)
    if on_trigger is not None:
        op.inspect("on_trigger", triggers, lambda _step, kv: on_trigger(kv[1]))
    return flow


def build_extract_flow(cfg: Config) -> Dataflow:
    """The remote B*: frames in, extraction, every observation out as OBS (no fusion)."""
    check_backends(cfg)
    if not cfg.output.obs_address:
        raise ConfigError("extraction alone needs an OBS address (FACEMOMENT_OBS_ADDRESS)")
    flow = Dataflow("facemoment_extract")
    records: List[Stream[TraceRecord]] = []
    frames_by_stream = frames_in(flow, stream_specs(cfg), cfg, records)
    observations = extract(op.merge("frames", *frames_by_stream.values()), cfg, records)
    obs_out(observations, cfg)
    trace_out(records, cfg, Path(cfg.output.output_dir))
    return flow


# --- OBS in (from remote extractors) and out (to remote fusion) ------------------
def observations_in(flow: Dataflow, cfg: Config, records: List[Stream[TraceRecord]]) -> Stream[Observation]:
    addresses: Dict[str, List[str]] = {}
    for entry in cfg.source.obs_inputs:
        stream_id, address = obs_input(entry, cfg.source.stream_id)
        addresses.setdefault(stream_id, []).append(address)
    streams = []
    for stream_id, publishers in addresses.items():
        hold_s = cfg.align.idle_flush_ms / 1000.0
        source = ObsSource(stream_id, publishers, idle_timeout_s=cfg.source.idle_timeout_s, hold_s=hold_s)
        items = op.input(f"obs_{stream_id}", flow, source)
        split = op.branch(f"split_obs_{stream_id}", items, lambda x: isinstance(x, Observation))
        records.append(split.falses)
        streams.append(split.trues)
    return op.merge("observations", *streams)


def obs_out(observations: Stream[Observation], cfg: Config) -> None:
    publisher = cfg.output.obs_publisher or f"{socket.gethostname()}-{os.getpid()}"
    topic = cfg.output.trig_topic.encode()
    sink = ObsPubSink(cfg.output.obs_address or "", topic, publisher, cfg.output.obs_subscriber_wait_s)
    op.output("obs_pub", op.key_on("key_obs_pub", observations, lambda _o: "obs"), sink)


def build_observation_flow(cfg: Config, source: Source) -> Dataflow:
    """Observations straight in (scripted scenarios, recorded OBS): align, fuse, out."""
    flow = Dataflow("facemoment_observations")
    records: List[Stream[TraceRecord]] = []
    observations = op.input("observations_in", flow, source)
    triggers = align_and_fuse(observations, cfg, records)
    outputs(triggers, observations, cfg, records)
    return flow


# --- A: frames in, one input per stream -----------------------------------------
def frames_in(
    flow: Dataflow, specs: List[StreamSpec], cfg: Config, records: List[Stream[TraceRecord]]
) -> Dict[str, Stream[Frame]]:
    frames_by_stream: Dict[str, Stream[Frame]] = {}
    for spec in specs:
        items = op.input(f"frames_{spec.stream_id}", flow, build_source(spec, cfg, functools.partial(worker_orchestrator, cfg)))
        split = op.branch(f"split_source_{spec.stream_id}", items, _is_frame)
        frames_by_stream[spec.stream_id] = split.trues
        records.append(split.falses)
        if cfg.output.metrics_port:
            op.inspect(f"metrics_in_{spec.stream_id}", split.trues, lambda _s, f: metrics.frame_in(f.stream_id))
    return frames_by_stream


# --- B*: stateless per-frame extraction, extractors in parallel, with a deadline --
def extract(frames: Stream[Frame], cfg: Config, records: List[Stream[TraceRecord]]) -> Stream[Observation]:
    extracted = op.flat_map_batch("extract", frames, functools.partial(extract_batch, cfg))
    split = op.branch("split_extracted", extracted, lambda x: isinstance(x, Observation))
    records.append(split.falses)
    return split.trues


# --- align by event time, then C: fusion with temporal state keyed per stream ---
def align_and_fuse(
    observations: Stream[Observation],
    cfg: Config,
    records: List[Stream[TraceRecord]],
    live: bool = True,
    inputs: Optional[Dict[str, int]] = None,
) -> Stream[Tuple[str, Trigger]]:
    by_stream = op.key_on("key_stream", observations, lambda obs: obs.stream_id)
    windows = collect_window(
        "align",
        by_stream,
        make_clock(cfg.align.allowed_lateness_ms, live, cfg.align.idle_flush_ms, inputs),
        make_windower(cfg.align.window_ms),
    )
    grouped = op.flat_map_value(
        "group_frames",
        windows.down,
        FrameGrouper(cfg.extract.extractors, cfg.align.window_ms, cfg.output.trace, extractor_rates(cfg.extract)),
    )
    aligned = op.branch("split_aligned", grouped, lambda kv: isinstance(kv[1], FrameObservations))
    records.append(op.map("unkey_grouped", aligned.falses, _unkey))
    records.append(op.map("late_obs", windows.late, lambda kv: late_record(kv[1], cfg.align.window_ms)))

    fused = op.stateful_flat_map("fuse", aligned.trues, Fuser(cfg))
    decided = op.branch("split_fused", fused, lambda kv: _is_trigger(kv[1]))
    records.append(op.map("unkey_fused", decided.falses, _unkey))
    return decided.trues


# --- TRIG timing: at the decision, or once the stream reached the clip's end -----
def timed_triggers(
    triggers: Stream[Tuple[str, Trigger]],
    observations: Stream[Observation],
    cfg: Config,
    records: List[Stream[TraceRecord]],
    live: bool,
) -> Stream[Tuple[str, Trigger]]:
    timing = resolve_timing(cfg.output.trig_timing, live)
    idle_s = cfg.source.idle_timeout_s or cfg.fusion.post_sec + cfg.align.idle_flush_ms / 1000.0
    markers = op.filter("frame_markers", observations, lambda obs: obs.source == FRAME_MARKER)
    times = op.map("frame_times", markers, lambda obs: (obs.stream_id, obs.t_ns))
    timed = op.stateful_batch(
        "trig_timing", op.merge("trig_timing_in", triggers, times), lambda state: TrigTimer(timing, idle_s, state)
    )
    split = op.branch("split_trig_timing", timed, lambda kv: _is_trigger(kv[1]))
    records.append(op.map("unkey_trig_timing", split.falses, _unkey))
    return split.trues


# --- out: TRIG, triggers.jsonl, clips, observations, trace -----------------------
def outputs(
    triggers: Stream[Tuple[str, Trigger]],
    observations: Stream[Observation],
    cfg: Config,
    records: List[Stream[TraceRecord]],
    specs: Optional[List[StreamSpec]] = None,
    frames_by_stream: Optional[Dict[str, Stream[Frame]]] = None,
    sync_view: Optional[SyncView] = None,
    live: bool = False,
) -> None:
    out_dir = Path(cfg.output.output_dir)
    keep = cfg.output.keep_existing
    if keep is None:
        keep = cluster.recovery_directory() is not None  # a resumed run continues its outputs
    if cfg.output.trig_address:
        ledger = out_dir / "trig_sent.keys" if keep else None
        sink = TrigPubSink(cfg.output.trig_address, cfg.output.trig_topic.encode(), ledger=ledger, sends=out_dir / SENDS_FILE)
        op.output("trig_pub", timed_triggers(triggers, observations, cfg, records, live), sink)
    op.output("triggers_jsonl", triggers, TriggersJsonlSink(out_dir, keep_existing=keep, stills=bool(cfg.output.clips and specs)))
    if cfg.output.clips and specs:
        clip_items = [triggers]
        for spec in specs:
            if spec.is_live and frames_by_stream is not None:
                encoded = op.map(
                    f"encode_{spec.stream_id}",
                    frames_by_stream[spec.stream_id],
                    functools.partial(encode_frame, quality=cfg.output.jpeg_quality),
                )
                clip_items.append(op.key_on(f"key_encoded_{spec.stream_id}", encoded, lambda e: e.stream_id))
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
            JsonlSink(out_dir / "observations.jsonl", keep=lambda r: r["source"] != FRAME_MARKER),
        )
    if cfg.output.obs_address:
        obs_out(observations, cfg)
    trace_out(records, cfg, out_dir, sync_view)


def trace_out(
    records: List[Stream[TraceRecord]], cfg: Config, out_dir: Path, sync_view: Optional[SyncView] = None
) -> None:
    all_records = op.map("record_dicts", op.merge("trace_records", *records), as_dict)
    if cfg.output.metrics_port or sync_view is not None:
        op.inspect("live_status", all_records, functools.partial(_live_status, sync_view))
    if cfg.output.trace != "off":
        trace_path = Path(cfg.output.trace_path) if cfg.output.trace_path else out_dir / "trace.jsonl"
        op.output(
            "trace",
            op.key_on("key_trace", all_records, lambda _r: "trace"),
            TraceSink(trace_path, cfg.output.trace),
        )


def _module_flow() -> Dataflow:
    logging.basicConfig(level=os.environ.get("FACEMOMENT_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = preflight.startup_config()  # one-line error and exit 2 before anything starts
    exit_status.exit_with_status_at_exit()  # registered first: runs after the summary
    if not cfg.output.native_logs:
        native_logs.filter_native_stderr()
    memory.keep_frame_memory_flat()
    shutdown.install_sigint_handler()
    if cfg.output.summary:
        print_summary_at_exit(cfg)
    return build_flow(cfg, start_live_status(cfg))


def start_live_status(cfg: Config) -> Optional[SyncView]:
    """Prometheus metrics and the terminal sync panel, when configured."""
    if cfg.output.metrics_port:
        metrics.start_metrics_server(cfg.output.metrics_port + cluster.process_index(), cfg.output.metrics_addr)
    if not cfg.output.sync_view:
        return None
    view = SyncView(cfg.align.window_ms, cfg.align.allowed_lateness_ms, cfg.extract.extractors)
    view.start()
    atexit.register(view.stop)
    return view


def __getattr__(name: str) -> Dataflow:
    # `python -m bytewax.run dataflows.facemoment` looks up `flow`: the configured
    # flow is built then, not when a test or tool imports this module.
    if name == "flow":
        value = globals()["flow"] = _module_flow()
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
