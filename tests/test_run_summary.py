"""The run summary names what the run wrote and what it lost: the clips folder exists
whenever the summary points at it (also with no trigger), and a trace that lost records
to failed writes is named, whether or not a later write could record the loss."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from facemoment.core.config import Config
from facemoment.runtime import output_losses
from facemoment.runtime.summary import summarize


@pytest.fixture(autouse=True)
def no_losses_noted():
    output_losses.clear()
    yield
    output_losses.clear()


class FullDisk:
    """A real file whose writes fail with ENOSPC while `full` is set."""

    def __init__(self, real) -> None:
        self.real = real
        self.full = False
        self.name = real.name

    def write(self, data) -> int:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.real.write(data)

    def __getattr__(self, name):
        return getattr(self.real, name)


def _trace_partition(path: Path):
    from connectors.trace_sink import TraceSink

    part = TraceSink(path, "minimal").build_part("trace", path.name, None)
    part._file = disk = FullDisk(part._file)
    return part, disk


def _fire(i: int) -> dict:
    return {"record_type": "trigger_fire", "frame_id": i}


def test_a_trace_that_recovered_is_named_from_its_degraded_record(tmp_path):
    trace = tmp_path / "trace.jsonl"
    part, disk = _trace_partition(trace)
    disk.full = True
    part.write_batch([_fire(1), _fire(2)])
    disk.full = False
    part.write_batch([_fire(3)])
    part.close()
    output_losses.clear()  # the record in the file alone (another process's sink)
    text = summarize(tmp_path, trace)
    assert f"trace degraded: 2 records lost to failed writes (OSError: [Errno 28] No space left on device) -> {trace}" in text


def test_a_trace_that_never_recovered_is_named_from_the_sink_of_this_process(tmp_path):
    trace = tmp_path / "trace.jsonl"
    part, disk = _trace_partition(trace)
    part.write_batch([_fire(0)])
    disk.full = True
    part.write_batch([_fire(1), _fire(2)])
    part.write_batch([_fire(3)])
    part.close()  # still full: no record could say so in the file
    assert '"trace_degraded"' not in trace.read_text()
    text = summarize(tmp_path, trace)
    assert f"trace degraded: 3 records lost to failed writes (OSError: [Errno 28] No space left on device) -> {trace}" in text


def test_a_trace_without_losses_says_nothing_of_them(tmp_path):
    trace = tmp_path / "trace.jsonl"
    part, _disk = _trace_partition(trace)
    part.write_batch([_fire(0)])
    part.close()
    assert "trace degraded" not in summarize(tmp_path, trace)


def _dark_video(path: Path, frames: int = 12) -> Path:
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (160, 120))
    for i in range(frames):
        writer.write(np.full((120, 160, 3), 10 + i, np.uint8))
    writer.release()
    return path


@pytest.mark.parametrize("clips", [True, False], ids=["clips_on", "clips_off"])
def test_a_run_without_a_trigger_has_every_folder_its_summary_names(clips, tmp_path):
    from bytewax.testing import run_main

    from dataflows.facemoment import build_flow

    cfg = Config()
    cfg.source.source = str(_dark_video(tmp_path / "dark.avi"))
    cfg.extract.extractors = ["quality"]
    cfg.output.output_dir = str(tmp_path / "out")
    cfg.output.trig_address = None
    cfg.output.clips = clips
    run_main(build_flow(cfg))
    out = tmp_path / "out"
    text = summarize(out, out / "trace.jsonl")
    assert "triggers: 0" in text
    assert (out / "triggers.jsonl").read_text() == ""
    assert f"outputs: {out / 'triggers.jsonl'}, {out / 'trace.jsonl'}" in text
    if clips:
        assert (out / "clips").is_dir()
        assert f"clips: 0 written, 0 failed -> {out / 'clips'}" in text
    else:
        assert not (out / "clips").exists()
        assert "clips: off" in text
