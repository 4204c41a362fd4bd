"""A TRIG subscriber as visualbase runs one: for the demo, tests and the benchmark."""

from __future__ import annotations

import threading
import time
from typing import Callable, List, Optional, Tuple

import zmq

from facemoment.formats.wire import MSG_TOPIC


class TrigListener(threading.Thread):
    """A SUB on a TRIG address; keeps (wall-clock ns, text) of every message.

    The socket connects in the constructor, before the thread starts, so a listener
    made before the publisher starts misses nothing the publisher sends once the
    subscription has reached it. `stop` ends the thread after it has taken in what
    had already arrived.
    """

    def __init__(self, address: str, on_message: Optional[Callable[[str], None]] = None,
                 topic: bytes = MSG_TOPIC, poll_ms: int = 50) -> None:
        super().__init__(name="trig-listener", daemon=True)
        self.received: List[Tuple[int, str]] = []
        self.stop = threading.Event()
        self._on_message = on_message
        self._poll_ms = poll_ms
        self._ctx = zmq.Context()
        self._sub = self._ctx.socket(zmq.SUB)
        self._sub.setsockopt(zmq.LINGER, 0)
        self._sub.setsockopt(zmq.SUBSCRIBE, topic)
        self._sub.connect(address)

    @property
    def texts(self) -> List[str]:
        return [text for _wall_ns, text in self.received]

    def run(self) -> None:
        try:
            while True:
                stopping = self.stop.is_set()
                while self._sub.poll(0 if stopping else self._poll_ms):
                    parts = self._sub.recv_multipart(zmq.NOBLOCK)
                    text = parts[-1].decode("utf-8", "replace")
                    self.received.append((time.time_ns(), text))
                    if self._on_message is not None:
                        self._on_message(text)
                if stopping:
                    break
        finally:
            self._sub.close()
            self._ctx.term()

    def close(self, timeout: float = 10.0) -> None:
        self.stop.set()
        if self.is_alive():
            self.join(timeout)
