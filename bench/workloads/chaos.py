"""10. chaos soak: a live 30 fps stream under recovery with faults injected on a seeded
schedule, its triggers checked against an offline run of the same frames.

The sample loops with ids and timestamps that keep counting; a publisher restart
numbers ids from 0 again (timestamps go on, as a camera's clock does). Faults:

- ``publisher_restart``: the frame publisher closes and binds again, ids from 0;
- ``malformed_burst``: hundreds to thousands of hostile frame messages
  (bench.workloads.fuzz kinds) between two frames;
- ``kill``: ``kill -9`` of the dataflow and a restart from its recovery store
  (``-r``, snapshots every second); the first restart runs with a file-size limit
  (``RLIMIT_FSIZE``, what a full disk looks like to a writer: ``EFBIG``) just above
  its largest output, so the trace fills up; the second kill frees it again;
- ``trig_stall``: the TRIG receiver (a ``unix://`` datagram socket, as visualbase
  binds one) stops reading for a while, then reads what is queued.

Afterwards the same frames (ids, timestamps, images: everything the publisher sent,
in order) go losslessly into a fresh dataflow without faults. Its triggers are the
reference: a live trigger matches an offline one by key (stream, event time,
reason) or, moved by frames the live run lost, by reason within a second. Offline
triggers the live run lacks are ``lost``, and each is put down to what the live run
said about it: a stretch in which the live dataflow could not receive (down after a
kill, a publisher reconnecting: ``while_blind``), or frames of its span (from its
clip start to a second after its event) that the live run fused without a face
result while its trace counted frames dropped (``to_counted_drops``; the live run
writes observations.jsonl, so which frames it fused with a face result is known).
A lost trigger may also follow a blind stretch: the stretch moved an earlier trigger,
whose cooldown then covers this one. Such a trigger is replayed (``after_blind``):
the frames around it run offline twice, once whole and once without what the live
run missed (the blind stretch and, after a kill, the frames since the last snapshot,
whose state the restart lost); if the gapped replay loses it too, the blind stretch
explains it. A trigger lost otherwise was lost silently and counts against the target. A key
written twice to triggers.jsonl or received twice as TRIG is ``doubled``. RSS is
sampled every 0.5 s per incarnation of the dataflow.
"""

from __future__ import annotations

import json
import os
import random
import resource
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from bench.meters import load_average, read_rss_mb, rss_stats
from bench.plan import LIVE_FPS, MEMORY_SLOPE_LIMIT, REPO, RSS_PERIOD_S, STREAM_ID
from bench.workloads.fuzz import KINDS, hostile_message
from bench.workloads.inputs import flow_env, log_tail
from facemoment.runtime.loopback import free_port
from facemoment.runtime.summary import read_jsonl

CHAOS_SIZE = (320, 240)  # small frames: the soak tests the plumbing, not the extractors
CHAOS_EXTRACTORS = "face,quality"
IDLE_TIMEOUT_S = 8.0
SUBSCRIBE_TIMEOUT_S = 300.0
MATCH_WINDOW_NS = 1_000_000_000  # a trigger moved by lost frames still matches within this
SNAPSHOT_S = 1  # the live dataflow's recovery snapshots (-s): a kill loses at most this much state
REPLAY_WARMUP_NS = 60_000_000_000  # a replay starts this long before the blind stretch it tests
REPLAY_AFTER_NS = 60_000_000_000  # blind stretches ending this long before a lost trigger are replayed
DISK_MARGIN_BYTES = 256 * 1024  # the full disk leaves this much room above the largest output


@dataclass(frozen=True)
class Fault:
    at_s: float
    kind: str  # publisher_restart | malformed_burst | kill | trig_stall
    count: int = 0  # malformed_burst: messages
    seconds: float = 0.0  # trig_stall: how long
    disk_full: bool = False  # kill: the restarted dataflow runs with a file-size limit


