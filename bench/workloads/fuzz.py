"""8: hostile messages among a live stream, at volume: every one counted by kind, every
valid frame received, the trace records bounded (one per kind per second).

The message kinds are shared with tests/test_fuzz.py, which runs a small seeded
version through the whole dataflow and compares its triggers."""

from __future__ import annotations

import random
import struct
import threading
import time
from collections import Counter
from typing import Any, Callable, Dict, List, Tuple

import bytewax.operators as op
import numpy as np
import zmq
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, run_main

import os

from bench.meters import read_rss_mb
from bench.plan import Plan, Record
from facemoment.core.config import SourceConfig
from connectors.zmq_source import ZmqFrameSource
from facemoment.runtime.loopback import free_port
from facemoment.core.records import MalformedMessage

HEADER = struct.Struct("!QQIIB")
U64_MAX = 2**64 - 1
KINDS = ("part_count", "topic", "short_header", "payload_size", "dimensions", "too_large", "time_jump")


def hostile_message(rng: random.Random, kind: str, t0_ns: int) -> List[bytes]:
    """One message malformed in the way `kind` names (ids far from the stream's)."""
    big_id = rng.randrange(2**40, U64_MAX)
    good = HEADER.pack(big_id, t0_ns, 8, 8, 3)
    if kind == "part_count":
        return rng.choice([[b"frame", good], [b"frame", good, b"\0" * 192, b"more"], [b"frame"]])
    if kind == "topic":
        return [b"frame" + bytes([rng.randrange(33, 127)]), good, b"\0" * 192]
    if kind == "short_header":
        return [b"frame", good[: rng.randrange(25)] if rng.random() < 0.5 else good + b"\0", b"\0" * 192]
    if kind == "payload_size":
        return [b"frame", good, b"\0" * rng.choice([0, 1, 191, 193, 5000])]
    if kind == "dimensions":
        w, h, c = rng.choice([(0, 8, 3), (8, 0, 3), (16385, 8, 1), (8, 8, 2), (8, 8, 4)])
        return [b"frame", HEADER.pack(big_id, t0_ns, w, h, c), b"\0" * 192]
    if kind == "too_large":  # legal dimensions, over the size limit: refused on the header
        return [b"frame", HEADER.pack(big_id, t0_ns, 16384, 16384, 3), b"\0" * 192]
    if kind == "time_jump":  # a well-formed frame stamped absurdly far ahead
        stamp = rng.choice([U64_MAX, t0_ns + 10**15, 2**63])
        return [b"frame", HEADER.pack(big_id, stamp, 8, 8, 3), b"\0" * 192]
    raise ValueError(kind)


def _publish(port: int, messages: List[List[bytes]], subscribed: threading.Event, done: List[float]) -> None:
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.LINGER, 30_000)  # closing waits for the queued messages to go out
    pub.setsockopt(zmq.XPUB_NODROP, 1)  # lossless: every message reaches the source
    pub.bind(f"tcp://127.0.0.1:{port}")
    try:
        if pub.poll(60_000) and pub.recv() == b"\x01frame":
            subscribed.set()
            started = time.monotonic()
            for parts in messages:
                pub.send_multipart(parts)
            done.append(time.monotonic() - started)
    finally:
        pub.close()
        ctx.term()


def measure_fuzz(plan: Plan, log: Callable[[str], None], seed: int = 1) -> Record:
    hostile = 10_000 if plan.quick else 100_000
    frames = 1_000 if plan.quick else 3_000
    rng = random.Random(seed)
    t0 = 1_795_600_000_000_000_000
    image = np.full((8, 8, 3), 10, np.uint8).tobytes()
    sent: Counter = Counter()
    messages: List[List[bytes]] = []
    per_frame = hostile / frames
    for frame_id in range(frames):
        messages.append([b"frame", HEADER.pack(frame_id, t0 + frame_id * 33_333_333, 8, 8, 3), image])
        for _ in range(int(per_frame) + (rng.random() < per_frame % 1)):
            kind = rng.choice(KINDS)
            messages.append(hostile_message(rng, kind, t0))
            sent[kind] += 1
    log(f"fuzz: {frames} frames and {sum(sent.values())} hostile messages of {len(KINDS)} kinds")
    port = free_port()
    source = ZmqFrameSource(f"tcp://127.0.0.1:{port}", "cam0", SourceConfig(idle_timeout_s=1.0, buffer_frames=0))
    out: List[Any] = []
    flow = Dataflow("bench_fuzz")
    op.output("out", op.input("in", flow, source), TestingSink(out))
    subscribed, done = threading.Event(), []
    publisher = threading.Thread(target=_publish, args=(port, messages, subscribed, done))
    rss_before = read_rss_mb(os.getpid()) or 0.0
    publisher.start()
    run_main(flow)
    publisher.join(60)
    stats = source.partitions["cam0"].stats
    records = [x for x in out if isinstance(x, MalformedMessage)]
    elapsed = done[0] if done else float("nan")
    result: Dict[str, Any] = {
        "seed": seed,
        "frames_sent": frames,
        "frames_received": stats.frames_received,
        "hostile_sent": dict(sorted(sent.items())),
        "hostile_counted": dict(sorted(stats.malformed.items())),
        "counts_match": dict(stats.malformed) == dict(sent) and stats.frames_received == frames,
        "malformed_records": len(records),
        "lost_on_wire": stats.lost_on_wire,
        "publisher_restarts": stats.publisher_restarts,
        "send_s": round(elapsed, 2),
        "messages_per_s": round((frames + sum(sent.values())) / elapsed) if elapsed == elapsed and elapsed > 0 else None,
        "rss_growth_mb": round((read_rss_mb(os.getpid()) or 0.0) - rss_before, 1),
    }
    log(f"fuzz: counted {sum(stats.malformed.values())} of {sum(sent.values())} hostile messages, "
        f"{stats.frames_received} of {frames} frames, {len(records)} trace records")
    return result


def fuzz_rows(fuzz: Record) -> List[Tuple[str, Any]]:
    """The fuzz run as rows for results.md."""
    return [
        ("frames received / sent", f"{fuzz['frames_received']} / {fuzz['frames_sent']}"),
        ("hostile messages counted / sent", f"{sum(fuzz['hostile_counted'].values())} / {sum(fuzz['hostile_sent'].values())}"),
        ("by kind (counted)", ", ".join(f"{k} {v}" for k, v in fuzz["hostile_counted"].items())),
        ("counts match", fuzz["counts_match"]),
        ("malformed_message trace records", fuzz["malformed_records"]),
        ("lost on the wire, publisher restarts", f"{fuzz['lost_on_wire']}, {fuzz['publisher_restarts']}"),
        ("messages/s sent (lossless publisher)", fuzz["messages_per_s"]),
        ("RSS growth of the benchmark process (MB)", fuzz["rss_growth_mb"]),
    ]
