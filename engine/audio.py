"""Post-processing of generated audio: loudness, peak limit, fade-out, resampling.

Arrays are float32, channels × samples, at any channel count. Nothing here returns NaN or infinity: silence
has no integrated loudness (``None``) and its peak is reported as ``PEAK_FLOOR_DBFS``.
"""

from __future__ import annotations

import numpy as np
import pyloudnorm
import soxr
from scipy.ndimage import minimum_filter1d, uniform_filter1d

PEAK_CEILING_DBFS = -1.0
PEAK_FLOOR_DBFS = -120.0  # reported for digital silence, so callers can store and serialise a finite number
FADE_OUT_SECONDS = 0.05
LIMITER_WINDOW_SECONDS = 0.005
_BLOCK_SECONDS = 0.4  # ITU-R BS.1770 gating block; pyloudnorm refuses anything shorter
_NORMALISE_ROUNDS = 12
_LOUDNESS_TOLERANCE_LU = 0.05
_CEILING = 10 ** (PEAK_CEILING_DBFS / 20) * 0.999  # a hair under, so float rounding cannot cross -1 dBFS


def _check(audio: np.ndarray) -> np.ndarray:
    if audio.ndim != 2:
        raise ValueError(f"audio must be channels x samples (2-D), got shape {audio.shape}")
    return np.nan_to_num(audio.astype(np.float32, copy=False), nan=0.0, posinf=0.0, neginf=0.0)


def integrated_loudness(audio: np.ndarray, rate: int) -> float | None:
    """Integrated loudness in LUFS, or ``None`` when every block is below the -70 LUFS gate (silence)."""
    audio = _check(audio)
    block = round(_BLOCK_SECONDS * rate)
    if audio.shape[1] < block:
        # Zero padding to one gating block measures the clip's energy as if followed by silence.
        audio = np.pad(audio, ((0, 0), (0, block - audio.shape[1])))
    loudness = pyloudnorm.Meter(rate).integrated_loudness(audio.T.astype(np.float64))
    return float(loudness) if np.isfinite(loudness) else None


def peak_dbfs(audio: np.ndarray) -> float:
    peak = float(np.max(np.abs(_check(audio)), initial=0.0))
    return max(20 * np.log10(peak), PEAK_FLOOR_DBFS) if peak > 0 else PEAK_FLOOR_DBFS


def fit_length(audio: np.ndarray, samples: int) -> np.ndarray:
    """Trim or zero-pad channels × samples audio to exactly ``samples``."""
    if audio.shape[1] >= samples:
        return audio[:, :samples]
    return np.pad(audio, ((0, 0), (0, samples - audio.shape[1])))


def fade_out(audio: np.ndarray, rate: int, seconds: float = FADE_OUT_SECONDS) -> np.ndarray:
    """Raised-cosine fade over the last ``seconds`` (at most a quarter of the clip), against clicks."""
    length = min(round(seconds * rate), audio.shape[1] // 4)
    if length == 0:
        return audio
    ramp = (0.5 * (1 + np.cos(np.linspace(0, np.pi, length)))).astype(np.float32)
    faded = audio.copy()
    faded[:, -length:] *= ramp
    return faded


def limit_peaks(audio: np.ndarray, rate: int) -> np.ndarray:
    """Look-ahead brick-wall limiter: no sample above -1 dBFS, with gain changes smoothed over a few ms.

    The gain a sample needs is min-filtered over the window ending at it, then averaged over the window
    starting at it; every value in that average is at most the sample's own needed gain, so the ceiling holds
    exactly while a peak's gain ramps in and out linearly instead of clipping.
    """
    needed = np.minimum(1.0, _CEILING / np.maximum(np.max(np.abs(audio), axis=0), 1e-12))
    if needed.min(initial=1.0) >= 1.0:
        return audio
    window = max(1, round(LIMITER_WINDOW_SECONDS * rate))
    held = minimum_filter1d(needed, size=window, origin=(window - 1) // 2, mode="nearest")
    gain = uniform_filter1d(held, size=window, origin=-(window // 2), mode="nearest")
    return (audio * gain).astype(np.float32)


def normalise_loudness(audio: np.ndarray, rate: int, target_lufs: float) -> np.ndarray:
    """Gain to ``target_lufs``, then peak limiting; silence (no measurable loudness) is returned unchanged.

    Limiting takes some loudness back, the more the denser the audio, so the gain is searched for: loudness
    after limiting rises monotonically with the gain, at most dB for dB, which brackets the answer. Every
    round limits the original, never an already limited copy.
    """
    loudness = integrated_loudness(audio, rate)
    if loudness is None:
        return audio
    low: tuple[float, float] | None = None  # (gain dB, loudness reached) below the target
    high: tuple[float, float] | None = None  # ... above it
    gain_db = target_lufs - loudness  # enough without limiting, so never too much
    best: tuple[float, np.ndarray] | None = None
    for _ in range(_NORMALISE_ROUNDS):
        limited = limit_peaks(audio * np.float32(10 ** (gain_db / 20)), rate)
        reached = integrated_loudness(limited, rate)
        error = abs(reached - target_lufs) if reached is not None else np.inf
        if best is None or error < best[0]:
            best = (error, limited)
        if error < _LOUDNESS_TOLERANCE_LU:
            break
        if reached is not None and reached > target_lufs:
            high = (gain_db, reached)
        else:
            low = (gain_db, reached if reached is not None else -np.inf)
        gain_db = _next_gain(low, high, target_lufs)
    assert best is not None
    return best[1]


def _next_gain(low: tuple[float, float] | None, high: tuple[float, float] | None, target: float) -> float:
    if low is None or not np.isfinite(low[1]):
        assert high is not None
        return high[0] - (high[1] - target)  # loudness falls at least dB for dB
    if high is None:
        return low[0] + 2 * (target - low[1])  # the limiter eats some of the gain: ask for more
    # Secant inside the bracket, which shrinks every round.
    fraction = (target - low[1]) / (high[1] - low[1])
    return low[0] + min(max(fraction, 0.1), 0.9) * (high[0] - low[0])


def postprocess(audio: np.ndarray, rate: int, target_lufs: float | None = -14.0) -> np.ndarray:
    """Fade out, normalise integrated loudness to ``target_lufs`` (``None``: keep the level), limit peaks."""
    audio = fade_out(_check(audio), rate)
    if target_lufs is not None:
        audio = normalise_loudness(audio, rate, target_lufs)
    return limit_peaks(audio, rate)


def resample(audio: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """High-quality (soxr HQ) sample-rate conversion of channels × samples audio."""
    if rate == target_rate:
        return _check(audio)
    converted = soxr.resample(_check(audio).T, rate, target_rate, quality="HQ")
    return np.ascontiguousarray(converted.T, dtype=np.float32)
