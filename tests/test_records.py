"""Typed trace records: one class per record type, its level declared once, the JSON
shape the jq recipes read, and the trace sink's level filter working from the types."""

from __future__ import annotations

import ast
import json
import pickle
from pathlib import Path

import pytest

from connectors.trace_sink import TraceSink
from facemoment.core.records import (
    RECORD_TYPES,
    FrameDrop,
    Level,
    SourceSummary,
    Timing,
    TriggerFire,
    level_of,
)

from conftest import REPO, rec

# The record types the product writes, with their minimum level (observability.md).
LEVELS = {
    "trigger_fire": Level.MINIMAL,
    "fps_summary": Level.MINIMAL,
    "source_summary": Level.MINIMAL,
    "source_error": Level.MINIMAL,
    "malformed_message": Level.MINIMAL,
    "obs_drop": Level.MINIMAL,
    "publisher_restart": Level.MINIMAL,
    "timing": Level.NORMAL,
    "frame_drop": Level.NORMAL,
    "sync_delay": Level.NORMAL,
    "trigger_decision": Level.NORMAL,
    "gate_change": Level.NORMAL,
    "frame_extract": Level.NORMAL,
    "out_of_order": Level.NORMAL,
    "invalid_observation": Level.NORMAL,
    "gate_condition": Level.VERBOSE,
}


def test_every_record_type_is_registered_with_its_level():
    for record_type, level in LEVELS.items():
        assert record_type in RECORD_TYPES, record_type
        assert level_of(record_type) == level, record_type


def test_product_code_builds_records_only_from_the_types():
    """No record is spelled as a dict literal with a record_type key outside records.py."""
    offenders = []
    for folder in ("facemoment", "operators", "connectors", "dataflows"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path.name == "records.py" or "tools" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Dict) and any(
                    isinstance(k, ast.Constant) and k.value == "record_type" for k in node.keys
                ):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


def test_shape_record_type_first_then_fields_in_order_optional_left_out():
    drop = FrameDrop(frame_id=9, stream="cam0", dropped_frame_ids=[6, 7, 8], reason="backpressure", queue_depth=8)
    assert list(drop.to_dict()) == ["record_type", "frame_id", "stream", "dropped_frame_ids", "reason", "queue_depth"]
    wire = FrameDrop(frame_id=5, stream="cam0", dropped_frame_ids=[3, 4], dropped_count=2, reason="queue_full",
                     where="wire", queue_depth=0)
    assert list(wire.to_dict()) == [
        "record_type", "frame_id", "stream", "dropped_frame_ids", "dropped_count", "reason", "where", "queue_depth",
    ]
    # A required field that is None is still written (null), as before.
    timing = Timing(frame_id=1, stream="cam0", component="fusion_process", processing_ms=0.1, queue_depth=None,
                    threshold_ms=None, is_slow=False)
    assert timing.to_dict()["queue_depth"] is None and "late" not in timing.to_dict()
    summary = SourceSummary(stream="cam0", address="tcp://x", end_reason="idle_timeout", duration_s=1.0, frames_received=3)
    assert "error" not in summary.to_dict() and summary.to_dict()["frames_received"] == 3


def test_records_pickle_and_survive_json():
    for record in (
        rec("trigger_fire", stream="cam0", frame_id=1, t_ns=2, event_t_ns=1, reason="x", score=0.5, pre_sec=2.0,
            post_sec=2.0, face_count=1, label="highlight"),
        rec("gate_condition", stream="cam0", frame_id=1, t_ns=2, face_observed=True,
            conditions={"yaw": {"value": 0.0, "pass": True}}, all_pass=True, gate_open=False),
    ):
        assert pickle.loads(pickle.dumps(record)) == record
        assert json.loads(json.dumps(record.to_dict())) == record.to_dict()


def test_fields_are_keywords_only():
    with pytest.raises(TypeError):
        TriggerFire("cam0", 1, 2, 1, "x", 0.5, 2.0, 2.0, 1, "highlight")  # type: ignore[misc]


@pytest.mark.parametrize("level", ["off", "minimal", "normal", "verbose"])
def test_trace_sink_keeps_records_at_or_below_its_level(tmp_path: Path, level: str):
    records = [
        rec("trigger_fire", stream="cam0", frame_id=1, t_ns=2, reason="x"),
        rec("timing", frame_id=1, stream="cam0", component="face", processing_ms=1.0, is_slow=False),
        rec("gate_condition", stream="cam0", frame_id=1, t_ns=2, conditions={}, gate_open=False),
        {"record_type": "not_yet_typed", "stream": "cam0"},  # plain dicts count as normal
    ]
    path = tmp_path / "trace.jsonl"
    part = TraceSink(path, level).build_part("trace", "trace.jsonl", None)
    part.write_batch(records)
    part.close()
    written = [json.loads(line)["record_type"] for line in path.read_text().splitlines()]
    expected = {
        "off": [],
        "minimal": ["trigger_fire"],
        "normal": ["trigger_fire", "timing", "not_yet_typed"],
        "verbose": ["trigger_fire", "timing", "gate_condition", "not_yet_typed"],
    }[level]
    assert written == expected
