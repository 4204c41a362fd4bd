"""Hand wave detector: wrist x oscillation → frequency, amplitude, score (moments.md "Hand wave")."""

from __future__ import annotations

import math
import pickle
from typing import List

import pytest

from facemoment.core.config import FusionConfig
from operators.wave import WaveDetector, WaveResult, direction_changes

FPS = 30
T0S = [0, 1_767_225_600_123_456_789]  # near 0 and a 2026 epoch time


def t_at(t0: int, i: int) -> int:
    return t0 + round(i * 1e9 / FPS)


def run_sine(hz: float, amplitude: float, frames: int = 90, t0: int = 0, phase: float = 0.0) -> List[WaveResult]:
    detector = WaveDetector.from_config(FusionConfig())
    return [
        detector.update(t_at(t0, i), 0.5 + amplitude * math.sin(2 * math.pi * hz * i / FPS + phase))
        for i in range(frames)
    ]


@pytest.mark.parametrize("t0", T0S)
@pytest.mark.parametrize("phase", [0.0, 0.7, 2.0])
def test_three_hz_wave_is_waving_on_consecutive_frames(t0: int, phase: float) -> None:
    results = run_sine(3.0, 0.1, t0=t0, phase=phase)
    waving = [r.waving for r in results]
    assert any(a and b for a, b in zip(waving, waving[1:])), "a 3 Hz wave must be seen on two frames in a row"
    best = max(results, key=lambda r: r.score)
    # 15 samples at 30 fps span 14/30 s; three changes of direction → 3 / 2 / (14/30) Hz.
    assert best.frequency_hz == pytest.approx(3 / 2 / (14 / 30))
    assert best.amplitude == pytest.approx(0.2, abs=0.02)
    assert best.count == 15
    expected = min(1.0, best.amplitude / 0.15) * (1 - abs(best.frequency_hz - 3.25) / 1.75)
    assert best.score == pytest.approx(expected)


@pytest.mark.parametrize(
    "hz,amplitude",
    [(0.5, 0.1), (8.0, 0.1), (3.0, 0.01), (3.0, 0.02)],
    ids=["too_slow", "too_fast", "tiny", "small"],
)
@pytest.mark.parametrize("phase", [0.0, 0.7])
def test_not_a_wave(hz: float, amplitude: float, phase: float) -> None:
    results = run_sine(hz, amplitude, phase=phase)
    assert not any(r.waving for r in results)
    assert all(r.score == 0.0 for r in results)


def test_frequency_out_of_band_is_reported_but_scores_zero() -> None:
    fast = run_sine(8.0, 0.1)[-1]
    assert fast.frequency_hz > 5.0 and fast.amplitude >= 0.05 and fast.score == 0.0
    slow = run_sine(0.5, 0.1)[-1]
    assert slow.frequency_hz < 1.5 and slow.score == 0.0


def test_needs_enough_samples_and_span() -> None:
    detector = WaveDetector()
    # Four samples of a big zig-zag: below the 5-sample minimum.
    results = [detector.update(round(i * 1e9 / FPS), 0.3 if i % 2 else 0.6) for i in range(4)]
    assert not any(r.waving for r in results)
    # Five samples within 0.1 s: enough samples but the span is below 0.2 s.
    detector = WaveDetector()
    results = [detector.update(i * 25_000_000, 0.3 + 0.1 * (i % 3)) for i in range(5)]
    assert results[-1].count == 5 and not results[-1].waving


def test_window_is_bounded_in_time_and_ignores_stale_or_bad_samples() -> None:
    detector = WaveDetector(window_sec=0.4833)  # 15 samples at 30 fps
    for i in range(40):
        result = detector.update(t_at(0, i), 0.5)
    assert result.count == 15
    assert [t for t, _x in detector.samples] == [t_at(0, i) for i in range(25, 40)]
    before = list(detector.samples)
    detector.update(t_at(0, 10), 0.9)  # older than the newest sample
    detector.update(t_at(0, 40), float("nan"))
    assert list(detector.samples) == before


def test_direction_changes_skips_still_steps() -> None:
    assert direction_changes([0.0, 1.0, 1.0, 0.0, 0.0, 1.0]) == 2
    assert direction_changes([0.0, 0.1, 0.2, 0.3]) == 0
    assert direction_changes([0.5]) == 0


def test_band_centre_follows_config() -> None:
    # The score peaks at the band's centre: with the band moved to 2-4 Hz, a 3.2 Hz
    # estimate sits near the centre and scores higher than with the default band.
    narrow = WaveDetector(min_hz=2.0, max_hz=4.0)
    default = WaveDetector()
    for i in range(15):
        x = 0.5 + 0.1 * math.sin(2 * math.pi * 3 * i / FPS + 0.7)
        r_narrow = narrow.update(t_at(0, i), x)
        r_default = default.update(t_at(0, i), x)
    assert r_narrow.frequency_hz == pytest.approx(r_default.frequency_hz)
    centre_distance = abs(r_narrow.frequency_hz - 3.0)
    assert r_narrow.score == pytest.approx(min(1, r_narrow.amplitude / 0.15) * (1 - centre_distance / 1.0))


def test_invalid_band_is_rejected() -> None:
    with pytest.raises(ValueError):
        WaveDetector(min_hz=5.0, max_hz=1.5)
    with pytest.raises(ValueError):
        WaveDetector(window_sec=0.0)
    with pytest.raises(ValueError):
        WaveDetector(window_sec=float("nan"))


@pytest.mark.parametrize("fps", [15, 10])
def test_the_window_keeps_the_same_stretch_of_time_at_any_rate(fps: int) -> None:
    detector = WaveDetector.from_config(FusionConfig())
    for i in range(3 * fps):
        result = detector.update(round(i * 1e9 / fps), 0.5)
    # 0.4833 s of samples: 8 at 15 fps (7 intervals of 1/15 s), 5 at 10 fps.
    assert result.count == {15: 8, 10: 5}[fps]
    span = (detector.samples[-1][0] - detector.samples[0][0]) / 1e9
    assert span <= 0.4833 < span + 1 / fps


def test_detector_pickles_mid_stream() -> None:
    original = WaveDetector()
    xs = [0.5 + 0.1 * math.sin(2 * math.pi * 3 * i / FPS) for i in range(60)]
    for i in range(20):
        original.update(t_at(0, i), xs[i])
    restored = pickle.loads(pickle.dumps(original))
    assert list(restored.samples) == list(original.samples)
    for i in range(20, 60):
        assert restored.update(t_at(0, i), xs[i]) == original.update(t_at(0, i), xs[i])
