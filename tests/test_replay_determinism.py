"""Replaying one recording gives the same triggers.jsonl every time, whatever the
worker or process count (wall-clock fields aside)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

import pytest


from conftest import PYTHON, free_port, run_env, run_flows, write_sample_recording

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    return write_sample_recording(tmp_path_factory.mktemp("rec") / "sample.fmrec")


def _env(base: Dict[str, str], source: Path, out: Path) -> Dict[str, str]:
    return run_env(base, source, out, FACEMOMENT_PRESET="batch", FACEMOMENT__EXTRACT__EXTRACTORS="face,quality")


def _replay(cmds: List[List[str]], env: Dict[str, str], out: Path) -> List[Dict]:
    run_flows(cmds, env)
    rows = [json.loads(line) for line in (out / "triggers.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("written_at")  # the only wall-clock field
    return rows


RUN = [PYTHON, "-m", "bytewax.run", "dataflows.facemoment"]


def test_replays_are_identical_across_runs_workers_and_processes(recording, module_flow_env, tmp_path):
    runs = {}
    for name, cmds in {
        "first": [RUN],
        "again": [RUN],
        "three_workers": [RUN + ["-w", "3"]],
        "two_processes": [[PYTHON, "-m", "bytewax.testing", "dataflows.facemoment", "-p", "2"]],
    }.items():
        out = tmp_path / name
        runs[name] = _replay(cmds, _env(module_flow_env, recording, out), out)
    addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(2))
    out = tmp_path / "cluster"
    runs["cluster"] = _replay([RUN + ["-i", str(i), "-a", addresses] for i in range(2)], _env(module_flow_env, recording, out), out)
    assert runs["first"], "the sample's recording should trigger"
    for name, rows in runs.items():
        assert rows == runs["first"], name
    # Clips of a replay are cut from the recording itself: pre + post seconds each.
    manifest = [json.loads(line) for line in (tmp_path / "first" / "clips" / "clips.jsonl").read_text().splitlines()]
    assert sorted(m["key"] for m in manifest) == sorted(r["key"] for r in runs["first"])
    assert all(m["status"] == "ok" and abs(m["duration_s"] - 4.0) <= 0.2 for m in manifest), manifest
