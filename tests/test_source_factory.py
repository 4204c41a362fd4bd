"""One source factory (connectors/sources.py) for the flow, the daemon and the recorder."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import List

import cv2
import numpy as np
import pytest

from connectors.capture_source import CaptureSource
from connectors.replay_source import ReplaySource
from connectors.sources import StreamSpec, build_source, stream_spec
from connectors.video_source import VideoFileSource
from connectors.zmq_source import ZmqFrameSource
from facemoment.core.config import ConfigError, load_config


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("factory") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (32, 24))
    for i in range(4):
        writer.write(np.full((24, 32, 3), i * 40, np.uint8))
    writer.release()
    return path


def test_each_kind_gets_its_source_with_the_configured_settings(clip: Path, tmp_path: Path) -> None:
    from facemoment.formats.recording import RecordingWriter

    rec = tmp_path / "r.fmrec"
    with RecordingWriter(rec, {"encoding": "raw"}) as writer:
        writer.append_image(0, 0, np.zeros((4, 4, 3), np.uint8), "raw")
    cfg = load_config(env={}, settings={
        "source.fps": 5, "source.progress": True, "source.realtime": True, "source.shares": 2,
        "source.buffer_frames": 0, "source.drop_strategy": "keyframe_only", "source.keyframe_interval": 4,
        "source.idle_timeout_s": 3, "source.max_frame_mb": 1,
    })
    video = build_source(stream_spec("cam0", str(clip)), cfg)
    assert type(video) is VideoFileSource  # frames only: read-ahead is the flow's
    assert (video.fps, video.progress, video.shares) == (5.0, True, 2)
    replay = build_source(stream_spec("cam1", str(rec)), cfg)
    assert type(replay) is ReplaySource and replay.realtime and replay.shares == 2
    zmq_source = build_source(stream_spec("cam2", "tcp://127.0.0.1:5999"), cfg)
    assert type(zmq_source) is ZmqFrameSource and not hasattr(zmq_source, "prefetcher")
    assert (zmq_source.idle_timeout_s, zmq_source.buffer_frames, zmq_source.max_frame_bytes) == (3.0, 0, 1024 * 1024)
    camera = build_source(StreamSpec("cam3", "0", "camera"), cfg)
    assert type(camera) is CaptureSource
    assert (camera.buffer_frames, camera.drop_strategy, camera.keyframe_interval) == (1, "keyframe_only", 4)


def test_the_flow_wraps_every_source_in_the_extract_stages_read_ahead(clip: Path) -> None:
    from dataflows.facemoment import read_ahead
    from operators.extraction.orchestrator import SharedOrchestrator
    from operators.extraction.read_ahead import ReadAhead

    cfg = load_config(env={}, settings={"source.buffer_frames": 5})
    lanes = SharedOrchestrator(cfg)
    specs = [stream_spec("cam0", str(clip)), stream_spec("cam1", "tcp://127.0.0.1:5999")]
    wrapped = read_ahead(specs, cfg, lanes)
    assert all(isinstance(s, ReadAhead) and s.orchestrator is lanes for s in wrapped.values())
    assert type(wrapped["cam0"].inner) is VideoFileSource and wrapped["cam0"].rereads and wrapped["cam0"].depth == 8
    assert type(wrapped["cam1"].inner) is ZmqFrameSource and not wrapped["cam1"].rereads and wrapped["cam1"].depth == 5


def test_the_daemon_checks_its_options_as_settings(capsys: pytest.CaptureFixture) -> None:
    from facemoment.tools.daemon import add_daemon_args, daemon_main

    args = add_daemon_args(argparse.ArgumentParser()).parse_args(["--source", "sample", "--fps", "nan"])
    assert daemon_main(args) == 2
    assert "source.fps = nan is out of range" in capsys.readouterr().err
    args = add_daemon_args(argparse.ArgumentParser()).parse_args(["--source", "tcp://127.0.0.1:5999"])
    assert daemon_main(args) == 2
    assert "is a frame publisher" in capsys.readouterr().err


def test_the_recorder_records_only_a_frame_publisher(clip: Path, tmp_path: Path) -> None:
    from facemoment.tools.record import add_record_args, record_main

    parser = argparse.ArgumentParser()
    add_record_args(parser.add_subparsers(dest="command"))
    lines: List[str] = []
    args = parser.parse_args(["record", str(clip), "-o", str(tmp_path / "x.fmrec")])
    assert record_main(args, progress=lines.append) == 2
    assert "is a file source" in lines[-1] and not (tmp_path / "x.fmrec").exists()


def test_a_missing_file_is_named_by_the_factory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing.mp4"):
        stream_spec("cam0", str(tmp_path / "missing.mp4"))
