"""OBS over the wire: the extended text, the OBS publisher and the OBS input connector.

Peers are built from the protocol (shared spec): OBS publishers are PUB-type
sockets sending [b"msg", text]; subscribers are SUB sockets on topic msg; the
reader of OBS text splits `key=value` tokens and `key:value` attributes as the
spec describes, ignoring keys it does not know.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List

import bytewax.operators as op
import pytest
import zmq
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main

from connectors.obs_pub import ObsPubSink
from connectors.obs_source import ObsSource
from facemoment.core.records import Record
from facemoment.core.types import Face, FramePresence, Hand, Observation, Pose
from facemoment.formats.obs import format_obs, parse_obs, parse_obs_from
from facemoment.formats.wire import WireError
from facemoment.runtime.subscriptions import SubscriberCount

FACE = Face(
    2, 0.91234567, (0.1234567, 0.2, 0.3, 0.35), yaw=-0.04, pitch=7.25, roll=-3.5, expression=0.45678,
    inside_frame=False, area_ratio=0.105, center_distance=0.2718281828,
)
POSE = Pose(1, 0.8765, [(0.1 * i, 0.05 * i, 0.9) for i in range(17)], hand_raised=True)
HAND = Hand(0, 0.97, "Right", [], gesture="v_sign", gesture_confidence=0.5004)


def spec_read(text: str) -> Dict[str, Any]:
    """OBS text as the spec describes it: kind word, key=value pairs, attrs key:value."""
    tokens = text.split()
    assert tokens[0] == "OBS"
    out: Dict[str, Any] = {}
    for token in tokens[1:]:
        if "=" in token:
            key, value = token.split("=", 1)
            if ":" in value:
                pairs = [item.split(":") for item in value.split(",")]
                assert all(len(p) == 2 for p in pairs), f"{value!r} breaks key:value pairs"
                out[key] = dict(pairs)
            else:
                out[key] = value
        else:
            pairs = [item.split(":") for item in token.split(",")]
            assert all(len(p) == 2 for p in pairs)
            out["values"] = dict(pairs)
    return out


def test_extended_obs_carries_what_fusion_uses_exactly() -> None:
    face = parse_obs(format_obs(Observation("face", "cam0", 5, 6, faces=[FACE], processing_ms=12.5), extended=True))
    assert face.faces == [FACE]  # every field, full precision
    assert face.processing_ms == 12.5
    pose = parse_obs(format_obs(Observation("pose", "", 5, 6, poses=[POSE], signals={"p0_wc": 2.0}), extended=True))
    assert pose.poses == [POSE] and pose.signals["p0_wc"] == 2.0
    hands = parse_obs(format_obs(Observation("gesture", "", 5, 6, hands=[HAND]), extended=True)).hands
    assert hands[0].gesture_confidence == 0.5004 and hands[0].confidence == 0.97 and hands[0].gesture == "v_sign"
    failed = Observation("face", "", 5, 6, error="model crashed: out of memory")
    back, publisher = parse_obs_from(format_obs(failed, extended=True, publisher="gpu box:1"))
    assert back.error == "model_crashed_out_of_memory" and back.faces == []
    assert publisher == "gpu_box_1"
    marker = parse_obs(format_obs(FramePresence("", 9, 10), extended=True))
    assert isinstance(marker, FramePresence) and (marker.source, marker.frame_id, marker.t_ns) == ("frame", 9, 10)


@pytest.mark.parametrize(
    "obs",
    [
        Observation("face", "", 5, 6, faces=[FACE]),
        Observation("pose", "", 5, 6, poses=[POSE], signals={"p0_hw": 1.0, "p0_wc": 3.0}),
        Observation("gesture", "", 5, 6, hands=[HAND]),
        Observation("quality", "", 5, 6, signals={"blur": 150.0, "brightness": 120.0, "contrast": 60.0, "quality_gate": 1.0}),
    ],
)
def test_a_spec_reader_sees_the_same_fields_in_extended_obs(obs: Observation) -> None:
    plain = spec_read(format_obs(obs))
    extended = spec_read(format_obs(obs, extended=True, publisher="b1"))
    for key, value in plain.items():
        if isinstance(value, dict):
            assert {k: extended[key][k] for k in value} == value
        else:
            assert extended[key] == value


def test_malformed_extended_fields_are_wire_errors() -> None:
    with pytest.raises(WireError):
        parse_obs("OBS src=face frame=1 t_ns=2 faces=1 f0=id:0,conf:0.9,x:0,y:0,w:1,h:1,fx:1~2")
    with pytest.raises(WireError):
        parse_obs("OBS src=pose frame=1 t_ns=2 poses=1 p0=id:0,conf:0.9,hr:0,hw:0,px:0.9~1~2")


# ------------------------------------------------------------------ the publisher


def msg_subscriber(ctx: zmq.Context, address: str) -> zmq.Socket:
    """A text-message subscriber as the spec describes it: SUB on topic msg."""
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"msg")
    sub.connect(address)
    return sub


def test_obs_pub_sends_one_spec_message_per_observation(tmp_path: Path) -> None:
    address = f"ipc://{tmp_path}/obs.sock"
    ctx = zmq.Context()
    sub = msg_subscriber(ctx, address)
    part = ObsPubSink(address, b"msg", publisher="b1", subscriber_wait_s=10).build_part("obs", "obs_pub", None)
    try:
        items = [
            FramePresence("cam0", 7, 700),
            Observation("face", "cam0", 7, 700, faces=[FACE]),
            Observation("quality", "cam0", 7, 700, signals={"blur": 1.0, "brightness": 2.0, "contrast": 3.0}),
        ]
        part.write_batch(items)
        got = []
        while len(got) < 3 and sub.poll(5000):
            got.append(sub.recv_multipart())
    finally:
        part.close()
        sub.close()
        ctx.term()
    assert [topic for topic, _ in got] == [b"msg"] * 3
    texts = [text.decode() for _, text in got]
    assert texts[1].startswith(
        "OBS src=face frame=7 t_ns=700 faces=1 f0=id:2,conf:0.912,x:0.1235,y:0.2000,w:0.3000,h:0.3500,expr:0.457,yaw:-0.0,pitch:7.2"
    )
    assert re.match(r"^OBS src=quality frame=7 t_ns=700 blur:1\.0,bright:2\.0,contrast:0\.012,gate:0 ", texts[2])
    assert all(" pub=b1 " in t for t in texts)
    assert part.outcomes["sent"] == 3


# ------------------------------------------------------------------ the input connector


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="fm", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class SpecPublisher:
    """An OBS publisher: binds, waits for the subscriber, sends [b"msg", text]."""

    def __init__(self, ctx: zmq.Context, address: str) -> None:
        self.sock = ctx.socket(zmq.XPUB)  # a PUB to its peers; XPUB only to see the subscription
        self.sock.setsockopt(zmq.LINGER, 2000)
        self.sock.bind(address)
        self.subscribers = SubscriberCount(self.sock, b"msg")

    def send_all(self, texts: List[str]) -> None:
        assert self.subscribers.wait_for(1, timeout=10)
        for text in texts:
            self.sock.send_multipart([b"msg", text.encode()])

    def close(self) -> None:
        self.sock.close()


def test_obs_source_merges_publishers_and_accounts_for_gaps_and_garbage(short_dir: Path) -> None:
    ctx = zmq.Context()
    a_addr, b_addr = f"ipc://{short_dir}/a", f"ipc://{short_dir}/b"
    a, b = SpecPublisher(ctx, a_addr), SpecPublisher(ctx, b_addr)
    face_texts = []
    for i in range(6):
        if i == 3:
            continue  # publisher a never got frame 3
        face_texts.append(format_obs(FramePresence("", i, i * 100), extended=True, publisher="a"))
        face_texts.append(format_obs(Observation("face", "", i, i * 100, faces=[FACE]), extended=True, publisher="a"))
    face_texts.append("OBS src=face frame=x t_ns=1")  # malformed: counted, skipped
    pose_texts = []
    for i in range(6):
        pose_texts.append(format_obs(FramePresence("", i, i * 100), extended=True, publisher="b"))
        pose_texts.append(format_obs(Observation("pose", "", i, i * 100, poses=[POSE]), extended=True, publisher="b"))
    senders = [threading.Thread(target=p.send_all, args=(t,)) for p, t in ((a, face_texts), (b, pose_texts))]
    for s in senders:
        s.start()
    got: List[Any] = []
    flow = Dataflow("obs_source_test")
    items = op.input("in", flow, ObsSource("cam7", [a_addr, b_addr], idle_timeout_s=1.0, connect_timeout_s=20))
    op.output("out", items, TestingSink(got))
    try:
        run_main(flow)
    finally:
        for s in senders:
            s.join(10)
        a.close()
        b.close()
        ctx.term()
    observations = [x for x in got if isinstance(x, Observation)]
    records = [x.to_dict() for x in got if isinstance(x, Record)]
    assert all(o.stream_id == "cam7" and o.extract_wall_ns > 0 for o in observations)
    assert sorted((o.source, o.frame_id) for o in observations if o.source != "frame") == sorted(
        [("face", i) for i in (0, 1, 2, 4, 5)] + [("pose", i) for i in range(6)]
    )
    assert [o.faces for o in observations if o.source == "face"][0] == [FACE]
    (drop,) = [r for r in records if r["record_type"] == "frame_drop"]
    assert (drop["dropped_frame_ids"], drop["publisher"], drop["where"]) == ([3], "a", "obs")
    (bad,) = [r for r in records if r["record_type"] == "malformed_message"]
    assert bad["kind"] == "obs" and bad["count"] == 1
    (summary,) = [r for r in records if r["record_type"] == "source_summary"]
    assert summary["obs_received"] == {"frame": 11, "face": 5, "pose": 6}
    assert (summary["malformed_obs"], summary["lost_on_wire"], summary["end_reason"]) == (1, 1, "idle_timeout")
    assert summary["publishers"] == ["a", "b"]


def test_obs_source_ends_when_every_publisher_said_end(short_dir: Path) -> None:
    ctx = zmq.Context()
    addresses = [f"ipc://{short_dir}/e1", f"ipc://{short_dir}/e2"]
    pubs = [SpecPublisher(ctx, a) for a in addresses]
    texts = [
        [format_obs(Observation(src, "", 0, 0), extended=True, publisher=name) for src in ("frame", "end")]
        for name in ("e1", "e2")
    ]
    senders = [threading.Thread(target=p.send_all, args=(t,)) for p, t in zip(pubs, texts)]
    for s in senders:
        s.start()
    got: List[Any] = []
    flow = Dataflow("obs_end_test")
    # No idle timeout: only the end messages can end this stream.
    op.output("out", op.input("in", flow, ObsSource("cam0", addresses, connect_timeout_s=20)), TestingSink(got))
    try:
        run_main(flow)
    finally:
        for s in senders:
            s.join(10)
        for p in pubs:
            p.close()
        ctx.term()
    assert [o.source for o in got if isinstance(o, (Observation, FramePresence))] == ["frame", "frame"]  # no "end" goes on
    (summary,) = [r.to_dict() for r in got if isinstance(r, Record) and r.TYPE == "source_summary"]
    assert summary["end_reason"] == "publishers_ended" and summary["publishers_ended"] == ["e1", "e2"]


def test_obs_pub_says_end_when_it_closes(tmp_path: Path) -> None:
    address = f"ipc://{tmp_path}/end.sock"
    ctx = zmq.Context()
    sub = msg_subscriber(ctx, address)
    part = ObsPubSink(address, b"msg", publisher="b9", subscriber_wait_s=10).build_part("obs", "obs_pub", None)
    part.write_batch([FramePresence("cam0", 41, 4100)])
    part.close()
    got = []
    while len(got) < 2 and sub.poll(5000):
        got.append(sub.recv_multipart()[1].decode())
    sub.close()
    ctx.term()
    assert got[1] == "OBS src=end frame=41 t_ns=4100 pub=b9 ms=0.000"


def test_a_publisher_ahead_waits_for_the_slower_one(short_dir: Path) -> None:
    """Emitted in event-time order across publishers, though one sent everything first."""
    ctx = zmq.Context()
    addresses = [f"ipc://{short_dir}/fast", f"ipc://{short_dir}/slow"]
    fast, slow = (SpecPublisher(ctx, a) for a in addresses)

    def texts(name: str, src: str) -> List[str]:
        out = []
        for i in range(8):
            out.append(format_obs(FramePresence("", i, i * 100), extended=True, publisher=name))
            out.append(format_obs(Observation(src, "", i, i * 100), extended=True, publisher=name))
        return out + [format_obs(Observation("end", "", 7, 700), extended=True, publisher=name)]

    got: List[Any] = []
    flow = Dataflow("obs_hold_test")
    source = ObsSource("cam0", addresses, connect_timeout_s=20, hold_s=60)
    op.output("out", op.input("in", flow, source), TestingSink(got))
    runner = threading.Thread(target=run_main, args=(flow,))
    runner.start()
    try:
        fast.send_all(texts("fast", "face"))
        # The slow one starts only once the fast one is done: without holding back,
        # all of the fast one's observations would go first.
        slow.send_all(texts("slow", "pose"))
        runner.join(30)
        assert not runner.is_alive()
    finally:
        fast.close()
        slow.close()
        ctx.term()
    times = [o.t_ns for o in got if isinstance(o, (Observation, FramePresence))]
    assert len(times) == 32
    assert times == sorted(times)
