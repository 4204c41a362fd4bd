"""`facemoment trace summary`: exact numbers from traces with known contents, bad lines, bad paths."""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest

from facemoment.tools.trace_reader import percentile
from facemoment.tools.trace_summary import summarize_trace
from facemoment.tools.trace_tools import add_trace_args


def run_cli(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="facemoment")
    add_trace_args(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def write_trace(path: Path, records: List[Dict[str, Any]], tail: str = "") -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
    return path


def timing(frame_id: int, component: str, ms: Any, slow: bool = False) -> Dict[str, Any]:
    return {"record_type": "timing", "frame_id": frame_id, "stream": "cam0", "component": component,
            "processing_ms": ms, "queue_depth": 0, "threshold_ms": 35.0, "is_slow": slow}


def known_records() -> List[Dict[str, Any]]:
    records = [
        timing(0, "face", 10.0), timing(1, "face", 20.0), timing(2, "face", 30.0), timing(3, "face", 40.0, slow=True),
        timing(0, "quality", 5.0), timing(1, "quality", 7.0),
        timing(0, "orchestrator", 50.0, slow=True), timing(1, "orchestrator", 60.0, slow=True),
        timing(2, "face", "fast"),  # wrong type: skipped and counted
        {"record_type": "frame_drop", "frame_id": 1, "stream": "cam0", "dropped_frame_ids": [1],
         "reason": "timeout", "extractors": ["face"], "queue_depth": 1},
        {"record_type": "frame_drop", "frame_id": 2, "stream": "cam0", "dropped_frame_ids": [2],
         "reason": "timeout", "extractors": ["face", "quality"], "queue_depth": 2},
        {"record_type": "frame_drop", "frame_id": 9, "stream": "cam0", "dropped_frame_ids": [3, 4, 5],
         "dropped_count": 3, "reason": "backpressure", "queue_depth": 4},
        # A wire gap longer than the listed ids: dropped_count has the total.
        {"record_type": "frame_drop", "frame_id": 30, "stream": "cam0", "dropped_frame_ids": [6, 7],
         "dropped_count": 12, "reason": "queue_full", "queue_depth": 0},
        {"record_type": "sync_delay", "frame_id": 1, "stream": "cam0", "expected_ns": 33, "actual_ns": None,
         "delay_ms": 10.0, "waiting_for": ["face", "quality"], "late": False},
        {"record_type": "sync_delay", "frame_id": 2, "stream": "cam0", "expected_ns": 66, "actual_ns": None,
         "delay_ms": 30.0, "waiting_for": ["face"], "late": False},
        {"record_type": "sync_delay", "frame_id": 2, "stream": "cam0", "expected_ns": 66, "actual_ns": 99,
         "delay_ms": 50.0, "waiting_for": ["quality"], "late": True},
        {"record_type": "gate_change", "stream": "cam0", "frame_id": 3, "t_ns": 100, "gate_open": True},
        {"record_type": "gate_change", "stream": "cam0", "frame_id": 5, "t_ns": 200, "gate_open": False},
        {"record_type": "gate_change", "stream": "cam0", "frame_id": 7, "t_ns": 300, "gate_open": True},
        {"record_type": "trigger_fire", "stream": "cam0", "frame_id": 8, "t_ns": 2_000_000_000, "event_t_ns": 0,
         "reason": "camera_gaze", "score": 0.6, "pre_sec": 2.0, "post_sec": 2.0, "face_count": 1},
        {"record_type": "trigger_fire", "stream": "cam0", "frame_id": 9, "t_ns": 5_000_000_000, "event_t_ns": 0,
         "reason": "camera_gaze", "score": 0.8, "pre_sec": 2.0, "post_sec": 2.0, "face_count": 1},
        {"record_type": "trigger_fire", "stream": "cam0", "frame_id": 10, "t_ns": 9_000_000_000, "event_t_ns": 0,
         "reason": "head_turn", "score": 0.9, "pre_sec": 2.0, "post_sec": 2.0, "face_count": 1},
        {"record_type": "trigger_decision", "stream": "cam0", "frame_id": 0, "t_ns": 0, "decision": "blocked_gate"},
        {"record_type": "trigger_decision", "stream": "cam0", "frame_id": 1, "t_ns": 500_000_000,
         "decision": "triggered"},
        {"record_type": "trigger_decision", "stream": "cam0", "frame_id": 2, "t_ns": 1_000_000_000,
         "decision": "blocked_gate"},
        # Cumulative counts, written out of order: the largest is the latest.
        {"record_type": "fps_summary", "stream": "cam0", "frame_id": 20, "t_ns": 1, "frames_fused": 20,
         "event_fps": 29.5, "triggers": 3},
        {"record_type": "fps_summary", "stream": "cam0", "frame_id": 10, "t_ns": 1, "frames_fused": 10,
         "event_fps": 30.0, "triggers": 1},
        {"record_type": "source_summary", "stream": "cam0", "end_reason": "idle_timeout", "frames_received": 40,
         "frames_emitted": 35, "dropped_backpressure": 3, "lost_on_wire": 12, "malformed": {"bad_header": 2}},
    ]
    return records


def test_summary_numbers_are_exact(tmp_path):
    records = known_records()
    summary = summarize_trace(write_trace(tmp_path / "trace.jsonl", records))

    components = {c["component"]: c for c in summary["components"]}
    assert [c["component"] for c in summary["components"]] == ["orchestrator", "face", "quality"]  # by avg desc
    face = components["face"]
    assert (face["count"], face["avg_ms"], face["max_ms"], face["slow"]) == (4, 25.0, 40.0, 1)
    assert face["p50_ms"] == 25.0
    assert face["p95_ms"] == pytest.approx(38.5)  # 30 + 0.85 * (40 - 30)
    assert (components["quality"]["avg_ms"], components["quality"]["max_ms"]) == (6.0, 7.0)
    # The orchestrator times whole frames; the slowest stage is the bottleneck.
    assert summary["bottleneck"] == "face"
    assert [c["component"] for c in summary["components"] if c["bottleneck"]] == ["face"]
    assert components["orchestrator"]["per_frame_total"] is True
    assert summary["unusable_records"] == {"timing": 1}

    drops = summary["drops"]
    assert drops["by_reason"] == {
        "queue_full": {"records": 1, "frames": 12},
        "backpressure": {"records": 1, "frames": 3},
        "timeout": {"records": 2, "frames": 2},
    }
    assert drops["timeout_by_extractor"] == {"face": 2, "quality": 1}

    sync = summary["sync_delays"]
    assert sync["face"] == {"late": 0, "missing": 2, "total": 2, "avg_delay_ms": 20.0, "max_delay_ms": 30.0}
    assert sync["quality"] == {"late": 1, "missing": 1, "total": 2, "avg_delay_ms": 30.0, "max_delay_ms": 50.0}

    assert summary["triggers"] == {
        "camera_gaze": {"count": 2, "mean_score": 0.7},
        "head_turn": {"count": 1, "mean_score": 0.9},
    }
    assert summary["gate"] == {"changes": 3, "opened": 2, "closed": 1}
    assert summary["decisions"] == {"blocked_gate": 2, "triggered": 1}

    stream = summary["streams"]["cam0"]
    assert (stream["frames_fused"], stream["event_fps"], stream["triggers"]) == (20, 29.5, 3)
    assert (stream["decisions"], stream["span_s"], stream["decision_fps"]) == (3, 1.0, 2.0)
    assert stream["source"]["lost_on_wire"] == 12 and stream["source"]["malformed"] == {"bad_header": 2}

    assert summary["record_counts"]["timing"] == 9
    assert summary["record_counts"]["frame_drop"] == 4
    assert summary["read"] == {"lines": len(records), "records": len(records), "bad_lines": 0, "not_json": 0, "not_record": 0,
                               "torn_last_line": False, "bad_examples": []}


def test_json_output_is_the_summary(tmp_path, capsys):
    path = write_trace(tmp_path / "trace.jsonl", known_records())
    assert run_cli(["trace", "summary", str(path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(summarize_trace(path)))
    assert printed["drops"]["timeout_by_extractor"] == {"face": 2, "quality": 1}


def test_text_output_has_every_section(tmp_path, capsys):
    path = write_trace(tmp_path / "trace.jsonl", known_records())
    assert run_cli(["trace", "summary", str(path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    face_row = next(line for line in lines if line.strip().startswith("face "))
    assert face_row.split()[:7] == ["face", "4", "25.000", "25.000", "38.500", "40.000", "1"]
    assert face_row.rstrip().endswith("<- bottleneck")
    assert "bottleneck: face" in out
    for title in ("Frame drops by reason", "Timeout drops by extractor", "Sync delays by extractor",
                  "Triggers by reason", "Gate changes", "Frames by stream", "Source summary", "Records by type"):
        assert title in out
    camera_gaze = next(line for line in lines if line.strip().startswith("camera_gaze"))
    assert camera_gaze.split() == ["camera_gaze", "2", "0.700"]
    queue_full = next(line for line in lines if line.strip().startswith("queue_full"))
    assert queue_full.split() == ["queue_full", "1", "12"]


def test_minimal_trace_prints_none_for_missing_sections(tmp_path, capsys):
    records = [r for r in known_records() if r["record_type"] == "trigger_fire"]
    path = write_trace(tmp_path / "trace.jsonl", records)
    assert run_cli(["trace", "summary", str(path)]) == 0
    out = capsys.readouterr().out
    sections = out.split("\n\n")
    by_title = {s.splitlines()[0]: s.splitlines()[1:] for s in sections[1:]}
    assert by_title["Processing time by component (slowest first)"] == ["  none"]
    assert by_title["Frame drops by reason"] == ["  none"]
    assert by_title["Sync delays by extractor"] == ["  none"]
    assert by_title["Gate changes"] == ["  none"]
    assert "bottleneck: none" in out
    assert by_title["Triggers by reason"] != ["  none"]


def test_torn_last_line_and_garbage_are_counted(tmp_path, capsys):
    records = known_records()
    text = "".join(json.dumps(r) + "\n" for r in records[:5])
    text += "this is not json\n"
    text += "[1, 2, 3]\n"  # JSON, but not a record
    text += '{"no_record_type": 1}\n'
    text += "\n"  # blank lines are neither records nor errors
    text += "".join(json.dumps(r) + "\n" for r in records[5:])
    text += '{"record_type": "timing", "frame_id": 4, "comp'  # a writer killed mid-line
    path = tmp_path / "trace.jsonl"
    path.write_text(text)

    summary = summarize_trace(path)
    read = summary["read"]
    assert read["records"] == len(records)
    assert (read["not_json"], read["not_record"], read["torn_last_line"], read["bad_lines"]) == (1, 2, True, 4)
    assert [e["line"] for e in read["bad_examples"]] == [6, 7, 8, len(records) + 5]
    # The records around the garbage still count in full.
    assert summary["triggers"]["camera_gaze"]["count"] == 2

    assert run_cli(["trace", "summary", str(path)]) == 0
    out = capsys.readouterr().out
    assert "4 unreadable (1 not JSON, 2 not a record, torn last line)" in out


def test_complete_last_line_without_newline_is_a_record(tmp_path):
    path = tmp_path / "trace.jsonl"
    path.write_text(json.dumps(timing(0, "face", 1.0)) + "\n" + json.dumps(timing(1, "face", 3.0)))
    summary = summarize_trace(path)
    assert summary["read"]["torn_last_line"] is False
    assert summary["components"][0]["avg_ms"] == 2.0


def test_non_finite_and_bool_values_are_skipped(tmp_path, capsys):
    path = tmp_path / "trace.jsonl"
    path.write_text(
        '{"record_type":"timing","frame_id":0,"component":"face","processing_ms":NaN}\n'
        '{"record_type":"timing","frame_id":1,"component":"face","processing_ms":true}\n'
        '{"record_type":"timing","frame_id":2,"component":"face","processing_ms":4.0}\n'
        '{"record_type":"trigger_fire","frame_id":3,"reason":"head_turn","score":Infinity}\n'
    )
    assert run_cli(["trace", "summary", str(path), "--json"]) == 0

    def no_constants(name: str) -> None:
        raise AssertionError(f"non-finite {name} in the JSON output")

    printed = json.loads(capsys.readouterr().out, parse_constant=no_constants)
    assert printed["components"][0]["count"] == 1 and printed["components"][0]["avg_ms"] == 4.0
    assert printed["unusable_records"] == {"timing": 2, "trigger_fire": 1}
    assert printed["triggers"]["head_turn"] == {"count": 1, "mean_score": None}


def test_missing_file_exits_2_with_a_message(tmp_path, capsys):
    missing = tmp_path / "nope.jsonl"
    assert run_cli(["trace", "summary", str(missing)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert str(missing) in captured.err and "no such file" in captured.err


def test_directory_exits_2(tmp_path, capsys):
    assert run_cli(["trace", "summary", str(tmp_path)]) == 2
    assert "directory" in capsys.readouterr().err


def test_percentile_matches_numpy():
    rng = random.Random(7)
    for n in (1, 2, 5, 101):
        values = sorted(rng.uniform(0, 100) for _ in range(n))
        for q in (0.0, 0.5, 0.95, 1.0):
            assert math.isclose(percentile(values, q), float(np.percentile(values, q * 100)), rel_tol=1e-12)