def chaos_schedule(seed: int, seconds: float) -> List[Fault]:
    """The faults of a run of `seconds`, in time order; the same seed gives the same schedule."""
    rng = random.Random(seed)
    span = lambda a, b: round(seconds * rng.uniform(a, b), 2)  # noqa: E731
    faults = [
        Fault(span(0.30, 0.40), "kill", disk_full=True),
        Fault(span(0.60, 0.70), "kill"),
        Fault(span(0.10, 0.25), "publisher_restart"),
        Fault(span(0.75, 0.85), "publisher_restart"),
        Fault(span(0.45, 0.55), "trig_stall", seconds=round(max(3.0, min(30.0, seconds * 0.05)), 1)),
    ]
    for _ in range(max(2, int(seconds // 120))):
        faults.append(Fault(span(0.05, 0.95), "malformed_burst", count=rng.randint(500, 3000)))
    return sorted(faults, key=lambda f: f.at_s)


class StallingTrigReceiver(threading.Thread):
    """A TRIG receiver bound at a unix datagram path that can stop reading (``stalled``)."""

    def __init__(self, path: Path) -> None:
        super().__init__(name="chaos-trig", daemon=True)
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.received: List[str] = []
        self.stalled = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            if self.stalled.is_set():
                self.stop.wait(0.05)  # not reading: the queue fills up
                continue
            try:
                self.received.append(self.sock.recv(65536).decode("utf-8", "replace"))
            except socket.timeout:
                continue
        self.sock.settimeout(0)
        while True:  # what was queued when told to stop
            try:
                self.received.append(self.sock.recv(65536).decode("utf-8", "replace"))
            except OSError:
                break

    def close(self) -> None:
        self.stop.set()
        self.join(10)
        self.sock.close()
        self.path.unlink(missing_ok=True)


class _RssLog(threading.Thread):
    """VmRSS of whichever dataflow process is current, every RSS_PERIOD_S."""

    def __init__(self, started: float) -> None:
        super().__init__(name="chaos-rss", daemon=True)
        self.started = started
        self.pid: Optional[int] = None
        self.incarnation = 0
        self.samples: List[Tuple[int, float, float]] = []  # (incarnation, seconds, MB)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(RSS_PERIOD_S):
            pid, incarnation = self.pid, self.incarnation
            value = read_rss_mb(pid) if pid else None
            if value is not None:
                self.samples.append((incarnation, time.monotonic() - self.started, value))


def _file_size_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@dataclass
class _Live:
    env: Dict[str, str]
    cmd: List[str]
    log_path: Path
    proc: Optional[subprocess.Popen] = None
    incarnations: List[Dict[str, Any]] = field(default_factory=list)

    def start(self, rss: _RssLog, disk_limit: Optional[int] = None) -> None:
        handle = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.cmd, env=self.env, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT,
            preexec_fn=_file_size_limit(disk_limit) if disk_limit else None,
        )
        handle.close()
        rss.pid, rss.incarnation = self.proc.pid, len(self.incarnations)
        self.incarnations.append({"pid": self.proc.pid, "disk_limit_bytes": disk_limit, "exit": None})

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.incarnations[-1]["exit"] = self.proc.wait()


def _largest_output(*folders: Path) -> int:
    sizes = [p.stat().st_size for folder in folders if folder.exists() for p in folder.rglob("*") if p.is_file()]
    return max(sizes, default=0)


def _resize(images: Sequence[np.ndarray], size: Tuple[int, int]) -> List[np.ndarray]:
    import cv2

    return [cv2.resize(i, size, interpolation=cv2.INTER_AREA) if (i.shape[1], i.shape[0]) != size else i for i in images]


def _flow_env(out_dir: Path, frames_address: str, trig_address: str, observations: bool = False) -> Dict[str, str]:
    return flow_env(
        {
            "FACEMOMENT_SOURCE": frames_address,
            "FACEMOMENT_IDLE_TIMEOUT_S": str(IDLE_TIMEOUT_S),
            "FACEMOMENT_TRIG_ADDRESS": trig_address,
            "FACEMOMENT_TRACE": "normal",
            "FACEMOMENT__OUTPUT__CLIPS": "false",
            "FACEMOMENT__OUTPUT__OBSERVATIONS": "true" if observations else "false",
            "FACEMOMENT__EXTRACT__EXTRACTORS": CHAOS_EXTRACTORS,
            "FACEMOMENT_OUTPUT_DIR": str(out_dir),
        }
    )


def _bind_publisher(address: str, lossless: bool = False) -> Any:
    from facemoment.tools.daemon import FramePublisher

    for _ in range(100):  # the previous publisher's port may take a moment to be free again
        try:
            return FramePublisher(address, wait_subscribers=1, lossless=lossless)
        except ValueError:
            time.sleep(0.1)  # retrying a bind, bounded
    return FramePublisher(address, wait_subscribers=1, lossless=lossless)


def run_live(
    images: Sequence[np.ndarray], seconds: float, seed: int, work: Path, log: Callable[[str], None]
) -> Dict[str, Any]:
    """The live run with its faults; returns what was sent and what happened."""
    from facemoment.formats.sample import frame_t_ns

    out_dir, rec_dir = work / "chaos-live", work / "chaos-recovery"
    rec_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(rec_dir), "1"], check=True, cwd=REPO,
                   env=flow_env({}), timeout=120, stdout=subprocess.DEVNULL)
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    trig_path = Path(f"/tmp/fm-chaos-{os.getpid()}-{port}.sock")
    trig_path.unlink(missing_ok=True)
    receiver = StallingTrigReceiver(trig_path)
    receiver.start()
    (work / "logs").mkdir(parents=True, exist_ok=True)
    live = _Live(_flow_env(out_dir, address, f"unix://{trig_path}", observations=True),
                 [sys.executable, "-m", "bytewax.run", "dataflows.facemoment", "-r", str(rec_dir), "-s", "1", "-b", "0"],
                 work / "logs" / "chaos-live.log")
    faults = chaos_schedule(seed, seconds)
    rng = random.Random(seed + 1)
    total = int(round(seconds * LIVE_FPS))
    period_ns = int(round(1e9 / LIVE_FPS))
    sent: List[Tuple[int, int, int]] = []  # (frame id, t_ns, sample index) of every frame sent
    blind: List[List[int]] = []  # [first t_ns, last t_ns] the live dataflow could not receive
    blind_causes: List[str] = []  # why each stretch began: kill | publisher_restart | unsubscribed
    events: List[Dict[str, Any]] = []
    hostile: Counter = Counter()
    publisher = _bind_publisher(address)
    rss = _RssLog(time.monotonic())
    live.start(rss)
    rss.start()
    stall_until: Optional[float] = None
    id_base = 0
    load_before = load_average()
    try:
        if not publisher.wait_for_subscribers(timeout=SUBSCRIBE_TIMEOUT_S):
            raise RuntimeError(f"chaos: the dataflow did not subscribe:\n{log_tail(live.log_path)}")
        log(f"chaos: streaming {total} frames ({seconds:.0f} s) with {len(faults)} faults, seed {seed}")
        start = time.monotonic()
        rss.started = start
        shift_ns = 0  # schedule time spent re-binding (not streamed)
        pending = list(faults)
        blind_from: Optional[int] = None
        blind_cause = ""
        seen_zero = True  # a blind stretch ends with a subscription made after the fault
        i = -1
        heard_since = 0  # frames sent since the current dataflow last (re)subscribed
        # The stream ends after `total` frames once the current dataflow has had a
        # second of them: one restarted near the end must not wait for frames forever.
        while True:
            i += 1
            if i >= total and blind_from is None and heard_since >= LIVE_FPS:
                break
            if i >= total + SUBSCRIBE_TIMEOUT_S * LIVE_FPS:
                raise RuntimeError(f"chaos: the restarted dataflow did not subscribe:\n{log_tail(live.log_path)}")
            due = start + (i * period_ns + shift_ns) / 1e9
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)  # pacing the stream, not synchronisation
            now_s = time.monotonic() - start
            t_ns = frame_t_ns(i)
            while pending and pending[0].at_s <= now_s:
                fault = pending.pop(0)
                events.append({"at_s": round(now_s, 2), **{k: v for k, v in asdict(fault).items() if v}})
                log(f"chaos: {fault.kind} at {now_s:.1f} s")
                if fault.kind == "kill":
                    live.kill()
                    blind_from = t_ns if blind_from is None else blind_from
                    blind_cause, seen_zero = "kill", False
                    limit = None
                    if fault.disk_full:
                        limit = _largest_output(out_dir, rec_dir) + DISK_MARGIN_BYTES
                    live.start(rss, limit)
                elif fault.kind == "publisher_restart":
                    began = time.monotonic()
                    publisher.close(flush_ms=0)
                    publisher = _bind_publisher(address)
                    id_base = i
                    if blind_from is None:
                        blind_from, blind_cause = t_ns, "publisher_restart"
                    seen_zero = False
                    shift_ns += int((time.monotonic() - began) * 1e9)
                elif fault.kind == "malformed_burst":
                    for _ in range(fault.count):
                        kind = rng.choice(KINDS)
                        if publisher.send_raw(hostile_message(rng, kind, t_ns)):
                            hostile[kind] += 1
                elif fault.kind == "trig_stall":
                    receiver.stalled.set()
                    stall_until = now_s + fault.seconds
            if stall_until is not None and now_s >= stall_until:
                receiver.stalled.clear()
                stall_until = None
            frame_id = i - id_base
            publisher.publish(frame_id, t_ns, images[i % len(images)])
            subscribed = publisher.subscribers > 0
            seen_zero = seen_zero or not subscribed
            heard_since = heard_since + 1 if subscribed else 0
            if blind_from is not None and subscribed and seen_zero:
                blind.append([blind_from, t_ns])
                blind_causes.append(blind_cause)
                blind_from, heard_since = None, 1
            elif blind_from is None and not subscribed:
                blind_from, blind_cause, seen_zero = t_ns, "unsubscribed", True
            sent.append((frame_id, t_ns, i % len(images)))
        stream_s = time.monotonic() - start
        receiver.stalled.clear()
        assert live.proc is not None
        code = live.proc.wait(timeout=IDLE_TIMEOUT_S + 300)
        live.incarnations[-1]["exit"] = code
    finally:
        rss.stop.set()
        if live.proc is not None and live.proc.poll() is None:
            live.kill()
        publisher.close()
        receiver.close()
    return {
        "out_dir": out_dir,
        "sent": sent,
        "blind": blind,
        "blind_causes": blind_causes,
        "events": events,
        "hostile": dict(hostile),
        "incarnations": live.incarnations,
        "rss": rss.samples,
        "trig_received": list(receiver.received),
        "stream_s": round(stream_s, 1),
        "load_before": load_before,
        "load_after": load_average(),
        "log": live.log_path,
    }


