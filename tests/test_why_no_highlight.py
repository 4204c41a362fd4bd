"""A run that fires nothing says why, writes its outputs, and keeps the models' logs quiet."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from facemoment.core.config import FusionConfig, QualityConfig
from facemoment.core.types import Face, FrameObservations, Observation
from facemoment.runtime.native_logs import NATIVE_LINE, is_native_line
from facemoment.runtime.why import explain, latest_tallies
from facemoment.tools.trace_tools import format_summary, summarize_trace
from operators.fusion_rules import FusionRules
from operators.fusion_state import FusionState
from operators.gate_tally import GateTally
from tests.conftest import REPO, _flow_env

FPS = 30


def _frame(i: int, brightness: float, yaw: float = 0.0) -> FrameObservations:
    face = Face(face_id=0, confidence=0.95, bbox=(0.4, 0.3, 0.2, 0.3), yaw=yaw, pitch=0.0,
                expression=0.1, area_ratio=0.06, center_distance=0.05)
    t_ns = i * 1_000_000_000 // FPS
    obs = {
        "face": Observation("face", "cam0", i, t_ns, faces=[face]),
        "quality": Observation("quality", "cam0", i, t_ns, signals={
            "blur": 300.0, "brightness": brightness, "contrast": 60.0,
            "quality_gate": 1.0 if brightness >= 50 else 0.0}),
    }
    return FrameObservations("cam0", i, t_ns, obs)


def test_tally_names_the_failing_condition_its_share_and_typical_value():
    rules, fusion = FusionRules(FusionConfig()), FusionState()
    tally = GateTally()
    for i in range(100):
        # Dark for the first 75 frames; then the face turns away for the rest.
        fo = _frame(i, brightness=30.0 if i < 75 else 120.0, yaw=0.0 if i < 75 else 40.0)
        rules.process(fusion, fo)
        tally.add(fo, fusion.outcome, FusionConfig().gate, QualityConfig())
    record = tally.record(fo).to_dict()
    assert record["record_type"] == "gate_tally" and record["frames"] == 100
    assert record["conditions"]["quality.brightness"] == {"failed": 75, "op": "<", "threshold": 50.0, "typical": 30.0}
    assert record["conditions"]["yaw"]["failed"] == 25 and record["conditions"]["yaw"]["typical"] == 40.0
    assert record["gate_open_frames"] == 0 and record["decisions"] == {"blocked_gate": 100}
    text = "\n".join(explain(record))
    assert "quality: brightness 30 < 50 on 75% of frames (75 of 100)" in text
    assert "face: yaw 40 > 25 on 25% of frames" in text
    # Records are cumulative: the one with the most frames wins.
    assert latest_tallies([record, dict(record, frames=10)])["cam0"]["frames"] == 100


def test_tally_counts_cooldown_and_pending():
    cfg = FusionConfig(confirm_sec=0.0833, cooldown_sec=1.0)
    cfg.gate.open_duration_sec = 0.0
    rules, fusion = FusionRules(cfg), FusionState()
    tally = GateTally()
    for i in range(60):
        fo = _frame(i, brightness=120.0)  # frontal, bright: camera_gaze on every frame
        rules.process(fusion, fo)
        tally.add(fo, fusion.outcome, cfg.gate, QualityConfig())
    record = tally.record(fo).to_dict()
    decisions = record["decisions"]
    assert decisions["triggered"] >= 1 and decisions["blocked_cooldown"] > 0 and decisions["consecutive_pending"] > 0
    text = "\n".join(explain(record))
    assert f"cooldown after a trigger blocked {decisions['blocked_cooldown']} frames" in text
    assert "consecutive_pending" in text


def test_native_line_pattern_keeps_errors():
    assert is_native_line(b"W0000 00:00:1796175403.453747   22269 inference_feedback_manager.cc:114] Feedback\n")
    assert is_native_line(b"I0000 00:00:1796175403.453747   22269 gl_context.cc:369] GL version\n")
    assert is_native_line(b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
    assert is_native_line(b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    assert not is_native_line(b"E0000 00:00:1796175403.453747   22269 graph.cc:1] failed\n")
    assert not is_native_line(b"F0000 00:00:1796175403.453747   22269 graph.cc:1] Check failed\n")
    assert not is_native_line(b"facemoment: configuration error: x\n")


@pytest.fixture(scope="module")
def dark_video(tmp_path_factory) -> Path:
    """The sample, darkened and blurred: faces are there, the quality gate never opens."""
    from facemoment.formats.sample import ensure_sample_video

    path = tmp_path_factory.mktemp("dark") / "dark.mp4"
    src = cv2.VideoCapture(str(ensure_sample_video()))
    out = None
    for _ in range(int(4.5 * FPS)):  # background, then the face comes in
        ok, image = src.read()
        if not ok:
            break
        image = cv2.GaussianBlur((image * 0.3).astype("uint8"), (0, 0), 3)
        if out is None:
            out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (image.shape[1], image.shape[0]))
        out.write(image)
    src.release()
    assert out is not None
    out.release()
    return path


def _process(video: Path, out_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "facemoment", "process", str(video), "--output-dir", str(out_dir), *extra]
    return subprocess.run(cmd, cwd=REPO, env=_flow_env(), capture_output=True, text=True, timeout=300)


def _lines(stderr: str) -> list:
    return [line for line in stderr.replace("\r", "\n").split("\n") if line.strip()]


def test_dark_soft_video_says_why_and_keeps_native_logs_quiet(dark_video: Path, tmp_path: Path):
    run = _process(dark_video, tmp_path / "out")
    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path / "out"
    # Outputs exist even without a trigger.
    assert (out / "triggers.jsonl").exists() and (out / "triggers.jsonl").read_text() == ""
    assert (out / "trace.jsonl").exists()
    lines = _lines(run.stderr)
    native = [line for line in lines if NATIVE_LINE.match(line.encode())]
    assert native == [], native[:5]
    text = run.stderr
    assert "FaceMoment run summary" in text and "triggers: 0" in text
    assert "why no highlight:" in text
    assert "quality: brightness" in text and "< 50 on 100% of frames" in text
    assert "quality: blur" in text and "< 100 on 100% of frames" in text

    summary = summarize_trace(out / "trace.jsonl")
    tally = summary["gate_tallies"]["cam0"]
    assert tally["gate_open_frames"] == 0 and tally["conditions"]["quality.brightness"]["failed"] == tally["frames"]
    printed = format_summary(summary)
    assert "why no highlight:" in printed and "< 50 on 100% of frames" in printed
    cli = subprocess.run([sys.executable, "-m", "facemoment", "trace", "summary", str(out / "trace.jsonl")],
                         cwd=REPO, env=_flow_env(), capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0 and "quality: brightness" in cli.stdout
    json_summary = json.loads(subprocess.run(
        [sys.executable, "-m", "facemoment", "trace", "summary", "--json", str(out / "trace.jsonl")],
        cwd=REPO, env=_flow_env(), capture_output=True, text=True, timeout=120).stdout)
    assert json_summary["gate_tallies"]["cam0"]["frames"] == tally["frames"]


def test_verbose_shows_native_logs(dark_video: Path, tmp_path: Path):
    run = _process(dark_video, tmp_path / "out", "--verbose")
    assert run.returncode == 0, run.stderr[-3000:]
    native = [line for line in _lines(run.stderr) if NATIVE_LINE.match(line.encode())]
    assert len(native) >= 1


def test_verbose_goes_before_or_after_the_command():
    from facemoment.tools.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["-v", "process", "x.mp4"]).verbose is True
    assert parser.parse_args(["process", "x.mp4", "--verbose"]).verbose is True
    assert parser.parse_args(["debug", "sample", "-v"]).verbose is True
    assert parser.parse_args(["process", "x.mp4"]).verbose is False
