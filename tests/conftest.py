"""Shared test helpers: free loopback ports and environment for dataflow subprocesses."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from facemoment.runtime.loopback import free_port  # noqa: F401  (tests import it from here)

REPO = Path(__file__).resolve().parents[1]


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
