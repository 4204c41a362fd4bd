"""Video files as frame sources: open_frames and the Bytewax VideoFileSource."""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path
from typing import List, Optional

import cv2
import numpy as np
import pytest

from facemoment.formats.frames import open_frames
from connectors.video_source import VideoFileSource
from facemoment.core.config import SourceConfig
from facemoment.core.types import Frame

from conftest import decode_all, drain, run_source

FPS = 10.0
N_FRAMES = 20
SIZE = (64, 48)  # width, height


def write_video(path: Path, n: int = N_FRAMES, fps: float = FPS) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, SIZE)
    assert writer.isOpened()
    for i in range(n):
        image = np.full((SIZE[1], SIZE[0], 3), (i * 12) % 256, np.uint8)
        cv2.putText(image, str(i), (4, 34), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (255, 255, 255), 2)
        writer.write(image)
    writer.release()
    return path




@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4")


@pytest.fixture(scope="module")
def reference(video: Path) -> List[np.ndarray]:
    frames = decode_all(video)
    assert len(frames) == N_FRAMES
    return frames






# ------------------------------------------------------------------ open_frames


def test_open_frames_reads_every_frame_in_order(video: Path, reference: List[np.ndarray]) -> None:
    with open_frames(str(video)) as reader:
        assert (reader.width, reader.height) == SIZE
        assert reader.fps == pytest.approx(FPS) and reader.frame_count == N_FRAMES
        assert not reader.is_live
        items = list(reader)
    assert [i for i, _, _ in items] == list(range(N_FRAMES))
    assert [t for _, t, _ in items] == [round(i * 1e9 / FPS) for i in range(N_FRAMES)]
    assert all(np.array_equal(image, ref) for (_, _, image), ref in zip(items, reference))


def test_open_frames_loops_with_increasing_ids_and_times(video: Path, reference: List[np.ndarray]) -> None:
    reader = open_frames(str(video), loop=True)
    items = [reader.read() for _ in range(2 * N_FRAMES + 5)]
    reader.close()
    ids = [i for i, _, _ in items]
    times = [t for _, t, _ in items]
    assert ids == list(range(2 * N_FRAMES + 5))
    assert all(b > a for a, b in zip(times, times[1:]))
    period = round(1e9 / FPS)
    # The second pass continues one frame period after the last frame of the first.
    assert times[N_FRAMES] == times[N_FRAMES - 1] + period
    assert times[2 * N_FRAMES] == 2 * N_FRAMES * period
    assert np.array_equal(items[N_FRAMES][2], reference[0])
    assert np.array_equal(items[2 * N_FRAMES + 3][2], reference[3])


