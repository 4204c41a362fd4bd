"""The output stages of the flow: each a named step over the sinks in connectors/.

They join a stream of the pipeline to its sink (and, for live clips, the frames to
the encoder), so they live beside the flow rather than among the sinks.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from typing import List, Optional, Tuple

import bytewax.operators as op
from bytewax.dataflow import Stream, operator

from connectors.clips import ClipSink
from connectors.obs_pub import ObsPubSink
from connectors.sources import StreamSpec
from connectors.trace_sink import JsonlSink, TraceSink, observation_record
from connectors.trig_pub import SENDS_FILE, TrigPubSink
from connectors.triggers_jsonl import TriggersJsonlSink
from facemoment.core.config import Config
from facemoment.core.records import Level, Record
from facemoment.core.types import Extracted, Frame, Observation, Trigger
from facemoment.formats.ring_encoder import encode_later
from facemoment.runtime import cluster, startup


def keep_existing(cfg: Config) -> bool:
    """Whether outputs continue the files already there (a resumed run does)."""
    if cfg.output.keep_existing is not None:
        return cfg.output.keep_existing
    return cluster.recovery_directory() is not None


@operator
def send_trig(step_id: str, timed: Stream[Tuple[str, Trigger]], cfg: Config) -> None:
    """TRIG messages to visualbase (ZeroMQ PUB or its Unix datagram socket)."""
    out_dir = Path(cfg.output.output_dir)
    # The ledger makes a resumed run send no TRIG twice.
    ledger = out_dir / "trig_sent.keys" if keep_existing(cfg) else None
    sink = TrigPubSink(cfg.output.trig_address or "", cfg.output.trig_topic.encode(), ledger=ledger, sends=out_dir / SENDS_FILE)
    op.output("trig_pub", timed, sink)


@operator
def write_triggers(step_id: str, triggers: Stream[Tuple[str, Trigger]], cfg: Config, stills: bool) -> None:
    """triggers.jsonl: one object per trigger (`stills`: with its best frame's file)."""
    sink = TriggersJsonlSink(Path(cfg.output.output_dir), keep_existing=keep_existing(cfg), stills=stills)
    op.output("triggers_jsonl", triggers, sink)


@operator
def write_clips(
    step_id: str,
    triggers: Stream[Tuple[str, Trigger]],
    frames: Optional[Stream[Frame]],
    cfg: Config,
    specs: List[StreamSpec],
    recorded: Optional[Stream[Frame]] = None,
) -> None:
    """Clips (and best stills): cut from files, or encoded from live frames kept in a ring.

    `recorded`: the full frames of the cameras analysed on a separate detect stream
    (StreamSpec.record); their clips are encoded from these, not from the frames analysed.
    """
    items = [triggers]
    live_ids = {spec.stream_id for spec in specs if spec.is_live and spec.record is None}
    if live_ids and frames is not None:
        # Live frames are kept (encoded) for clips; files are re-read instead.
        live_frames = op.filter("live_frames", frames, lambda f: f.stream_id in live_ids)
        if recorded is not None:
            live_frames = op.merge("clip_frames", live_frames, recorded)
    else:
        live_frames = recorded
    if live_frames is not None:
        # Compressed on the frame's worker, off its thread (facemoment.formats.ring_encoder).
        encoded = op.map("encode", live_frames, functools.partial(encode_later, quality=cfg.output.jpeg_quality))
        items.append(op.key_on("key_encoded", encoded, lambda e: e.stream_id))
    sink = ClipSink(
        Path(cfg.output.output_dir),
        {s.stream_id: s.clip_descriptor() for s in specs},
        ring_buffer_sec=cfg.output.ring_buffer_sec,
        ring_buffer_max_mb=cfg.output.ring_buffer_max_mb,
        fps=cfg.source.fps or 30.0,
    )
    op.output("clips", op.merge("clip_items", *items), sink)


def _is_observation(item: Extracted) -> bool:
    return isinstance(item, Observation)


@operator
def write_observations(step_id: str, extracted: Stream[Extracted], cfg: Config) -> None:
    """observations.jsonl: every extractor's result per frame."""
    observations = op.filter("observations", extracted, _is_observation)
    records = op.map("observation_records", observations, observation_record)
    sink = JsonlSink(Path(cfg.output.output_dir) / "observations.jsonl")
    op.output("observations_jsonl", op.key_on("key_observations", records, lambda _r: "observations"), sink)


@operator
def publish_obs(step_id: str, extracted: Stream[Extracted], cfg: Config) -> None:
    """Every observation and frame presence as OBS text, for fusion elsewhere."""
    publisher = cfg.output.obs_publisher or f"{socket.gethostname()}-{os.getpid()}"
    sink = ObsPubSink(cfg.output.obs_address or "", cfg.output.trig_topic.encode(), publisher, cfg.output.obs_subscriber_wait_s)
    op.output("obs_pub", op.key_on("key_obs_pub", extracted, lambda _o: "obs"), sink)


@operator
def write_trace(step_id: str, cfg: Config, *records: Stream[Record]) -> None:
    """The live status (metrics, sync view) and trace.jsonl, from every stage's records."""
    merged = op.merge("records", *records)
    if cfg.output.metrics_port or cfg.output.sync_view:
        op.inspect("live_status", merged, startup.live_status)
    if Level.parse(cfg.output.trace) > Level.OFF:
        out_dir = Path(cfg.output.output_dir)
        trace_path = Path(cfg.output.trace_path) if cfg.output.trace_path else out_dir / "trace.jsonl"
        op.output("trace", op.key_on("key_trace", merged, lambda _r: "trace"), TraceSink(trace_path, cfg.output.trace))
