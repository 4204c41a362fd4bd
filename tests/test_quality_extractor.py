"""Quality extractor and the extractor registry (no MediaPipe needed here)."""

from __future__ import annotations


import cv2
import numpy as np
import pytest
from skimage import data

from facemoment.core.config import Config, ConfigError, QualityConfig
from facemoment.core.types import Frame
from operators.extraction.common import Extractor, image_problem
from operators.extraction.registry import build_extractor
from operators.extraction.quality import QualityExtractor

DEFAULTS = QualityConfig()


def frame_of(image, frame_id: int = 11) -> Frame:
    return Frame(stream_id="cam-q", frame_id=frame_id, t_src_ns=5_000_000_000 + frame_id, image=image)


def astronaut_bgr() -> np.ndarray:
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def reference_metrics(bgr: np.ndarray) -> tuple[float, float, float]:
    """blur, brightness, contrast computed without cv2's Laplacian or grey conversion."""
    b, g, r = (bgr[..., i].astype(np.float64) for i in range(3))
    grey = np.round(0.299 * r + 0.587 * g + 0.114 * b)
    # 4-neighbour Laplacian; numpy's "reflect" is OpenCV's default BORDER_REFLECT_101.
    p = np.pad(grey, 1, mode="reflect")
    lap = p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4 * p[1:-1, 1:-1]
    return float(lap.var()), float(grey.mean()), float(grey.std())


@pytest.fixture
def quality() -> QualityExtractor:
    return QualityExtractor(QualityConfig())


def test_metrics_match_independent_computation(quality):
    image = astronaut_bgr()
    obs = quality.extract(frame_of(image))
    assert obs.error is None
    assert (obs.source, obs.stream_id, obs.frame_id, obs.t_ns) == ("quality", "cam-q", 11, 5_000_000_011)
    assert obs.processing_ms > 0
    blur, brightness, contrast = reference_metrics(image)
    # cv2 rounds grey values with fixed-point weights: a few grey levels may differ by one.
    assert obs.signals["blur"] == pytest.approx(blur, rel=0.01)
    assert obs.signals["brightness"] == pytest.approx(brightness, abs=0.1)
    assert obs.signals["contrast"] == pytest.approx(contrast, abs=0.1)
    assert obs.signals["quality_gate"] == 1.0  # a sharp, well-lit portrait


def test_grey_and_bgr_frames_agree(quality):
    image = astronaut_bgr()
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    from_bgr = quality.extract(frame_of(image)).signals
    for variant in (grey, grey[:, :, None]):
        assert quality.extract(frame_of(variant)).signals == pytest.approx(from_bgr)


def gate_failures(signals: dict, cfg: QualityConfig = DEFAULTS) -> set:
    failed = set()
    if signals["blur"] < cfg.min_blur:
        failed.add("blur")
    if not cfg.min_brightness <= signals["brightness"] <= cfg.max_brightness:
        failed.add("brightness")
    if signals["contrast"] < cfg.min_contrast:
        failed.add("contrast")
    return failed


def sparse_dots(value_dots: int, value_rest: int) -> np.ndarray:
    """10% of pixels at one value, the rest at another: sharp and contrasty."""
    rng = np.random.default_rng(3)
    image = np.full((240, 320), value_rest, np.uint8)
    image[rng.random((240, 320)) < 0.1] = value_dots
    return image


def checkerboard(mean: int, amplitude: int) -> np.ndarray:
    yy, xx = np.mgrid[0:240, 0:320]
    return np.where((xx + yy) % 2 == 0, mean + amplitude, mean - amplitude).astype(np.uint8)


@pytest.mark.parametrize(
    "name, image, failing",
    [
        ("blurred", cv2.GaussianBlur(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), (0, 0), 3), {"blur"}),
        ("dark", sparse_dots(255, 0), {"brightness"}),
        ("bright", sparse_dots(0, 255), {"brightness"}),
        ("flat", checkerboard(128, 15), {"contrast"}),
        ("uniform", np.full((120, 160, 3), 128, np.uint8), {"blur", "contrast"}),
    ],
)
def test_each_threshold_closes_the_gate(quality, name, image, failing):
    signals = quality.extract(frame_of(image)).signals
    assert gate_failures(signals) == failing, (name, signals)
    assert signals["quality_gate"] == 0.0


def test_thresholds_come_from_config():
    image = astronaut_bgr()
    strict = QualityExtractor(QualityConfig(min_blur=1e6)).extract(frame_of(image)).signals
    assert strict["quality_gate"] == 0.0
    blurred = cv2.GaussianBlur(image, (0, 0), 3)
    lenient = QualityExtractor(QualityConfig(min_blur=1.0)).extract(frame_of(blurred)).signals
    assert lenient["quality_gate"] == 1.0


@pytest.mark.parametrize(
    "image",
    [None, np.zeros((10, 10), np.int16), np.zeros((0, 5), np.uint8), np.zeros((8, 8, 4), np.uint8), "pixels"],
)
def test_bad_input_gives_error_observation(quality, image):
    obs = quality.extract(frame_of(image, frame_id=4))
    assert obs.error is not None and obs.signals == {}
    assert (obs.source, obs.frame_id) == ("quality", 4)


def test_image_problem_accepts_only_uint8_grey_or_bgr():
    assert image_problem(np.zeros((4, 4), np.uint8)) is None
    assert image_problem(np.zeros((4, 4, 3), np.uint8)) is None
    assert image_problem(np.zeros((4, 4, 1), np.uint8)) is None
    assert "4 channels" in image_problem(np.zeros((4, 4, 4), np.uint8))
    assert "dtype float64" in image_problem(np.zeros((4, 4, 3)))


# ---------------------------------------------------------------- registry


def test_build_extractor_names():
    cfg = Config()
    quality = build_extractor("quality", cfg)
    assert isinstance(quality, QualityExtractor) and isinstance(quality, Extractor)
    assert quality.cfg is cfg.quality
    from operators.extraction.gesture import GestureExtractor
    from operators.extraction.pose import PoseExtractor

    assert isinstance(build_extractor("pose", cfg), PoseExtractor)
    assert isinstance(build_extractor("gesture", cfg), GestureExtractor)
    with pytest.raises(ConfigError, match="unknown extractor 'ocr'"):
        build_extractor("ocr", cfg)


def test_quality_metrics_are_numpys_float64_variance_and_deviation():
    from operators.extraction.quality import quality_metrics

    rng = np.random.default_rng(7)
    for grey in (rng.integers(0, 256, (48, 64), dtype=np.uint8), np.full((20, 30), 200, np.uint8),
                 np.tile(np.arange(256, dtype=np.uint8), (8, 1))):
        laplacian = cv2.Laplacian(grey, cv2.CV_64F)
        got = quality_metrics(grey)
        assert got["blur"] == pytest.approx(float(laplacian.var()), rel=1e-9, abs=1e-9)
        assert got["brightness"] == pytest.approx(float(grey.mean()), rel=1e-12)
        assert got["contrast"] == pytest.approx(float(grey.std()), rel=1e-9, abs=1e-9)

