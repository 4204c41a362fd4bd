"""Shared test helpers: free loopback ports and environment for dataflow subprocesses."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import pytest

from facemoment.core.records import RECORD_TYPES, Record
from facemoment.runtime.loopback import free_port  # noqa: F401  (tests import it from here)


def rec(record_type: str, **fields) -> Record:
    """A typed trace record with the given fields, the others None (tests import it from here)."""
    cls = RECORD_TYPES[record_type]
    return cls(**{**{f.name: None for f in dataclasses.fields(cls)}, **fields})

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
