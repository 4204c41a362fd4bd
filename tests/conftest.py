"""Shared test helpers: free loopback ports and environment for dataflow subprocesses."""

from __future__ import annotations

import os
import random
import socket
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A free loopback port below the ephemeral range.

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


def _flow_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACEMOMENT", "BYTEWAX"))}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture
def flow_env(tmp_path):
    """Environment for running `python -m bytewax.run dataflows.facemoment` in a subprocess."""
    env = _flow_env()
    env["FACEMOMENT_OUTPUT_DIR"] = str(tmp_path / "out")
    return env


@pytest.fixture(scope="module")
def module_flow_env():
    return _flow_env()


PYTHON = sys.executable