def _run_recorded(images: Sequence[np.ndarray], frames: Sequence[Tuple[int, int, int]], work: Path,
                  name: str) -> Path:
    """`frames` (id, t_ns, image index) from a lossless (PNG) recording into a fresh dataflow.

    A recording is read at the dataflow's pace, so nothing is shed. Its ids must
    increase, so the frames are numbered by their place in the stream; triggers are
    keyed by event time, which is the live run's.
    """
    from facemoment.formats.recording import RECORDING_SUFFIX, RecordingWriter
    from facemoment.formats.recording.codec import encode_image

    out_dir = work / name
    path = work / f"{name}-frames{RECORDING_SUFFIX}"
    payloads: Dict[int, bytes] = {}
    height, width = images[0].shape[:2]
    with RecordingWriter(path, {"stream": STREAM_ID}) as writer:
        for n, (_frame_id, t_ns, index) in enumerate(frames):
            if index not in payloads:
                payloads[index] = encode_image(images[index], "png")
            writer.append(n, t_ns, width, height, 3, "png", payloads[index])
    (work / "logs").mkdir(parents=True, exist_ok=True)
    log_path = work / "logs" / f"{name}.log"
    with open(log_path, "wb") as handle:
        code = subprocess.run([sys.executable, "-m", "bytewax.run", "dataflows.facemoment"],
                              env=_flow_env(out_dir, str(path), "none"), cwd=REPO, stdout=handle,
                              stderr=subprocess.STDOUT, timeout=6 * 3600).returncode
    path.unlink(missing_ok=True)
    if code != 0:
        raise RuntimeError(f"chaos {name}: the dataflow exited with {code}:\n{log_tail(log_path)}")
    return out_dir


