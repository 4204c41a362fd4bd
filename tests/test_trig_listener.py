"""The TRIG subscriber the demo, tests and benchmark share."""

from __future__ import annotations

import time

import zmq

from facemoment.formats.wire import text_parts
from facemoment.runtime.loopback import free_port
from facemoment.runtime.trig_listener import TrigListener


def test_listener_keeps_every_message_of_its_topic_and_stops():
    address = f"tcp://127.0.0.1:{free_port()}"
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(address)
    seen: list = []
    listener = TrigListener(address, on_message=seen.append, poll_ms=10)
    listener.start()
    try:
        # A PUB drops what it sends before the subscription arrives: probe until one gets through.
        deadline = time.monotonic() + 30
        while not listener.received and time.monotonic() < deadline:
            pub.send_multipart(text_parts("TRIG probe"))
            time.sleep(0.02)  # probe period while the subscription is on its way
        assert listener.received, "no message reached the listener"
        pub.send_multipart([b"frame", b"not a trig"])
        pub.send_multipart(text_parts("TRIG_CLIP 1 2 reason"))
        deadline = time.monotonic() + 30
        while "TRIG_CLIP 1 2 reason" not in listener.texts and time.monotonic() < deadline:
            time.sleep(0.01)  # polling the condition above
    finally:
        listener.close()
        pub.close()
        ctx.term()
    assert not listener.is_alive()
    assert listener.texts[-1] == "TRIG_CLIP 1 2 reason"
    assert set(listener.texts[:-1]) == {"TRIG probe"}  # the frame topic was not subscribed
    assert seen == listener.texts
    assert all(isinstance(wall_ns, int) and wall_ns > 0 for wall_ns, _ in listener.received)
