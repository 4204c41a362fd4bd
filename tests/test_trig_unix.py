"""TRIG over a Unix datagram socket, as visualbase's `ingest --trig-socket` reads it.

The receiver is built from the protocol: an AF_UNIX SOCK_DGRAM socket bound to a
path, one UTF-8 TRIG text per datagram, read with a 64 KiB buffer.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Iterator, List, Optional

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main

from connectors.text_transports import DROPPED, SENT, UNHEARD
from connectors.trig_pub import TrigPubSink
from facemoment.formats.wire import format_trigger
from facemoment.core.addresses import AddressError, parse_address
from facemoment.core.config import ConfigError, load_config
from facemoment.core.types import Trigger
from facemoment.formats.wire import parse_trig


def make_trigger(event_s: float, reason: str = "expression_spike") -> Trigger:
    event_ns = int(event_s * 1e9)
    return Trigger("cam0", int(event_s * 30), event_ns, event_ns, reason, 0.85, 2.0, 2.0, 1)


class DatagramReceiver:
    """visualbase's side: binds the path, reads one message per datagram."""

    def __init__(self, path: Path, rcvbuf: Optional[int] = None) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind(str(path))

    def recv(self, timeout: float = 5.0) -> Optional[str]:
        self.sock.settimeout(timeout)
        try:
            data, _ = self.sock.recvfrom(65536)
        except socket.timeout:
            return None
        return data.decode("utf-8")

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # Unix socket paths are limited to ~107 bytes; pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="fm", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_each_trig_is_one_datagram_of_the_visualbase_text(short_dir: Path) -> None:
    receiver = DatagramReceiver(short_dir / "trig.sock")
    part = TrigPubSink(f"unix://{short_dir}/trig.sock").build_part("trig", "trig_pub", None)
    try:
        triggers = [make_trigger(3.0), make_trigger(9.5, reason="head_turn")]
        part.write_batch(triggers)
        assert part.flush()
        got = [receiver.recv(), receiver.recv()]
        assert got == [format_trigger(t) for t in triggers]
        assert parse_trig(got[0])["t_end_ns"] == triggers[0].t_end_ns
        assert part.outcomes[SENT] == 2 and part.sent_count == 2
    finally:
        part.close()
        receiver.close()


def test_nobody_listening_is_counted_not_fatal_and_a_later_receiver_gets_the_next(short_dir: Path) -> None:
    sends = short_dir / "trig_sends.jsonl"
    part = TrigPubSink(f"unix://{short_dir}/late.sock", sends=sends).build_part("trig", "trig_pub", None)
    receiver = None
    try:
        part.write_batch([make_trigger(3.0), make_trigger(8.0)])  # no socket file yet
        assert part.flush()
        assert part.outcomes[UNHEARD] == 2
        receiver = DatagramReceiver(short_dir / "late.sock")
        later = make_trigger(13.0)
        part.write_batch([later])
        assert part.flush()
        assert receiver.recv() == format_trigger(later)
        rows = [json.loads(line) for line in sends.read_text().splitlines()]
        assert [r["status"] for r in rows] == [UNHEARD, UNHEARD, SENT]
        assert all(r["to"] == f"unix://{short_dir}/late.sock" and r["sent_at_ns"] > 0 for r in rows)
    finally:
        part.close()
        if receiver is not None:
            receiver.close()


def test_a_receiver_that_stopped_reading_never_blocks_the_sink(short_dir: Path) -> None:
    receiver = DatagramReceiver(short_dir / "full.sock", rcvbuf=4096)
    part = TrigPubSink(f"unix://{short_dir}/full.sock").build_part("trig", "trig_pub", None)
    try:
        many = [make_trigger(float(s)) for s in range(2000)]
        part.write_batch(many)
        assert part.flush(timeout_s=30), "the sender blocked on a full receiver"
        assert part.outcomes[DROPPED] > 0 and part.outcomes[SENT] > 0
        assert part.outcomes[DROPPED] + part.outcomes[SENT] == len(many)
        assert receiver.recv() == format_trigger(many[0])  # what was taken is intact and in order
    finally:
        part.close()
        receiver.close()


def test_the_recovery_ledger_applies_to_datagram_trig(short_dir: Path) -> None:
    receiver = DatagramReceiver(short_dir / "r.sock")
    ledger = short_dir / "trig_sent.keys"
    sink = TrigPubSink(f"unix://{short_dir}/r.sock", ledger=ledger)
    first = make_trigger(3.0)
    part = sink.build_part("trig", "trig_pub", None)
    part.write_batch([first])
    assert part.flush()
    part.close()
    assert receiver.recv() == format_trigger(first)
    # A restart from an older snapshot (no resume state) replays the same trigger.
    resumed = sink.build_part("trig", "trig_pub", None)
    try:
        second = make_trigger(8.0)
        resumed.write_batch([first, second])
        assert resumed.flush()
        assert resumed.skipped_count == 1
        assert receiver.recv() == format_trigger(second)
        assert receiver.recv(timeout=0.2) is None
    finally:
        resumed.close()
        receiver.close()