def run_offline(images: Sequence[np.ndarray], sent: Sequence[Tuple[int, int, int]], work: Path,
                log: Callable[[str], None]) -> Path:
    """The same frames into a fresh dataflow without faults: the reference."""
    log(f"chaos: offline run of the same {len(sent)} frames")
    return _run_recorded(images, sent, work, "chaos-offline")


def _triggers(out_dir: Path) -> List[Dict[str, Any]]:
    path = out_dir / "triggers.jsonl"
    return read_jsonl(path) if path.exists() else []


def missed_spans(blind: Sequence[Sequence[int]], causes: Sequence[str]) -> List[Tuple[int, int, int]]:
    """(first, last, earliest first) t_ns of what the live state never kept, per blind stretch:
    after a kill the restart also lost the frames since the last snapshot before it, up to
    SNAPSHOT_S; which of them it lost depends on when that snapshot was taken."""
    spans = []
    for (first, last), cause in zip(blind, causes):
        spans.append((first, last, first - (SNAPSHOT_S * 1_000_000_000 if cause == "kill" else 0)))
    return spans


def replay_span(row: Dict[str, Any], spans: Sequence[Tuple[int, int, int]]) -> Optional[Tuple[int, int, int]]:
    """The latest missed span ending before `row`'s clip starts, if near enough to replay."""
    before = [sp for sp in spans if sp[1] < row["t_start_ns"] and row["t_start_ns"] - sp[1] <= REPLAY_AFTER_NS]
    return max(before, key=lambda sp: sp[1]) if before else None


