"""The conditioning prefix of MusicGen-Melody checkpoints, for the batching decode step.

MusicGen-Melody has no cross-attention. ``MusicgenMelodyForConditionalGeneration`` puts its conditioning in
front of the decoder's input embeddings instead: the projected chroma of the tune (repeated or cut to the
checkpoint's ``chroma_length`` frames), then the projected text encoder states, then the audio codes. With
classifier-free guidance the unconditional row has a prefix of the same length: the "no melody" chroma (a
one-hot of pitch class 0, projected) and zero text states, as transformers builds it for ``generate``.

In the running batch the prefix is written into the slot's static cache when the request is admitted
(``DecodeStep.prefill_prefix``); the slot's audio decodes after it, each row at its own position, so melody
rows, text-only rows of the same checkpoint and rows joining mid-batch share every step.

A piece longer than one window (``engine.musicgen.windows``) follows the tune the way audiocraft's MusicGen
generates long melody pieces: each window is conditioned on the chroma of the ``WINDOW_SECONDS`` of the tune
that start where the window starts in the piece (its context included), the tune looped when it is shorter
than that (``Melody.window_chroma``). At each window boundary the slot's prefix is rewritten with that
window's chroma, then the window's audio prompt is prefilled after it. A piece of one window keeps the tune
as the checkpoint's feature extractor sees it (its first 30 s, the chroma frames repeated if shorter), as
transformers' ``generate`` does.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from engine.conditioning import DecodedAudio, prepare_audio
from engine.musicgen.chroma import SAMPLE_RATE, melody_chroma, melody_prefix, null_chroma
from engine.musicgen.decode import tokenize
from engine.musicgen.windows import MAX_PIECE_SECONDS, WINDOW_SECONDS, WindowPlan
from engine.request import GenerationRequest

# A tune is read up to the longest piece's length; a window reaching past that (the last of a 300 s piece)
# loops to the tune's start, as it does for any tune shorter than the piece.
MAX_TUNE_SECONDS = MAX_PIECE_SECONDS


def conditioning_prefix(
    model: Any, processor: Any, prompt: str, chroma: torch.Tensor | None, device: torch.device
) -> torch.Tensor:
    """The (2, positions, hidden) prefix of one request: row 0 conditioned on ``prompt`` and ``chroma``
    (frames, 12; None = no melody, as a text-only request), row 1 the unconditional row of guidance."""
    inputs = tokenize(processor, prompt, device)
    text = model.text_encoder(
        input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
    ).last_hidden_state
    if model.text_encoder.config.hidden_size != model.decoder.config.hidden_size:
        text = model.enc_to_dec_proj(text)
    text = (text * inputs["attention_mask"][..., None])[0]
    nothing = null_chroma(int(model.config.num_chroma))
    melody = melody_prefix(model, nothing if chroma is None else chroma)
    unconditional = melody_prefix(model, nothing)
    return torch.stack(
        [torch.cat([melody, text.to(melody.dtype)]), torch.cat([unconditional, torch.zeros_like(text)])]
    )


@dataclass(frozen=True, eq=False)
class Melody:
    """A ``melody`` request: ``request`` following ``tune`` (float32 mono samples at the chroma's
    ``SAMPLE_RATE``); the tune was cut to its first ``MAX_TUNE_SECONDS`` (``trimmed_seconds`` left out)."""

    request: GenerationRequest
    tune: np.ndarray
    trimmed_seconds: float = 0.0

    @functools.cached_property
    def chroma(self) -> torch.Tensor:
        """The chroma of a piece of one window: the tune's first ``MAX_SECONDS``, as the melody checkpoints'
        feature extractor computes it."""
        return melody_chroma(self.tune, sample_rate=SAMPLE_RATE)

    def window_chroma(self, start_seconds: float) -> torch.Tensor:
        """The chroma of a window of a longer piece that starts ``start_seconds`` into it: the tune's
        ``WINDOW_SECONDS`` from that time on, looped from its start wherever it ends (audiocraft's
        ``positions % wav_length``)."""
        return melody_chroma(tune_slice(self.tune, start_seconds, WINDOW_SECONDS), sample_rate=SAMPLE_RATE)


def tune_slice(tune: np.ndarray, start_seconds: float, seconds: float) -> np.ndarray:
    """``seconds`` of ``tune`` (samples at ``SAMPLE_RATE``) from ``start_seconds`` on, the tune repeated
    end to start as often as needed."""
    start = int(start_seconds * SAMPLE_RATE)
    return np.take(tune, np.arange(start, start + int(seconds * SAMPLE_RATE)), mode="wrap")


def window_chroma(
    melody: Melody | None, plan: WindowPlan, index: int, frame_seconds: float
) -> torch.Tensor | None:
    """The chroma window ``index`` of ``plan`` is conditioned on (codec frames of ``frame_seconds``): the
    tune as a one-window piece sees it (``Melody.chroma``), or the tune from where a longer piece's window
    starts (``Melody.window_chroma``); None (the "no melody" chroma) without a tune."""
    if melody is None:
        return None
    if len(plan.windows) == 1:
        return melody.chroma
    return melody.window_chroma(plan.windows[index].first_frame * frame_seconds)


def window_prefix(
    model: Any,
    processor: Any,
    prompt: str,
    melody: Melody | None,
    plan: WindowPlan,
    index: int,
    device: torch.device,
) -> torch.Tensor:
    """The conditioning prefix of window ``index`` of a melody checkpoint's piece (``conditioning_prefix``
    on the window's ``window_chroma``)."""
    codec = model.config.audio_encoder
    frame_seconds = math.prod(codec.upsampling_ratios) / codec.sampling_rate
    return conditioning_prefix(
        model, processor, prompt, window_chroma(melody, plan, index, frame_seconds), device
    )


def melody_of(request: GenerationRequest, source: DecodedAudio) -> Melody:
    """``request`` conditioned on ``source``: resampled to the chroma's rate (soxr), mixed to mono and cut
    to its first ``MAX_TUNE_SECONDS``."""
    tune = prepare_audio(
        source, sample_rate=SAMPLE_RATE, channels=1, max_seconds=MAX_TUNE_SECONDS, keep="start"
    )
    return Melody(request, tune.audio[0], tune.trimmed_seconds)
