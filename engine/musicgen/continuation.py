"""Continuing a piece of audio: its EnCodec codes as the decoder's prompt, and the finished piece spliced
from the original samples and the generated audio.

As audiocraft's ``generate_continuation`` and transformers' ``generate(input_values=...)``: the prompt audio
is encoded by the checkpoint's own EnCodec, its codes prefill the decoder (the decode loop applies the delay
pattern to them like to any other codes), and the decoder carries on from the frame after the last one. The
codec's decoding of the whole code sequence then covers the prompt (resynthesised) and the added audio; the
result keeps the original samples exactly up to the join and cross-fades from them into the generated audio
over ``CROSSFADE_SECONDS`` just before the join, where both sound the same music.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

CROSSFADE_SECONDS = 0.05


@dataclass(frozen=True)
class PromptCodes:
    """A continuation prompt: ``codes`` (codebooks, frames), int64, on the model's device, in the decoder's
    codebook order (stereo checkpoints interleave left and right), encoding the last ``samples`` samples of
    the prompt audio (a whole number of codec frames)."""

    codes: torch.Tensor
    samples: int

    @property
    def frames(self) -> int:
        return int(self.codes.shape[-1])


def rising_ramp(length: int) -> np.ndarray:
    """Raised-cosine gains from near 0 to near 1 over ``length`` samples; with ``1 - ramp`` they sum to one,
    the cross-fade for two signals carrying the same music."""
    return (0.5 * (1 - np.cos(np.pi * (np.arange(length) + 0.5) / length))).astype(np.float32)


def frame_samples(model: Any) -> int:
    """Audio samples per codec frame (640 for MusicGen's 32 kHz EnCodec: 50 frames a second)."""
    return math.prod(model.config.audio_encoder.upsampling_ratios)


@torch.inference_mode()
def encode_prompt(model: Any, audio: np.ndarray) -> PromptCodes:
    """EnCodec codes of ``audio`` (float32 channels × samples at the model's rate and channel count, e.g.
    ``engine.conditioning.prepare_audio``'s) for a MusicGen ``model``.

    The first ``samples % frame`` samples (under 20 ms) are left out, so that every frame encodes real audio
    and the generated frames start exactly where the prompt ends. Each channel of a stereo checkpoint is
    encoded by the mono codec on its own and the codebooks interleaved, as transformers does.
    """
    channels = int(model.config.decoder.audio_channels)
    if audio.ndim != 2 or audio.shape[0] != channels:
        raise ValueError(f"prompt audio must be {channels} x samples for this model, got {audio.shape}")
    hop = frame_samples(model)
    frames = audio.shape[1] // hop
    if frames == 0:
        raise ValueError(f"prompt audio of {audio.shape[1]} samples is shorter than one codec frame ({hop})")
    codec = model.audio_encoder
    device = next(codec.parameters()).device
    waveform = torch.as_tensor(audio[:, audio.shape[1] - frames * hop :], dtype=torch.float32, device=device)
    # Each channel as a batch row of the mono codec: (channels, 1, samples) -> (1, channels, K, frames).
    encoded = codec.encode(waveform[:, None], bandwidth=None).audio_codes
    codes = encoded[0].transpose(0, 1).reshape(-1, frames)  # (K, channels, frames) -> K·channels rows
    return PromptCodes(codes=codes.long(), samples=frames * hop)


def splice(
    original: np.ndarray,
    decoded: np.ndarray,
    *,
    prompt_samples: int,
    added_samples: int,
    sample_rate: int,
    crossfade_seconds: float = CROSSFADE_SECONDS,
) -> np.ndarray:
    """The whole continued piece, ``original.shape[1] + added_samples`` samples long.

    ``original``: the audio the user gave, at ``sample_rate`` with the model's channels (as prepared,
    before ``encode_prompt`` dropped its first samples); ``decoded``: the codec's decoding of the prompt codes
    and the generated codes, whose first ``prompt_samples`` samples resynthesise the end of ``original``.
    ``original`` is kept exactly up to ``crossfade_seconds`` before its end; over that span a raised-cosine
    fade (``rising_ramp``) moves into ``decoded``, which then runs on for ``added_samples`` after the join.
    """
    channels, length = original.shape
    if decoded.shape[0] != channels or decoded.shape[1] < prompt_samples + added_samples:
        raise ValueError(
            f"decoded audio {decoded.shape} is shorter than the prompt's {prompt_samples} plus the "
            f"{added_samples} added samples, or has other channels than the original {original.shape}"
        )
    if not 0 < prompt_samples <= length:
        raise ValueError(f"prompt_samples must be in [1, {length}] (got {prompt_samples})")
    fade = min(round(crossfade_seconds * sample_rate), prompt_samples)
    start = prompt_samples - fade  # in ``decoded``; ``length - fade`` in ``original``
    rising = rising_ramp(fade)
    blended = original[:, length - fade :] * (1 - rising) + decoded[:, start:prompt_samples] * rising
    return np.concatenate(
        [
            original[:, : length - fade],
            blended.astype(np.float32),
            decoded[:, prompt_samples : prompt_samples + added_samples],
        ],
        axis=1,
    ).astype(np.float32, copy=False)
