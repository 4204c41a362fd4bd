"""Free loopback ports for local runs (tests, benchmarks, demos)."""

from __future__ import annotations

import random
import socket


def free_port() -> int:
    """A free 127.0.0.1 port below the ephemeral range.

    A ZMQ socket that connects before its peer binds keeps retrying; on an
    ephemeral port such a retry can connect to itself and hold the port.
    """
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port in 20000-32000")
