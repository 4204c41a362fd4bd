"""Analyse at a detect size, keep the full frame: each frame is scaled once as it is
read, every extractor sees that one scaled frame, clips and stills keep the full one."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Tuple

import cv2
import numpy as np
import pytest
import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main

from facemoment.core.config import load_config
from facemoment.core.types import Frame, Observation
from facemoment.formats.frame_ring import encode_frame
from facemoment.formats.sample import ensure_sample_video
from facemoment.formats.scaling import at_detect_size, detect_image
from operators.extraction.orchestrator import SharedOrchestrator, extract
from operators.extraction.read_ahead import ReadAhead
from tests.conftest import decode_all


def _frame(w: int, h: int, i: int = 0) -> Frame:
    return Frame("cam0", i, i * 33_333_333, np.random.default_rng(i).integers(0, 255, (h, w, 3), dtype=np.uint8))


def test_a_wide_frame_is_scaled_to_the_detect_width_keeping_its_aspect_and_its_full_image():
    frame = _frame(1920, 1080)
    scaled = at_detect_size(frame, 640)
    assert scaled.image.shape == (360, 640, 3)
    assert scaled.full is frame.image and scaled.record_image is frame.image
    # Already small enough, or no detect size: the very same frame.
    small = _frame(640, 480)
    assert at_detect_size(small, 640) is small and at_detect_size(frame, 0) is frame
    assert detect_image(frame.image, 800).shape == (450, 800, 3)


def test_live_clip_frames_are_encoded_at_full_resolution():
    encoded = encode_frame(at_detect_size(_frame(1280, 720), 640))
    assert (encoded.width, encoded.height) == (1280, 720)
    assert cv2.imdecode(np.frombuffer(encoded.jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (720, 1280, 3)


class _Shapes:
    """An extractor that records the shape of every image it is handed."""

    def __init__(self, name: str, seen: List[Tuple[str, Tuple[int, ...]]]):
        self.name = name
        self.seen = seen

    def extract(self, frame: Frame) -> Observation:
        self.seen.append((self.name, frame.image.shape))
        return Observation(self.name, frame.stream_id, frame.frame_id, frame.t_src_ns)


def test_every_extractor_reads_the_one_scaled_frame_and_the_flow_keeps_the_full_one():
    cfg = load_config(env={}, presets=["batch"])
    seen: List[Tuple[str, Tuple[int, ...]]] = []
    lanes = SharedOrchestrator(cfg, lambda name, _c: _Shapes(name, seen))
    frames = [_frame(1280, 720, i) for i in range(6)]
    flow = Dataflow("detect_size")
    read = op.input("in", flow, ReadAhead(TestingSource(frames), lanes, detect_width=640))
    extracted = extract("extract", read, lanes)
    got_frames: List[Any] = []
    got: List[Any] = []
    op.output("frames", read, TestingSink(got_frames))
    op.output("out", extracted.items, TestingSink(got))
    run_main(flow)
    assert len(seen) == 6 * len(cfg.extract.extractors)
    assert {shape for _name, shape in seen} == {(360, 640, 3)}
    assert [f.record_image.shape for f in got_frames] == [(720, 1280, 3)] * 6
    assert sum(isinstance(o, Observation) for o in got) == len(seen)


@pytest.mark.slow
def test_a_larger_copy_of_the_sample_fires_the_samples_triggers(tmp_path: Path):
    """The sample scaled up to 1280x960 and analysed at 640 wide: the same reasons at
    the same times (within one frame) as the 640x480 original."""
    from facemoment.tools.api import MomentDetector

    big = tmp_path / "big.mp4"
    originals = decode_all(ensure_sample_video())
    writer = cv2.VideoWriter(str(big), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (1280, 960))
    for image in originals:
        writer.write(cv2.resize(image, (1280, 960), interpolation=cv2.INTER_CUBIC))
    writer.release()

    def fired(source: str) -> List[Tuple[str, int]]:
        detector = MomentDetector(presets=["batch"], output_dir=tmp_path / Path(source).stem, clips=False)
        return [(t.reason, t.t_ns) for t in detector.process_file(source)]

    reference = fired(str(ensure_sample_video()))
    scaled = fired(str(big))
    assert reference
    assert [r for r, _ in scaled] == [r for r, _ in reference]
    assert all(abs(a - b) <= 34_000_000 for (_, a), (_, b) in zip(scaled, reference))
