"""The receive side alone, without Bytewax: SubReceiver (socket, thread, a connection
dropped for size or by the peer) and FrameReceiver (frames into the buffer, told to
the accounting)."""

from __future__ import annotations

import struct
import threading
from typing import Any, List

import numpy as np
import pytest
import zmq

from connectors.frame_accounting import FrameAccounting
from connectors.frame_buffer import FrameBuffer
from connectors.frame_receiver import FrameReceiver
from connectors.receiver import SubReceiver
from facemoment.core.records import Record
from facemoment.core.types import Frame

from conftest import wait_until
from test_zmq_source import TestPublisher, spec_parts


@pytest.fixture()
def context():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


class Collected:
    """What a SubReceiver handed on, as its thread hands it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: List[List[bytes]] = []
        self.dropped: List[bool] = []

    def handle(self, parts: List[Any]) -> None:
        with self.lock:
            self.messages.append([bytes(p) for p in parts])

    def on_dropped(self, refused: bool) -> None:
        with self.lock:
            self.dropped.append(refused)

    def topics(self) -> List[bytes]:
        with self.lock:
            return [m[1] for m in self.messages]


def receiver_for(pub: TestPublisher, got: Collected, **kwargs: Any) -> SubReceiver:
    return SubReceiver([pub.endpoint], b"frame", 1000, got.handle, name="test-sub", on_dropped=got.on_dropped, **kwargs)


def test_messages_reach_the_handler_in_order_and_close_unsubscribes(context: zmq.Context) -> None:
    pub = TestPublisher(context)
    got = Collected()
    receiver = receiver_for(pub, got)
    try:
        pub.wait_subscribed()
        for i in range(20):
            pub.send([b"frame", b"%d" % i])
        pub.send([b"other", b"not subscribed"])
        assert wait_until(lambda: len(got.topics()) == 20)
        assert got.topics() == [b"%d" % i for i in range(20)]
    finally:
        receiver.close()
    assert not receiver.alive and receiver.error is None
    assert pub.socket.poll(10_000) and pub.socket.recv() == b"\x00frame"
    receiver.close()  # idempotent
    pub.close()


def test_a_message_over_the_limit_is_refused_and_the_socket_replaced(context: zmq.Context) -> None:
    pub = TestPublisher(context)
    got = Collected()
    receiver = receiver_for(pub, got, max_message_bytes=1000)
    try:
        pub.wait_subscribed()
        pub.send([b"frame", b"before"])
        assert wait_until(lambda: got.topics() == [b"before"])
        pub.send([b"frame", b"x" * 2000])
        pub.wait_subscribed()  # the new socket subscribes anew
        pub.send([b"frame", b"after"])
        assert wait_until(lambda: got.topics() == [b"before", b"after"])
        assert got.dropped == [True]  # told on the receive thread before the new socket read anything
    finally:
        receiver.close()
        pub.close()


def test_a_publisher_gone_is_not_a_refused_message(context: zmq.Context) -> None:
    first = TestPublisher(context)
    endpoint = first.endpoint
    got = Collected()
    receiver = receiver_for(first, got, max_message_bytes=1000)
    try:
        first.wait_subscribed()
        first.close()
        second = TestPublisher(context, endpoint)
        try:
            second.wait_subscribed()
            assert wait_until(lambda: got.dropped == [False])
            # The old socket may have subscribed before it was replaced: send until one arrives.
            assert wait_until(lambda: second.send([b"frame", b"again"]) or got.topics())
            assert set(got.topics()) == {b"again"} and got.dropped == [False]
        finally:
            second.close()
    finally:
        receiver.close()


def test_a_handler_that_raises_stops_the_thread_with_the_reason(context: zmq.Context) -> None:
    pub = TestPublisher(context)

    def handle(parts: List[Any]) -> None:
        raise RuntimeError("cannot take this")

    receiver = SubReceiver([pub.endpoint], b"frame", 10, handle, name="test-sub")
    try:
        pub.wait_subscribed()
        pub.send([b"frame", b"x"])
        assert wait_until(lambda: not receiver.alive)
        assert receiver.error == "RuntimeError: cannot take this"
    finally:
        receiver.close()
        pub.close()


def test_frames_go_to_the_buffer_and_every_header_to_the_accounting(context: zmq.Context) -> None:
    pub = TestPublisher(context)
    accounting = FrameAccounting("cam0", pub.endpoint, (0, 1))
    buffer = FrameBuffer(0)
    receiver = FrameReceiver(pub.endpoint, "cam0", buffer, accounting, max_frame_bytes=1000)
    try:
        pub.wait_subscribed()
        for frame_id in (0, 1, 3):
            pub.send(spec_parts(frame_id))
        pub.send([b"frame", struct.pack("!QQIIB", 4, 0, 2, 2, 1), b"\0" * 3])  # payload_size
        pub.send([b"frame", b"x" * 2000])  # refused by ZeroMQ: a new socket
        pub.wait_subscribed()
        pub.send(spec_parts(4))
        items: List[Any] = []
        assert wait_until(lambda: items.extend(receiver.take()) or any(getattr(x, "frame_id", None) == 4 and isinstance(x, Frame) for x in items))
        assert [x.frame_id for x in items if isinstance(x, Frame)] == [0, 1, 3, 4]
        assert all(np.array_equal(x.image, np.full((4, 6, 3), x.frame_id, np.uint8)) for x in items if isinstance(x, Frame))
        assert [x.to_dict()["dropped_frame_ids"] for x in items if isinstance(x, Record) and x.TYPE == "frame_drop"] == [[2]]
        with receiver.lock:
            stats = accounting.counts()
        assert stats.malformed == {"payload_size": 1, "too_large": 1} and stats.reconnects == 1
        assert stats.frames_received == stats.frames_emitted == 4 and len(buffer) == 0
    finally:
        receiver.close()
        pub.close()
