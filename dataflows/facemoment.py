"""FaceMoment as a Bytewax dataflow.

    python -m bytewax.run dataflows.facemoment          # configuration from the environment

Reads top to bottom like the architecture: frames in (A), per-frame extraction (B*),
event-time alignment, fusion (C), then TRIG messages, triggers.jsonl, clips and the
trace out.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
from pathlib import Path
from typing import Dict, List, Tuple, Union

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.operators.windowing import collect_window

from connectors.clips import ClipSink, encode_frame
from connectors.sources import StreamSpec, build_source, stream_specs
from connectors.trig_pub import TrigPubSink
from connectors.triggers_jsonl import TriggersJsonlSink
from facemoment import shutdown
from facemoment.config import Config, load_config
from facemoment.summary import print_summary_at_exit
from facemoment.trace import TraceSink
from facemoment.types import Frame, FrameObservations, Observation, TraceRecord, Trigger
from operators.align import FrameGrouper, late_record, make_clock, make_windower
from operators.extractors import check_backends
from operators.orchestrator import extract_batch
from operators.fuse import Fuser

log = logging.getLogger("facemoment")


def _is_frame(item: Union[Frame, TraceRecord]) -> bool:
    return isinstance(item, Frame)


def _is_trigger(item: Union[Trigger, TraceRecord]) -> bool:
    return isinstance(item, Trigger)


def build_flow(cfg: Config) -> Dataflow:
    """The whole pipeline for one configuration (tests build it with their own)."""
    check_backends(cfg)  # missing model weights stop the start-up, not the stream
    flow = Dataflow("facemoment")
    out_dir = Path(cfg.output.output_dir)
    specs: List[StreamSpec] = stream_specs(cfg)

    # --- A: frames in, one input per stream --------------------------------------
    frames_by_stream: Dict[str, Stream[Frame]] = {}
    source_records: List[Stream[TraceRecord]] = []
    for spec in specs:
        items = op.input(f"frames_{spec.stream_id}", flow, build_source(spec, cfg))
        split = op.branch(f"split_source_{spec.stream_id}", items, _is_frame)
        frames_by_stream[spec.stream_id] = split.trues
        source_records.append(split.falses)
    frames = op.merge("frames", *frames_by_stream.values())

    # --- B*: stateless per-frame extraction, extractors in parallel, deadline ----
    extracted = op.flat_map_batch("extract", frames, functools.partial(extract_batch, cfg))
    split_extracted = op.branch("split_extracted", extracted, lambda x: isinstance(x, Observation))
    observations = split_extracted.trues

    # --- align: observations of a stream collected by event time -----------------
    by_stream = op.key_on("key_stream", observations, lambda obs: obs.stream_id)
    windows = collect_window(
        "align",
        by_stream,
        make_clock(cfg.align.allowed_lateness_ms),
        make_windower(cfg.align.window_ms),
    )
    grouped = op.flat_map_value(
        "group_frames",
        windows.down,
        FrameGrouper(cfg.extract.extractors, cfg.align.window_ms, cfg.output.trace),
    )
    aligned = op.branch("split_aligned", grouped, lambda kv: isinstance(kv[1], FrameObservations))
    late = op.map_value("late_obs", windows.late, late_record)

    # --- C: fusion, temporal state keyed per stream -------------------------------
    fused = op.stateful_flat_map("fuse", aligned.trues, Fuser(cfg))
    decided = op.branch("split_fused", fused, lambda kv: _is_trigger(kv[1]))
    triggers: Stream[Tuple[str, Trigger]] = decided.trues

    # --- out: TRIG, triggers.jsonl, clips, trace ----------------------------------
    if cfg.output.trig_address:
        op.output("trig_pub", triggers, TrigPubSink(cfg.output.trig_address, cfg.output.trig_topic.encode()))
    op.output("triggers_jsonl", triggers, TriggersJsonlSink(out_dir))
    if cfg.output.clips:
        clip_items = [triggers]
        live = [s.stream_id for s in specs if s.is_live]
        for stream_id in live:
            encoded = op.map(
                f"encode_{stream_id}",
                frames_by_stream[stream_id],
                functools.partial(encode_frame, quality=cfg.output.jpeg_quality),
            )
            clip_items.append(op.key_on(f"key_encoded_{stream_id}", encoded, lambda e: e.stream_id))
        op.output(
            "clips",
            op.merge("clip_items", *clip_items),
            ClipSink(
                out_dir,
                {s.stream_id: s.clip_descriptor() for s in specs},
                ring_buffer_sec=cfg.output.ring_buffer_sec,
                ring_buffer_max_mb=cfg.output.ring_buffer_max_mb,
            ),
        )
    if cfg.output.trace != "off":
        records = op.merge(
            "trace_records",
            *source_records,
            split_extracted.falses,
            op.map("unkey_grouped", aligned.falses, lambda kv: kv[1]),
            op.map("unkey_late", late, lambda kv: kv[1]),
            op.map("unkey_fused", decided.falses, lambda kv: kv[1]),
        )
        trace_path = Path(cfg.output.trace_path) if cfg.output.trace_path else out_dir / "trace.jsonl"
        op.output("trace", op.key_on("key_trace", records, lambda _r: "trace"), TraceSink(trace_path, cfg.output.trace))
    return flow


def _module_flow() -> Dataflow:
    logging.basicConfig(level=os.environ.get("FACEMOMENT_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = load_config()
    shutdown.install_sigint_handler()
    if cfg.output.summary:
        print_summary_at_exit(cfg)
    return build_flow(cfg)


flow = _module_flow()
