"""EnCodec decoding of a whole long piece in overlapping chunks, cross-faded, so windows leave no seam.

Decoding 300 s of codes in one call would hold activations for 9.6 M samples per channel at the codec's widest
layers; decoding each generation window on its own would put a seam (the codec's LSTM starting cold) at every
window boundary. Instead the piece's codes are decoded in chunks of at most ``chunk_frames`` that overlap by
``overlap_frames``: each chunk after the first starts ``overlap_frames`` early, so its LSTM has warmed up on
codes the previous chunk already covered, and the two are cross-faded in the second half of the overlap,
away from both chunks' edges. Measured on the tiny test codec: after 25 frames of warm-up a chunk matches a
whole-sequence decode to 1e-7, and only a chunk's last frame differs (its convolutions see no future).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from engine.musicgen.continuation import frame_samples, rising_ramp
from engine.musicgen.decode import decode_audio

CHUNK_FRAMES = 1500  # 30 s: what a single request's decode already takes
OVERLAP_FRAMES = 100  # 2 s: 1 s of warm-up, then a 0.5 s cross-fade (``_fade_span``)


def _fade_span(overlap_frames: int) -> tuple[int, int]:
    """Where in an overlap (frames from its start) the cross-fade runs: its third quarter, after the later
    chunk's warm-up and well before the earlier chunk's last frames."""
    return overlap_frames // 2, overlap_frames // 2 + max(1, overlap_frames // 4)


def decode_piece(
    model: Any,
    codes: torch.Tensor,
    *,
    chunk_frames: int = CHUNK_FRAMES,
    overlap_frames: int = OVERLAP_FRAMES,
) -> np.ndarray:
    """float32 (channels, frames × frame_samples) audio of ``codes`` (codebooks, frames), decoded in
    overlapping chunks, one at a time; a single ``decode_audio`` call when the piece fits in one chunk."""
    frames = int(codes.shape[-1])
    if not 0 < 2 * overlap_frames < chunk_frames:
        raise ValueError(f"overlap_frames must be in [1, {(chunk_frames - 1) // 2}] (got {overlap_frames})")
    if frames <= chunk_frames:
        return decode_audio(model, [codes])[0]
    starts = list(range(0, frames - overlap_frames, chunk_frames - overlap_frames))
    hop = frame_samples(model)
    fade_start, fade_end = _fade_span(overlap_frames)
    ramp = (fade_end - fade_start) * hop
    rising = rising_ramp(ramp)
    audio: np.ndarray | None = None
    for index, start in enumerate(starts):
        last = index == len(starts) - 1
        chunk = decode_audio(model, [codes[:, start : min(start + chunk_frames, frames)]])[0]
        if audio is None:
            audio = np.zeros((chunk.shape[0], frames * hop), dtype=np.float32)
        # This chunk counts from the fade at its start to the fade at its end (next chunk's start).
        low = 0 if index == 0 else (start + fade_start) * hop
        high = frames * hop if last else (starts[index + 1] + fade_end) * hop
        weight = np.ones(high - low, dtype=np.float32)
        if index > 0:
            weight[:ramp] = rising
        if not last:
            weight[-ramp:] = 1 - rising
        audio[:, low:high] += chunk[:, low - start * hop : high - start * hop] * weight
    assert audio is not None
    return audio