def test_datagram_trig_in_a_dataflow(short_dir: Path) -> None:
    receiver = DatagramReceiver(short_dir / "flow.sock")
    wanted = [make_trigger(s) for s in (3.0, 8.0, 13.0)]
    flow = Dataflow("trig_unix_test")
    items = op.input("in", flow, TestingSource([("cam0", t) for t in wanted], batch_size=1))
    op.output("out", items, TrigPubSink(f"unix://{short_dir}/flow.sock"))
    try:
        run_main(flow)
        got: List[Optional[str]] = [receiver.recv() for _ in wanted]
    finally:
        receiver.close()
    assert got == [format_trigger(t) for t in wanted]


@pytest.mark.parametrize(
    "address",
    ["unix://relative/path", "udp://127.0.0.1:5", "tcp://127.0.0.1", "tcp://127.0.0.1:99999", "/tmp/x.sock", ""],
)
def test_bad_trig_addresses_are_refused_with_the_expected_shapes(address: str) -> None:
    with pytest.raises(AddressError, match="unix:///path|port|absolute"):
        parse_address(address, "TRIG", unix=True)
    with pytest.raises(ConfigError, match="TRIG address"):
        load_config({"FACEMOMENT_TRIG_ADDRESS": address or "x"})


def test_frame_addresses_do_not_take_datagram_sockets_obs_and_trig_do() -> None:
    with pytest.raises(AddressError, match="tcp://host:port"):
        parse_address("unix:///tmp/a.sock", "frame publisher")
    cfg = load_config({"FACEMOMENT_OBS_ADDRESS": "unix:///tmp/a.sock", "FACEMOMENT_OBS_INPUTS": "cam0=unix:///tmp/b.sock"})
    assert (cfg.output.obs_address, cfg.source.obs_inputs) == ("unix:///tmp/a.sock", ["cam0=unix:///tmp/b.sock"])
    with pytest.raises(ConfigError, match="OBS address 'unix://rel/a.sock' must name an absolute path"):
        load_config({"FACEMOMENT_OBS_ADDRESS": "unix://rel/a.sock"})
    cfg = load_config({"FACEMOMENT_TRIG_ADDRESS": "unix:///tmp/vb/trig.sock"})
    assert cfg.output.trig_address == "unix:///tmp/vb/trig.sock"
    # The default is where a stock visualbase ingest listens (--trig-socket /tmp/trig.sock).
    assert load_config({}).output.trig_address == "unix:///tmp/trig.sock"


def test_the_run_summary_counts_trig_sends(tmp_path: Path) -> None:
    from facemoment.runtime.summary import summarize

    rows = [{"key": f"cam0:{i}:x", "status": s} for i, s in enumerate([SENT, UNHEARD, UNHEARD, DROPPED])]
    (tmp_path / "trig_sends.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = summarize(tmp_path, tmp_path / "trace.jsonl")
    assert "TRIG sends: dropped 1, sent 1, unheard 2" in text


def test_a_trig_taken_but_not_yet_sent_is_sent_after_a_restart(short_dir: Path) -> None:
    """Killed between taking a trigger and sending it: the snapshot carries the TRIG text
    and the ledger does not name it yet, so the restarted sink sends it once."""
    import threading

    receiver = DatagramReceiver(short_dir / "k.sock")
    ledger = short_dir / "trig_sent.keys"
    sink = TrigPubSink(f"unix://{short_dir}/k.sock", ledger=ledger)
    stuck = sink.build_part("trig", "trig_pub", None)
    entered, release = threading.Event(), threading.Event()

    def never_sends(_text: str) -> str:  # the process dies before this send happens
        entered.set()
        release.wait(10)
        return DROPPED

    stuck.transport.send = never_sends  # type: ignore[method-assign]
    pending = make_trigger(3.0)
    stuck.write_batch([pending])
    assert entered.wait(5)
    state = stuck.snapshot()
    assert state["queued"] == [[pending.key, format_trigger(pending)]]
    assert not ledger.exists() or pending.key not in ledger.read_text().split()
    resumed = sink.build_part("trig", "trig_pub", state)
    try:
        assert resumed.flush()
        assert receiver.recv() == format_trigger(pending)
        resumed.write_batch([pending])  # replayed by the dataflow too: not sent again
        assert resumed.flush() and resumed.skipped_count == 1
        assert receiver.recv(timeout=0.2) is None
        assert pending.key in ledger.read_text().split()
    finally:
        release.set()
        stuck.close()
        resumed.close()
        receiver.close()
