"""OBS over Unix datagram sockets (the seed's `create_message_sender("uds", "/tmp/obs.sock")`),
and ipc:// addresses that would replace another program's socket file.

A visualbase-style receiver binds an AF_UNIX SOCK_DGRAM socket and reads one message
per datagram (64 KiB); senders connect to the path and send one UTF-8 text each.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator, List

import bytewax.operators as op
import pytest
import zmq
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, run_main

from connectors.obs_pub import ObsPubSink
from connectors.obs_source import ObsSource
from connectors.text_transports import SENT, UNHEARD, BindError, UnixDatagramTransport, ZmqTextTransport
from facemoment.core.config import ConfigError, load_config
from facemoment.core.records import Record
from facemoment.core.types import FramePresence, Observation
from facemoment.formats.obs import format_obs, parse_obs
from facemoment.runtime import preflight

from conftest import PYTHON, REPO


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="fm", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def datagram_receiver(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    return sock


def recv_all(sock: socket.socket, count: int, timeout: float = 30.0) -> List[str]:
    sock.settimeout(timeout)
    return [sock.recv(65536).decode("utf-8") for _ in range(count)]


def marker(i: int) -> Observation:
    return FramePresence("cam0", i, i * 100_000_000)


def test_obs_out_is_one_datagram_of_obs_text_per_observation_then_end(short_dir: Path) -> None:
    receiver = datagram_receiver(short_dir / "obs.sock")
    part = ObsPubSink(f"unix://{short_dir}/obs.sock", publisher="b1", subscriber_wait_s=5).build_part("obs", "obs_pub", None)
    try:
        part.write_batch([marker(3), Observation("quality", "cam0", 3, 300_000_000, signals={"blur": 150.0, "brightness": 120.0, "contrast": 60.0})])
        part.close()
        got = recv_all(receiver, 3)
    finally:
        receiver.close()
    assert got[0] == format_obs(marker(3), extended=True, publisher="b1")
    assert parse_obs(got[1]).source == "quality" and parse_obs(got[1]).frame_id == 3
    assert got[2].startswith("OBS src=end frame=3 ") and "pub=b1" in got[2]
    assert part.outcomes[SENT] == 2 and part.outcomes["end_sent"] == 1


def test_the_first_obs_waits_for_the_fusion_to_bind_and_a_full_queue_waits_for_room(short_dir: Path) -> None:
    path = short_dir / "late.sock"
    transport = UnixDatagramTransport(str(path), first_wait_s=60, room_wait_s=60)
    texts = [format_obs(marker(i), extended=True, publisher="b1") for i in range(200)]  # far more than a queue holds
    statuses: List[str] = []
    sender = threading.Thread(target=lambda: statuses.extend(transport.send(t) for t in texts))
    sender.start()  # nobody bound yet: the first send waits
    receiver = datagram_receiver(path)
    try:
        got = recv_all(receiver, len(texts))
    finally:
        sender.join(60)
        transport.close()
        receiver.close()
    assert got == texts and statuses == [SENT] * len(texts)


def test_a_datagram_sender_with_nobody_bound_does_not_wait_by_default(short_dir: Path) -> None:
    transport = UnixDatagramTransport(str(short_dir / "none.sock"))
    assert transport.send("OBS src=frame frame=1 t_ns=1") == UNHEARD
    transport.close()


def test_several_extractors_send_into_one_fusion_socket(short_dir: Path) -> None:
    address = f"unix://{short_dir}/obs.sock"
    source = ObsSource("cam0", [address], connect_timeout_s=60, publishers=2)
    got: List[Any] = []
    flow = Dataflow("obs_unix_in")
    op.output("out", op.input("in", flow, source), TestingSink(got))

    def extractor(name: str, sources: List[str]) -> None:
        part = ObsPubSink(address, publisher=name, subscriber_wait_s=60).build_part("obs", "obs_pub", None)
        for i in range(0, 30, 3):  # a proxy stream: ids advance by 3
            part.write_batch([marker(i)] + [Observation(s, "cam0", i, i * 100_000_000) for s in sources])
        part.write_batch([FramePresence("cam0", 30, 3_000_000_000)])
        part.close()

    senders = [
        threading.Thread(target=extractor, args=("b1", ["quality"])),
        threading.Thread(target=extractor, args=("b2", ["gesture"])),
    ]
    for s in senders:
        s.start()
    try:
        run_main(flow)  # ends when both publishers said end
    finally:
        for s in senders:
            s.join(60)
    observations = [o for o in got if isinstance(o, Observation)]
    records = [r.to_dict() for r in got if isinstance(r, Record)]
    assert sorted((o.source, o.frame_id) for o in observations if o.source != "frame") == sorted(
        [("quality", i) for i in range(0, 30, 3)] + [("gesture", i) for i in range(0, 30, 3)]
    )
    (summary,) = [r for r in records if r["record_type"] == "source_summary"]
    assert summary["address"] == address and summary["end_reason"] == "publishers_ended"
    assert summary["publishers"] == ["b1", "b2"] and summary["publishers_ended"] == ["b1", "b2"]
    assert summary["obs_received"]["frame"] == 22 and summary["lost_on_wire"] == 0
    assert not os.path.exists(short_dir / "obs.sock")  # the bound socket file is removed at the end


def test_obs_addresses_take_unix_and_obs_publishers_has_a_range() -> None:
    cfg = load_config({"FACEMOMENT_OBS_INPUTS": "unix:///tmp/obs.sock", "FACEMOMENT__SOURCE__OBS_PUBLISHERS": "2"})
    assert cfg.source.obs_publishers == 2
    with pytest.raises(ConfigError, match="obs_publishers"):
        load_config({"FACEMOMENT__SOURCE__OBS_PUBLISHERS": "-1"})


def test_an_obs_input_socket_another_process_is_bound_to_is_refused(short_dir: Path) -> None:
    taken = datagram_receiver(short_dir / "obs.sock")
    try:
        cfg = load_config({"FACEMOMENT_OBS_INPUTS": f"unix://{short_dir}/obs.sock", "FACEMOMENT_TRIG_ADDRESS": "none",
                           "FACEMOMENT_OUTPUT_DIR": str(short_dir / "out")})
        with pytest.raises(ConfigError, match="another process is bound"):
            preflight.check(cfg)
    finally:
        taken.close()
    preflight.check(cfg)  # a stale file is no obstacle: it is replaced at bind


# ---------------------------------------------------------------- ipc:// onto a socket that is not ZeroMQ's


def test_ipc_onto_a_datagram_socket_is_refused_naming_unix_and_the_socket_survives(short_dir: Path) -> None:
    path = short_dir / "trig.sock"
    visualbase = datagram_receiver(path)
    try:
        message = preflight.ipc_conflict(f"ipc://{path}", "TRIG")
        assert message is not None and f"use unix://{path}" in message and "datagram" in message
        with pytest.raises(BindError, match=f"unix://{path}"):
            ZmqTextTransport(f"ipc://{path}", b"msg", 0, "OBS")
        assert preflight.bind_error(f"ipc://{path}") is not None
        # visualbase still owns its socket: a TRIG sent to it arrives.
        sender = UnixDatagramTransport(str(path))
        assert sender.send("TRIG label=highlight t_start_ns=1 t_end_ns=2 faces=1 score=0.500 reason=x") == SENT
        sender.close()
        assert recv_all(visualbase, 1, timeout=5)[0].startswith("TRIG label=highlight")
    finally:
        visualbase.close()


def test_ipc_onto_a_stale_stream_socket_is_fine_onto_a_live_zmq_one_is_in_use(short_dir: Path) -> None:
    stale = short_dir / "stale"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(stale))
    sock.close()  # the file stays, nobody listens: what a killed ZeroMQ run leaves
    assert preflight.ipc_conflict(f"ipc://{stale}") is None
    ctx = zmq.Context()
    live = ctx.socket(zmq.PUB)
    live.bind(f"ipc://{short_dir}/live")
    try:
        assert "in use" in (preflight.ipc_conflict(f"ipc://{short_dir}/live") or "")
    finally:
        live.close(linger=0)
        ctx.term()
    (short_dir / "plain").write_text("x")
    assert "not a socket" in (preflight.ipc_conflict(f"ipc://{short_dir}/plain") or "")
    assert preflight.ipc_conflict(f"ipc://{short_dir}/none") is None


def test_a_run_with_ipc_at_visualbase_trig_socket_stops_at_start_with_one_line(flow_env, short_dir: Path) -> None:
    path = short_dir / "trig.sock"
    visualbase = datagram_receiver(path)
    try:
        env = dict(flow_env, FACEMOMENT_SOURCE="tcp://127.0.0.1:9", FACEMOMENT_TRIG_ADDRESS=f"ipc://{path}")
        run = subprocess.run([PYTHON, "-m", "bytewax.run", "dataflows.facemoment"], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 2
        (line,) = [x for x in run.stderr.splitlines() if x.startswith("facemoment: error:")]
        assert f"use unix://{path}" in line
        assert os.path.exists(path) and socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"x", str(path)) == 1
    finally:
        visualbase.close()