def test_open_frames_sampling_halves_the_rate(video: Path, reference: List[np.ndarray]) -> None:
    with open_frames(str(video), fps=FPS / 2) as reader:
        assert reader.fps == pytest.approx(FPS / 2)
        items = list(reader)
    assert [i for i, _, _ in items] == list(range(N_FRAMES // 2))
    assert [t for _, t, _ in items] == [round(2 * i * 1e9 / FPS) for i in range(N_FRAMES // 2)]
    assert all(np.array_equal(image, reference[2 * k]) for k, (_, _, image) in enumerate(items))
    with open_frames(str(video), fps=4 * FPS) as reader:  # above the file's rate: every frame
        assert len(list(reader)) == N_FRAMES


def test_open_frames_errors_name_the_source(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        open_frames(str(missing))
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not a video" * 100)
    with pytest.raises(ValueError, match="garbage.mp4"):
        open_frames(str(garbage))
    with pytest.raises(ValueError, match="tcp://"):
        open_frames("tcp://127.0.0.1:5555")
    with pytest.raises(ValueError, match="fps"):
        open_frames(str(garbage), fps=0)


def test_open_frames_sample_uses_the_sample_module(
    video: Path, reference: List[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = types.ModuleType("facemoment.formats.sample")
    fake.ensure_sample_video = lambda: video  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "facemoment.formats.sample", fake)
    with open_frames("sample") as reader:
        assert reader.frame_count == N_FRAMES
        _, _, first = reader.read()
    assert np.array_equal(first, reference[0])


# -------------------------------------------------------------- VideoFileSource


def test_video_source_emits_every_frame(video: Path, reference: List[np.ndarray]) -> None:
    frames = run_source(VideoFileSource(video, stream_id="camA", batch_size=3))
    assert [f.frame_id for f in frames] == list(range(N_FRAMES))
    assert all(isinstance(f, Frame) and f.stream_id == "camA" for f in frames)
    times = [f.t_src_ns for f in frames]
    assert times[0] == 0 and all(b > a for a, b in zip(times, times[1:]))
    assert all(np.array_equal(f.image, ref) for f, ref in zip(frames, reference))


def test_video_source_fps_sampling_halves_the_count(video: Path) -> None:
    frames = run_source(VideoFileSource(video, "cam0", settings=SourceConfig(fps=FPS / 2)))
    assert [f.frame_id for f in frames] == list(range(N_FRAMES // 2))
    gaps = {b.t_src_ns - a.t_src_ns for a, b in zip(frames, frames[1:])}
    assert gaps == {round(2e9 / FPS)}


@pytest.mark.parametrize("fps", [None, FPS / 2])
def test_video_source_resumes_with_exactly_the_remaining_frames(video: Path, fps: Optional[float]) -> None:
    source = VideoFileSource(video, "cam0", settings=SourceConfig(fps=fps), batch_size=3)
    full = drain(source.build_part("in", "cam0", None))
    part = source.build_part("in", "cam0", None)
    head = drain(part, limit=6)
    state = part.snapshot()
    part.close()
    assert state == len(head) == 6
    rest = drain(source.build_part("in", "cam0", state))
    assert [f.frame_id for f in head + rest] == [f.frame_id for f in full]
    assert [f.t_src_ns for f in head + rest] == [f.t_src_ns for f in full]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(head + rest, full))


def test_truncated_file_emits_the_frames_before_the_damage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # AVI keeps its frames readable up to the cut, so some frames survive.
    whole = write_video(tmp_path / "whole.avi")
    reference = decode_all(whole)
    data = whole.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: int(len(data) * 0.7)])
    with caplog.at_level(logging.ERROR):
        frames = run_source(VideoFileSource(cut, "cam0"))
    assert 0 < len(frames) < N_FRAMES
    assert [f.frame_id for f in frames] == list(range(len(frames)))
    # The last frame may be the half-written one; all before it are intact.
    assert all(np.array_equal(f.image, reference[f.frame_id]) for f in frames[:-1])
    assert any("truncated" in r.getMessage() for r in caplog.records)


def test_mp4_cut_before_its_index_ends_without_frames(
    video: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # OpenCV writes the mp4 index (moov) last: cutting the end leaves nothing decodable.
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    with caplog.at_level(logging.ERROR):
        frames = run_source(VideoFileSource(cut, "cam0"))
    assert frames == []
    assert any("cut.mp4" in r.getMessage() for r in caplog.records)


def test_video_source_progress_bar_goes_to_stderr(video: Path, capsys: pytest.CaptureFixture) -> None:
    frames = run_source(VideoFileSource(video, "cam0", settings=SourceConfig(progress=True)))
    assert len(frames) == N_FRAMES
    err = capsys.readouterr().err
    assert f"/{N_FRAMES}" in err


def test_video_source_rejects_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        VideoFileSource(tmp_path / "missing.mp4", "cam0")


def test_file_timestamps_truncate_the_decoder_position_as_visualbase_does(tmp_path: Path) -> None:
    # At 30 fps the positions are 33.33.. ms, 66.66.. ms: truncating pts_ms * 1e6
    # (visualbase's file source) and rounding differ by 1 ns on every third frame.
    path = write_video(tmp_path / "thirty.mp4", n=9, fps=30.0)
    cap = cv2.VideoCapture(str(path))
    expected = []
    while cap.read()[0]:
        expected.append(int(cap.get(cv2.CAP_PROP_POS_MSEC) * 1e6))
    cap.release()
    reader = open_frames(str(path))
    got = []
    while (item := reader.read()) is not None:
        got.append(item[1])
    reader.close()
    assert len(expected) == 9
    assert got == expected
    assert any(t % 10 == 6 for t in got), "no position where truncating and rounding differ"
