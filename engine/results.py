"""Turning a family's raw audio into an ``Outcome``: shape and finiteness checks, then post-processing.

Non-finite samples fail the request with a message that says what to try: turning them into silence would
store a broken take as a completed one.
"""

from __future__ import annotations

import numpy as np

from engine import audio
from engine.backend import GenerationResult, Outcome


def audio_outcome(
    request_id: str,
    samples: np.ndarray,
    *,
    sample_rate: int,
    expected_shape: tuple[int, int],
    target_lufs: float | None,
    seed: int,
    steps: int,
    seconds: float,
    dtype: str,
) -> Outcome:
    """A completed outcome with post-processed audio, or a failed one when the samples are unusable."""
    if samples.shape != expected_shape:
        return Outcome(
            request_id,
            "failed",
            error=f"the model returned audio of shape {samples.shape}, expected {expected_shape}; this is a "
            "bug in engine, please report it",
        )
    bad = int(samples.size - np.count_nonzero(np.isfinite(samples)))
    if bad:
        return Outcome(
            request_id, "failed", error=non_finite_message(f"{bad:,} of {samples.size:,} samples", dtype)
        )
    processed = audio.postprocess(samples, sample_rate, target_lufs)
    return Outcome(
        request_id,
        "completed",
        result=GenerationResult(
            audio=processed,
            sample_rate=sample_rate,
            seed=seed,
            duration_s=processed.shape[1] / sample_rate,
            loudness_lufs=audio.integrated_loudness(processed, sample_rate),
            peak_dbfs=audio.peak_dbfs(processed),
            steps=steps,
            generation_seconds=seconds,
        ),
    )


def non_finite_message(what: str, dtype: str) -> str:
    hint = (
        "float16 overflows easily: run with DGX_MUSIC_DTYPE=bfloat16 or float32"
        if dtype == "float16"
        else "the weights may be damaged: check them with `dgx-music doctor` or try another dtype"
    )
    return f"generation produced non-finite values (NaN or infinity) in {what}; nothing was stored. {hint}"
