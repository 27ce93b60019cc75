"""Post-processing: loudness target, peak ceiling, fade-out, edge cases, resampling."""

from __future__ import annotations

import numpy as np
import pyloudnorm
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import audio

RATE = 32_000


def noise(channels: int, seconds: float, level: float = 0.1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((channels, round(seconds * RATE))) * level).astype(np.float32)


def measured_lufs(samples: np.ndarray) -> float:
    return float(pyloudnorm.Meter(RATE).integrated_loudness(samples.T.astype(np.float64)))


def measured_peak_dbfs(samples: np.ndarray) -> float:
    return float(20 * np.log10(np.max(np.abs(samples))))


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("level", [0.001, 0.1, 0.9])
@pytest.mark.parametrize("target", [-14.0, -23.0, -9.0])
def test_loudness_reaches_target_under_the_peak_ceiling(channels: int, level: float, target: float) -> None:
    signal = noise(channels, 3, level)
    signal[:, RATE] = 1.0  # a lone spike that a plain gain change would push far above the ceiling
    processed = audio.postprocess(signal, RATE, target)
    assert processed.shape == signal.shape and processed.dtype == np.float32
    assert measured_lufs(processed) == pytest.approx(target, abs=0.5)
    assert measured_peak_dbfs(processed) <= -1.0


def test_loudness_off_keeps_the_level() -> None:
    signal = noise(2, 2, 0.05)
    processed = audio.postprocess(signal, RATE, None)
    body = slice(0, RATE)  # before the fade-out
    np.testing.assert_array_equal(processed[:, body], signal[:, body])
    assert measured_lufs(processed) == pytest.approx(measured_lufs(signal), abs=0.1)


def test_loudness_off_still_limits_peaks() -> None:
    processed = audio.postprocess(noise(1, 2, 1.0), RATE, None)
    assert measured_peak_dbfs(processed) <= -1.0


def test_fade_out_ends_in_silence() -> None:
    processed = audio.postprocess(noise(2, 2, 0.1), RATE, None)
    assert np.all(processed[:, -1] == 0)
    assert np.max(np.abs(processed[:, -100:])) < np.max(np.abs(processed[:, -3000:-2000]))


@pytest.mark.parametrize(
    "signal",
    [
        np.zeros((2, 3 * RATE), np.float32),
        noise(1, 0.1),
        noise(2, 0.1),
        np.zeros((1, 0), np.float32),
        np.full((1, 1000), np.nan, np.float32),
    ],
    ids=["silence", "0.1s-mono", "0.1s-stereo", "empty", "nan"],
)
def test_edge_cases_give_finite_audio(signal: np.ndarray) -> None:
    processed = audio.postprocess(signal, RATE, -14.0)
    assert processed.shape == signal.shape
    assert np.all(np.isfinite(processed))
    assert np.isfinite(audio.peak_dbfs(processed))
    loudness = audio.integrated_loudness(processed, RATE)
    assert loudness is None or np.isfinite(loudness)


def test_silence_reports_no_loudness_and_the_peak_floor() -> None:
    silence = np.zeros((1, RATE), np.float32)
    assert audio.integrated_loudness(silence, RATE) is None
    assert audio.peak_dbfs(silence) == audio.PEAK_FLOOR_DBFS


def test_short_clip_is_normalised() -> None:
    processed = audio.postprocess(noise(1, 0.1, 0.01), RATE, -14.0)
    assert audio.integrated_loudness(processed, RATE) == pytest.approx(-14.0, abs=0.5)
    assert audio.peak_dbfs(processed) <= -1.0


def test_rejects_one_dimensional_audio() -> None:
    with pytest.raises(ValueError, match="channels x samples"):
        audio.postprocess(np.zeros(100, np.float32), RATE)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 2),
    st.integers(1, 4000),
    st.floats(0.01, 50.0),
    st.integers(0, 2**32 - 1),
)
def test_limiter_never_exceeds_the_ceiling(channels: int, samples: int, scale: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    signal = (rng.standard_normal((channels, samples)) ** 3 * scale).astype(np.float32)
    assert audio.peak_dbfs(audio.limit_peaks(signal, RATE)) <= audio.PEAK_CEILING_DBFS


def test_resample_keeps_length_ratio_and_tone() -> None:
    time = np.arange(RATE) / RATE
    tone = np.stack([np.sin(2 * np.pi * 440 * time)] * 2).astype(np.float32) * 0.5
    converted = audio.resample(tone, RATE, 48_000)
    assert converted.shape == (2, 48_000) and converted.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(converted[0, 4800:-4800]))
    assert np.fft.rfftfreq(38_400, 1 / 48_000)[np.argmax(spectrum)] == pytest.approx(440, abs=2)
    np.testing.assert_array_equal(audio.resample(tone, RATE, RATE), tone)


def test_fit_length_trims_and_pads() -> None:
    signal = noise(2, 0.01)
    assert audio.fit_length(signal, 100).shape == (2, 100)
    padded = audio.fit_length(signal, signal.shape[1] + 7)
    assert padded.shape == (2, signal.shape[1] + 7) and np.all(padded[:, -7:] == 0)
