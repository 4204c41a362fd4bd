"""`facemoment report`: the timeline PNG and HTML page, placement of frame-only records, and a real run."""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
from matplotlib.image import imread

from facemoment.tools.report import add_report_args
from facemoment.tools.report_figure import build_figure
from facemoment.tools.timeline import Clock, Timeline, read_timeline
from facemoment.tools.trace_summary import summarize_trace
from facemoment.tools.trace_tools import add_trace_args

REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FRAME_NS = 100_000_000  # 10 frames per second of event time


def run_cli(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="facemoment")
    sub = parser.add_subparsers(dest="command", required=True)
    add_trace_args(sub)
    add_report_args(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def write_trace(path: Path, records: List[Dict[str, Any]], tail: str = "") -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
    return path


def known_records() -> List[Dict[str, Any]]:
    """40 frames at 10 fps starting at t=5 s, a gate opening, two triggers, drops, sync delays and timing."""
    t0 = 5_000_000_000
    records: List[Dict[str, Any]] = []
    for f in range(40):
        t = t0 + f * FRAME_NS
        gate = 10 <= f < 35
        candidates = [{"reason": "camera_gaze", "score": 0.6 + 0.005 * f}] if gate else []
        if 20 <= f < 24:
            candidates.insert(0, {"reason": "head_turn", "score": 0.9})
        records.append({"record_type": "trigger_decision", "stream": "cam0", "frame_id": f, "t_ns": t,
                        "gate_open": gate, "in_cooldown": 25 <= f < 30, "candidates": candidates,
                        "decision": "no_trigger", "ewma_values": {"0": 0.3 + 0.01 * f}})
        for component, ms in (("face", 10.0 + f % 5), ("quality", 3.0)):
            records.append({"record_type": "timing", "stream": "cam0", "frame_id": f, "component": component,
                            "processing_ms": ms, "threshold_ms": 13.5, "is_slow": ms > 13.5})
    records += [
        {"record_type": "gate_change", "stream": "cam0", "frame_id": 10, "t_ns": t0 + 10 * FRAME_NS, "gate_open": True},
        {"record_type": "gate_change", "stream": "cam0", "frame_id": 35, "t_ns": t0 + 35 * FRAME_NS, "gate_open": False},
        {"record_type": "trigger_fire", "stream": "cam0", "frame_id": 22, "t_ns": t0 + 22 * FRAME_NS,
         "event_t_ns": t0 + 20 * FRAME_NS, "reason": "head_turn", "score": 0.9, "pre_sec": 1.0, "post_sec": 1.0},
        {"record_type": "trigger_fire", "stream": "cam0", "frame_id": 30, "t_ns": t0 + 30 * FRAME_NS,
         "event_t_ns": t0 + 12 * FRAME_NS, "reason": "camera_gaze", "score": 0.75, "pre_sec": 1.0, "post_sec": 1.0},
        {"record_type": "frame_drop", "stream": "cam0", "frame_id": 5, "dropped_frame_ids": [5], "reason": "timeout",
         "extractors": ["face"]},
        {"record_type": "frame_drop", "stream": "cam0", "frame_id": 16, "dropped_frame_ids": [14, 15],
         "reason": "backpressure"},
        {"record_type": "sync_delay", "stream": "cam0", "frame_id": 5, "expected_ns": t0 + 5 * FRAME_NS,
         "delay_ms": 40.0, "waiting_for": ["face"], "late": False},
        {"record_type": "sync_delay", "stream": "cam0", "frame_id": 5, "expected_ns": t0 + 5 * FRAME_NS,
         "delay_ms": 120.0, "waiting_for": ["face"], "late": True},
    ]
    return records


def distinct_colors(png_path: Path) -> int:
    image = imread(png_path)
    rgb = np.rint(image[..., :3] * 255).astype(np.uint32).reshape(-1, 3)
    return len(np.unique((rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]))


def test_png_report_draws_every_panel(tmp_path, capsys):
    trace = write_trace(tmp_path / "trace.jsonl", known_records())
    out = tmp_path / "report.png"
    assert run_cli(["report", str(trace), "-o", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(out)
    assert image.shape[0] > 600 and image.shape[1] > 1000
    # Lines, spans and markers in several colours, not a blank canvas with text.
    assert distinct_colors(out) > 200

    empty = tmp_path / "empty.png"
    assert run_cli(["report", str(write_trace(tmp_path / "empty.jsonl", [])), "-o", str(empty)]) == 0
    assert distinct_colors(out) > 2 * distinct_colors(empty)


def test_figure_panels_hold_the_trace_data(tmp_path):
    trace = write_trace(tmp_path / "trace.jsonl", known_records())
    timeline, summary = read_timeline(trace)
    fig = build_figure(timeline, summary, trace)
    signals, gate, triggers, drops, sync, timing = fig.axes[:6]

    def labels(ax) -> List[str]:
        return ax.get_legend_handles_labels()[1]

    assert {"camera_gaze", "head_turn", "expression EWMA face 0"} <= set(labels(signals))
    gaze = next(line for line in signals.get_lines() if line.get_label() == "camera_gaze")
    x, y = gaze.get_data()
    assert x[0] == pytest.approx(0.0) and x[-1] == pytest.approx(3.9)  # seconds from the first frame
    assert np.nanmax(y) == pytest.approx(0.6 + 0.005 * 34)
    assert {"gate open", "in cooldown", "gate opened", "gate closed"} <= set(labels(gate))
    assert [t.get_text() for t in triggers.get_yticklabels()] == ["camera_gaze", "head_turn"]
    windows = sorted((p.get_x(), p.get_width()) for p in triggers.patches)
    # Window = event start - pre_sec .. event start + post_sec, in seconds from the first frame.
    assert windows == [pytest.approx((0.2, 2.0)), pytest.approx((1.0, 2.0))]
    assert set(labels(drops)) == {"backpressure: 2 frames", "timeout: face: 1 frames"}
    assert set(labels(sync)) == {"face missing at fusion: 1", "face late: 1"}
    assert {"face (avg 12.0 ms)", "quality (avg 3.0 ms)", "slow (is_slow): 8", "threshold 13.5 ms"} <= set(
        labels(timing)
    )
    assert "2 triggers" in fig._suptitle.get_text()


def _clock_with_frames_10_and_20_timed(untimed_frame: int) -> Clock:
    """Frames 10 and 20 at 2 s and 3 s of event time, and one frame with only a timing record."""
    timeline = Timeline()
    for f, t in ((10, 2_000_000_000), (20, 3_000_000_000)):
        timeline.add({"record_type": "trigger_decision", "stream": "a", "frame_id": f, "t_ns": t, "candidates": []})
    timeline.add({"record_type": "timing", "stream": "a", "frame_id": untimed_frame, "component": "face", "processing_ms": 1.0})
    return Clock(timeline)


def test_frame_only_records_are_placed_by_interpolation():
    clock = _clock_with_frames_10_and_20_timed(15)
    assert clock.seconds
    # Between known frames: interpolated; beyond them: the mean frame interval (0.1 s).
    assert clock.from_frames("a", [10, 15, 20, 25, 0]).tolist() == pytest.approx([0.0, 0.5, 1.0, 1.5, -1.0])
    assert clock.from_t("a", [2_500_000_000]).tolist() == pytest.approx([0.5])
    to_frame, to_seconds = clock.frame_axis("a")
    assert to_frame(np.array([0.5]))[0] == pytest.approx(15.0)
    assert to_seconds(np.array([25.0]))[0] == pytest.approx(1.5)


def test_time_zero_is_the_earliest_frame_even_without_a_timestamp():
    clock = _clock_with_frames_10_and_20_timed(4)
    assert clock.from_frames("a", [4, 10]).tolist() == pytest.approx([0.0, 0.6])
    assert clock.from_t("a", [2_000_000_000]).tolist() == pytest.approx([0.6])


def test_without_a_frame_map_the_axis_is_frame_ids(tmp_path):
    timeline = Timeline()
    timeline.add({"record_type": "trigger_fire", "stream": "a", "frame_id": 7, "t_ns": 9, "reason": "x"})
    timeline.add({"record_type": "timing", "stream": "a", "frame_id": 3, "component": "face", "processing_ms": 1.0})
    clock = Clock(timeline)
    assert not clock.seconds and clock.label == "frame id"
    assert clock.place("a", 7, 9) == 7.0
    summary = summarize_trace(write_trace(tmp_path / "t.jsonl", []))
    fig = build_figure(timeline, summary, "t.jsonl")
    assert fig.axes[5].get_xlabel() == "frame id"


def test_html_embeds_the_plot_and_the_summary_table(tmp_path):
    trace = write_trace(tmp_path / "trace.jsonl", known_records())
    out = tmp_path / "sub" / "report.html"
    assert run_cli(["report", str(trace), "-o", str(out)]) == 0
    page = out.read_text()
    match = re.search(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert match, "no embedded PNG"
    assert base64.b64decode(match.group(1))[:8] == PNG_SIGNATURE
    assert "<h2>Processing time by component (slowest first)</h2>" in page
    face_row = re.search(r"<tr><td>face</td>(.*?)</tr>", page).group(1)
    assert re.findall(r">([^<]*)</td>", face_row)[:6] == ["40", "12.000", "12.000", "14.000",
                                                           "14.000", "8"]
    assert re.search(r"<tr><td>head_turn</td><td class=\"num\">1</td><td class=\"num\">0.900</td></tr>", page)
    assert "src=\"http" not in page and "<script" not in page  # self-contained


def test_empty_and_garbage_traces_still_give_a_report(tmp_path):
    for name, text in (("empty.jsonl", ""), ("garbage.jsonl", "nothing\n[]\n{\"record_ty")):
        trace = tmp_path / name
        trace.write_text(text)
        png = tmp_path / f"{name}.png"
        html_out = tmp_path / f"{name}.html"
        assert run_cli(["report", str(trace), "-o", str(png)]) == 0
        assert png.read_bytes()[:8] == PNG_SIGNATURE
        assert distinct_colors(png) > 2  # the "no data" texts and frames are drawn
        assert run_cli(["report", str(trace), "-o", str(html_out)]) == 0
        assert "<p>none</p>" in html_out.read_text()
    assert "3 unreadable" in (tmp_path / "garbage.jsonl.html").read_text()


def test_bad_arguments_exit_2_without_output(tmp_path, capsys):
    missing = tmp_path / "missing.jsonl"
    assert run_cli(["report", str(missing), "-o", str(tmp_path / "r.png")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert not (tmp_path / "r.png").exists()

    trace = write_trace(tmp_path / "trace.jsonl", known_records())
    assert run_cli(["report", str(trace), "-o", str(tmp_path / "r.pdf")]) == 2
    assert ".png or .html" in capsys.readouterr().err
    assert not (tmp_path / "r.pdf").exists()


def test_default_output_is_next_to_the_trace(tmp_path):
    trace = write_trace(tmp_path / "trace.jsonl", known_records())
    assert run_cli(["report", str(trace)]) == 0
    assert (tmp_path / "report.png").read_bytes()[:8] == PNG_SIGNATURE


def test_stream_filter_plots_one_stream(tmp_path):
    records = known_records() + [
        {"record_type": "trigger_fire", "stream": "cam1", "frame_id": 3, "t_ns": 0, "event_t_ns": 0,
         "reason": "gesture_vsign", "score": 0.8, "pre_sec": 1.0, "post_sec": 1.0}
    ]
    trace = write_trace(tmp_path / "trace.jsonl", records)
    both, _ = read_timeline(trace)
    only, summary = read_timeline(trace, stream="cam1")
    assert {f.reason for f in both.fires} == {"head_turn", "camera_gaze", "gesture_vsign"}
    assert [f.reason for f in only.fires] == ["gesture_vsign"] and not only.timings
    assert summary["triggers"]["head_turn"]["count"] == 1  # the tables still cover the whole file


@pytest.mark.slow
def test_real_run_summary_and_report(tmp_path, capsys):
    out_dir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEMOMENT")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    if "FACEMOMENT_CACHE_DIR" in os.environ:
        env["FACEMOMENT_CACHE_DIR"] = os.environ["FACEMOMENT_CACHE_DIR"]
    run = subprocess.run(
        [sys.executable, "-m", "facemoment", "process", "sample", "--output-dir", str(out_dir)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    trace = out_dir / "trace.jsonl"

    assert run_cli(["trace", "summary", str(trace)]) == 0
    text = capsys.readouterr().out
    summary = summarize_trace(trace)
    components = {c["component"] for c in summary["components"]}
    assert {"face", "quality"} <= components
    assert "camera_gaze" in summary["triggers"]
    assert summary["read"]["bad_lines"] == 0
    for word in ("face", "quality", "camera_gaze", "<- bottleneck"):
        assert word in text

    png, page = tmp_path / "report.png", tmp_path / "report.html"
    assert run_cli(["report", str(trace), "-o", str(png)]) == 0
    assert run_cli(["report", str(trace), "-o", str(page)]) == 0
    assert png.read_bytes()[:8] == PNG_SIGNATURE and distinct_colors(png) > 200
    assert "data:image/png;base64," in page.read_text() and "<td>camera_gaze</td>" in page.read_text()
