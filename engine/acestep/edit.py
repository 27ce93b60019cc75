"""Putting a regenerated section back into its source: the rest of the source stays sample for sample.

The DiT regenerates the section and the VAE decodes the whole clip, but a VAE round trip is not the identity,
so only the section (and a short cross-fade outside each of its edges) is taken from the decoded audio; every
other sample is the source's own. The new section is brought to the level of its surroundings first (the
decoded audio's level outside the section against the source's there), then peak-limited on its own span.
"""

from __future__ import annotations

import numpy as np

from engine import audio


def section_weights(samples: int, start: int, end: int, fade: int) -> np.ndarray:
    """Per-sample share of the new audio: 1 in [start, end), raised-cosine ramps over ``fade`` samples
    outside each edge, 0 elsewhere."""
    weights = np.zeros(samples, dtype=np.float32)
    weights[start:end] = 1.0
    before = min(fade, start)
    if before:
        weights[start - before : start] = _ramp(before)
    after = min(fade, samples - end)
    if after:
        weights[end : end + after] = _ramp(after)[::-1]
    return weights


def _ramp(length: int) -> np.ndarray:
    """0 → 1 over ``length`` samples, excluding both ends (those belong to the neighbours)."""
    phase = np.arange(1, length + 1, dtype=np.float64) / (length + 1)
    return (0.5 - 0.5 * np.cos(np.pi * phase)).astype(np.float32)


def splice(source: np.ndarray, decoded: np.ndarray, weights: np.ndarray, rate: int) -> np.ndarray:
    """``source`` where ``weights`` is 0 (exactly), ``decoded`` cross-faded in elsewhere."""
    kept = weights == 0
    gain = _level_match(source[:, kept], decoded[:, kept])
    changed = np.flatnonzero(~kept)
    result = source.copy()
    if changed.size == 0:
        return result
    low, high = int(changed[0]), int(changed[-1]) + 1
    span = weights[low:high]
    mixed = source[:, low:high] * (1 - span) + decoded[:, low:high] * gain * span
    result[:, low:high] = audio.limit_peaks(mixed.astype(np.float32), rate)
    return result


def _level_match(source: np.ndarray, decoded: np.ndarray) -> np.float32:
    """The gain that gives the decoded audio the source's RMS where both are kept; 1 when either is silent."""
    if source.size == 0:
        return np.float32(1.0)
    source_rms = float(np.sqrt(np.mean(np.square(source, dtype=np.float64))))
    decoded_rms = float(np.sqrt(np.mean(np.square(decoded, dtype=np.float64))))
    if source_rms < 1e-6 or decoded_rms < 1e-6:
        return np.float32(1.0)
    return np.float32(source_rms / decoded_rms)
