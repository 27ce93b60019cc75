"""The conditioning prefix of MusicGen-Melody checkpoints, for the batching decode step.

MusicGen-Melody has no cross-attention. ``MusicgenMelodyForConditionalGeneration`` puts its conditioning in
front of the decoder's input embeddings instead: the projected chroma of the tune (repeated or cut to the
checkpoint's ``chroma_length`` frames), then the projected text encoder states, then the audio codes. With
classifier-free guidance the unconditional row has a prefix of the same length: the "no melody" chroma (a
one-hot of pitch class 0, projected) and zero text states, as transformers builds it for ``generate``.

In the running batch the prefix is written once into the slot's static cache when the request is admitted
(``DecodeStep.prefill_prefix``); the slot's audio decodes after it, each row at its own position, so melody
rows, text-only rows of the same checkpoint and rows joining mid-batch share every step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from engine.conditioning import DecodedAudio, prepare_audio
from engine.musicgen.chroma import MAX_SECONDS, SAMPLE_RATE, melody_chroma, melody_prefix, null_chroma
from engine.musicgen.decode import tokenize
from engine.request import GenerationRequest


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


@dataclass(frozen=True)
class Melody:
    """A ``melody`` request: ``request`` following the tune whose chroma (frames, 12) is ``chroma``; the tune
    was cut to its first ``MAX_SECONDS`` (``trimmed_seconds`` left out)."""

    request: GenerationRequest
    chroma: torch.Tensor
    trimmed_seconds: float = 0.0


def melody_of(request: GenerationRequest, source: DecodedAudio) -> Melody:
    """``request`` conditioned on ``source``: resampled to the chroma's rate (soxr), mixed to mono and cut
    to the first ``MAX_SECONDS``, as the melody checkpoints' feature extractor sees a tune."""
    tune = prepare_audio(source, sample_rate=SAMPLE_RATE, channels=1, max_seconds=MAX_SECONDS, keep="start")
    return Melody(request, melody_chroma(tune.audio, sample_rate=SAMPLE_RATE), tune.trimmed_seconds)