def lost_in_replay(whole_rows: Sequence[Dict[str, Any]], gapped_rows: Sequence[Dict[str, Any]]) -> set:
    """Keys the whole replay fires that the gapped one lacks, matched as the soak matches."""
    return {x["key"] for x in compare_triggers(gapped_rows, whole_rows, [], blind=[])["lost_detail"]}


def explain_after_blind(images: Sequence[np.ndarray], sent: Sequence[Tuple[int, int, int]],
                        spans: Sequence[Tuple[int, int, int]], lost: List[Dict[str, Any]],
                        offline_rows: Sequence[Dict[str, Any]], work: Path, log: Callable[[str], None]) -> None:
    """Sets ``after_blind`` on lost triggers not yet explained, by replaying (module doc).

    The lost triggers after one missed span are replayed together, from the span's start
    less a warm-up to a second after the last of them: whole, and without the missed
    frames; after a kill twice, without the blind stretch alone and without the stretch
    and a whole snapshot interval before it, the two ends of what the restart can have
    lost. A trigger the whole replay fires and a gapped one loses is explained.
    """
    rows = {r["key"]: r for r in offline_rows}
    by_span: Dict[Tuple[int, int, int], List[Dict[str, Any]]] = {}
    for item in lost:
        item["after_blind"] = False
        if item["while_blind"] or item["to_counted_drops"]:
            continue
        span = replay_span(rows[item["key"]], spans)
        if span is not None:
            by_span.setdefault(span, []).append(item)
    for n, ((gap_first, gap_last, gap_earliest), items) in enumerate(sorted(by_span.items())):
        first = gap_earliest - REPLAY_WARMUP_NS
        last = max(rows[x["key"]]["event_t_ns"] for x in items) + MATCH_WINDOW_NS
        whole = [f for f in sent if first <= f[1] <= last]
        log(f"chaos: replaying {len(items)} lost trigger(s) after the blind stretch at {gap_first / 1e9:.2f} s "
            f"({len(whole)} frames)")
        whole_rows = _triggers(_run_recorded(images, whole, work, f"chaos-replay{n}-whole"))
        keys = {x["key"] for x in items} & {r["key"] for r in whole_rows}  # reproduced by the whole replay
        explained: set = set()
        for m, gap_start in enumerate(sorted({gap_first, gap_earliest})):
            gapped = [f for f in whole if not gap_start <= f[1] <= gap_last]
            gapped_rows = _triggers(_run_recorded(images, gapped, work, f"chaos-replay{n}-gapped{m}"))
            explained |= keys & lost_in_replay(whole_rows, gapped_rows)
        for item in items:
            item["after_blind"] = item["key"] in explained


def face_times(out_dir: Path) -> set:
    """Event times of the frames the live run fused with a face result (observations.jsonl)."""
    path = out_dir / "observations.jsonl"
    if not path.exists():
        return set()
    return {r["t_ns"] for r in read_jsonl(path) if r.get("source") == "face" and "t_ns" in r}


def lost_counts(lost: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Lost triggers by what explains them; ``lost_unexplained`` were lost silently."""
    explained = ("while_blind", "to_counted_drops", "after_blind")
    return {
        "lost": len(lost),
        "lost_while_blind": sum(1 for x in lost if x["while_blind"]),
        "lost_to_counted_drops": sum(1 for x in lost if x["to_counted_drops"]),
        "lost_after_blind": sum(1 for x in lost if x.get("after_blind")),
        "lost_unexplained": sum(1 for x in lost if not any(x.get(k) for k in explained)),
        "lost_detail": list(lost),
    }


def compare_triggers(live_rows: Sequence[Dict[str, Any]], offline_rows: Sequence[Dict[str, Any]],
                     trig_texts: Sequence[str], blind: Sequence[Sequence[int]],
                     sent_t: Sequence[int] = (), seen_t: Optional[set] = None, drops_counted: int = 0) -> Dict[str, Any]:
    """Live triggers against the offline reference, and TRIG received against triggers.jsonl.

    `sent_t`: event times of every frame sent; `seen_t`: those the live run fused
    with a face result (None: not known); `drops_counted`: frames its trace counted
    as dropped.
    """
    from bisect import bisect_left, bisect_right

    from facemoment.formats.wire import WireError, parse_trig

    live_keys = Counter(r["key"] for r in live_rows)
    offline_by_key = {r["key"]: r for r in offline_rows}
    unmatched_live = {r["key"]: r for r in live_rows}
    matched = shifted = 0
    lost: List[Dict[str, Any]] = []
    sent_sorted = sorted(sent_t)
    for key, row in offline_by_key.items():
        if key in unmatched_live:
            matched += 1
            del unmatched_live[key]
            continue
        near = [k for k, r in unmatched_live.items()
                if r["reason"] == row["reason"] and abs(r["event_t_ns"] - row["event_t_ns"]) <= MATCH_WINDOW_NS]
        if near:
            shifted += 1
            del unmatched_live[near[0]]
            continue
        overlaps = any(row["t_start_ns"] <= b and a <= row["t_end_ns"] for a, b in blind)
        span = sent_sorted[bisect_left(sent_sorted, row["t_start_ns"]):bisect_right(sent_sorted, row["event_t_ns"] + MATCH_WINDOW_NS)]
        unseen = sum(1 for t in span if t not in seen_t) if seen_t is not None else 0
        lost.append({"key": key, "while_blind": overlaps, "frames_unseen": unseen,
                     "to_counted_drops": not overlaps and unseen > 0 and drops_counted > 0, "after_blind": False})
    by_span = {(r["reason"], r["t_start_ns"], r["t_end_ns"]): r["key"] for r in live_rows}
    received: Counter = Counter()
    unknown = 0
    for text in trig_texts:
        try:
            trig = parse_trig(text)
        except WireError:
            unknown += 1
            continue
        key = by_span.get((trig["reason"], trig["t_start_ns"], trig["t_end_ns"]))
        if key is None:
            unknown += 1
        else:
            received[key] += 1
    return {
        "offline_triggers": len(offline_by_key),
        "live_triggers": sum(live_keys.values()),
        "matched": matched,
        "matched_shifted": shifted,
        **lost_counts(lost),
        "extra_live": len(unmatched_live),
        "doubled_in_triggers_jsonl": sum(n - 1 for n in live_keys.values() if n > 1),
        "trig_received": sum(received.values()),
        "trig_doubled": sum(n - 1 for n in received.values() if n > 1),
        "trig_missing": sum(1 for k in live_keys if k not in received),
        "trig_unknown": unknown,
    }


def _rss_by_incarnation(samples: Sequence[Tuple[int, float, float]]) -> List[Dict[str, Any]]:
    out = []
    for incarnation in sorted({s[0] for s in samples}):
        mine = [(t, mb) for n, t, mb in samples if n == incarnation]
        stats = rss_stats(mine)
        stats["seconds"] = round(mine[-1][0] - mine[0][0], 1) if mine else 0.0
        out.append(stats)
    return out


def _trace_summary(out_dir: Path) -> Dict[str, Any]:
    trace = read_jsonl(out_dir / "trace.jsonl") if (out_dir / "trace.jsonl").exists() else []
    kinds = Counter(r.get("record_type") for r in trace)
    summaries = [r for r in trace if r.get("record_type") == "source_summary"]
    degraded = [r for r in trace if r.get("record_type") == "trace_degraded"]
    malformed: Counter = Counter()
    dropped: Counter = Counter()
    for r in trace:
        if r.get("record_type") == "malformed_message":
            malformed[r["kind"]] += r.get("messages") or 0
        elif r.get("record_type") == "frame_drop":
            where = r["reason"] + (f"/{r['where']}" if r.get("where") else "")
            dropped[where] += r.get("dropped_count") or len(r.get("dropped_frame_ids") or ()) or 1
    return {
        "trace_lines": len(trace),
        "malformed_records": kinds.get("malformed_message", 0),
        "malformed_counted": dict(malformed),
        "publisher_restart_records": kinds.get("publisher_restart", 0),
        "trace_degraded_records": len(degraded),
        "trace_lost_records": max((r.get("lost_total") or 0 for r in degraded), default=0),
        "while_down_gaps": sum(1 for r in trace if r.get("where") == "while_down"),
        "frames_dropped": dict(dropped),
        "source_summaries": len(summaries),
        # The source's own counts: kept in its snapshots, so they survive a resume the records do not.
        "malformed_in_summary": dict(summaries[-1].get("malformed") or {}) if summaries else {},
    }


def measure_chaos(images: Sequence[np.ndarray], seconds: float, work: Path, log: Callable[[str], None],
                  seed: int = 7, size: Tuple[int, int] = CHAOS_SIZE) -> Dict[str, Any]:
    images = _resize(images, size)
    live = run_live(images, seconds, seed, work, log)
    offline_dir = run_offline(images, live["sent"], work, log)
    live_rows, offline_rows = _triggers(live["out_dir"]), _triggers(offline_dir)
    trace = _trace_summary(live["out_dir"])
    sent_t = [t for _id, t, _index in live["sent"]]
    seen_t = face_times(live["out_dir"])
    comparison = compare_triggers(live_rows, offline_rows, live["trig_received"], live["blind"],
                                  sent_t, seen_t, sum(trace["frames_dropped"].values()))
    spans = missed_spans(live["blind"], live["blind_causes"])
    explain_after_blind(images, live["sent"], spans, comparison["lost_detail"], offline_rows, work, log)
    comparison.update(lost_counts(comparison["lost_detail"]))
    blind_t = [t for t in sent_t if any(a <= t <= b for a, b in live["blind"])]
    frames_unseen = len(set(sent_t) - seen_t - set(blind_t))
    sends = Counter()
    sends_path = live["out_dir"] / "trig_sends.jsonl"
    if sends_path.exists():
        sends = Counter(r.get("status") for r in read_jsonl(sends_path))
    rss = _rss_by_incarnation(live["rss"])
    all_mb = [mb for _, _, mb in live["rss"]]
    result = {
        "seed": seed,
        "seconds": seconds,
        "stream_s": live["stream_s"],
        "frame_size": f"{size[0]}x{size[1]}",
        "extractors": CHAOS_EXTRACTORS,
        "frames_sent": len(live["sent"]),
        "faults": live["events"],
        "hostile_sent": live["hostile"],
        "blind_spans_s": [round((b - a) / 1e9, 2) for a, b in live["blind"]],
        "blind_causes": live["blind_causes"],
        "incarnations": live["incarnations"],
        "exit_codes": [i["exit"] for i in live["incarnations"]],
        "triggers": comparison,
        "trig_sends": dict(sends),
        "live_trace": trace,
        # Frames sent while the dataflow could receive that it fused without a face result,
        # against the frames its trace counted as dropped (every reason).
        "frames_unseen_live": frames_unseen,
        "rss_by_incarnation": rss,
        "rss_max_mb": round(max(all_mb), 1) if all_mb else None,
        "load_before": live["load_before"],
        "load_after": live["load_after"],
    }
    t = comparison
    log(f"chaos: {t['live_triggers']} live / {t['offline_triggers']} offline triggers; matched {t['matched']} "
        f"(+{t['matched_shifted']} moved), lost {t['lost']} ({t['lost_while_blind']} while blind, "
        f"{t['lost_after_blind']} after a blind stretch, {t['lost_unexplained']} silently), doubled "
        f"{t['doubled_in_triggers_jsonl']} + TRIG {t['trig_doubled']}; RSS max {result['rss_max_mb']} MB")
    return result


def chaos_verdict(chaos: Dict[str, Any]) -> Dict[str, Any]:
    """None lost (outside blind stretches), none doubled, RSS bounded, every exit clean."""
    t = chaos["triggers"]
    slopes = [r["slope_after_warmup_mb_per_min"] for r in chaos["rss_by_incarnation"]
              if r["slope_after_warmup_mb_per_min"] is not None and r["seconds"] >= 120]
    killed = sum(1 for f in chaos["faults"] if f["kind"] == "kill")
    return {
        "none_lost": t["lost_unexplained"] == 0,
        "none_doubled": t["doubled_in_triggers_jsonl"] == 0 and t["trig_doubled"] == 0,
        "rss_slope_max_mb_per_min": max(slopes) if slopes else None,
        "rss_bounded": all(s <= MEMORY_SLOPE_LIMIT for s in slopes) if slopes else None,
        "clean_exit": chaos["exit_codes"][-1] == 0 and len(chaos["exit_codes"]) == killed + 1,
    }


def chaos_rows(chaos: Dict[str, Any]) -> List[Tuple[str, Any]]:
    """The soak as rows for results.md."""
    t, v = chaos["triggers"], chaos_verdict(chaos)
    faults = Counter(f["kind"] for f in chaos["faults"])
    trace = chaos["live_trace"]
    return [
        ("duration streamed (s), frames sent", f"{chaos['stream_s']}, {chaos['frames_sent']} ({chaos['frame_size']}, {chaos['extractors']})"),
        ("load average before / after", f"{chaos['load_before']} / {chaos['load_after']}"),
        ("faults (seed %d)" % chaos["seed"], ", ".join(f"{k} {n}" for k, n in sorted(faults.items()))),
        ("stretches the live dataflow could not receive (s, cause)",
         ", ".join(f"{sp} {cause}".strip() for sp, cause in zip(chaos["blind_spans_s"], chaos.get("blind_causes") or [""] * len(chaos["blind_spans_s"])))),
        ("triggers offline / live", f"{t['offline_triggers']} / {t['live_triggers']}"),
        ("matched by key / moved by lost frames", f"{t['matched']} / {t['matched_shifted']}"),
        ("lost: while blind / after a blind stretch (replayed) / to counted frame drops / silently",
         f"{t['lost_while_blind']} / {t.get('lost_after_blind', 0)} / {t.get('lost_to_counted_drops', 0)} / {t['lost_unexplained']}"),
        ("extra live triggers", t["extra_live"]),
        ("doubled: triggers.jsonl / TRIG", f"{t['doubled_in_triggers_jsonl']} / {t['trig_doubled']}"),
        ("TRIG received / sends by status", f"{t['trig_received']} / {chaos['trig_sends']}"),
        ("hostile sent (to a subscriber) / counted in records / in the source summary",
         f"{sum(chaos['hostile_sent'].values())} / {sum(trace['malformed_counted'].values())} in {trace['malformed_records']} records"
         f" / {sum((trace.get('malformed_in_summary') or {}).values()) if 'malformed_in_summary' in trace else '–'}"),
        ("frames the live dataflow dropped, by reason (trace)", trace.get("frames_dropped")),
        ("frames sent while it could receive and fused without a face result", chaos.get("frames_unseen_live", "–")),
        ("trace: degraded records, records lost to the full disk", f"{trace['trace_degraded_records']}, {trace['trace_lost_records']}"),
        ("exit codes by incarnation", chaos["exit_codes"]),
        ("RSS max (MB); slope after warm-up per incarnation (MB/min)",
         f"{chaos['rss_max_mb']}; {[r['slope_after_warmup_mb_per_min'] for r in chaos['rss_by_incarnation']]}"),
        ("none lost / none doubled / RSS bounded / clean exit",
         f"{v['none_lost']} / {v['none_doubled']} / {v['rss_bounded']} / {v['clean_exit']}"),
    ]
