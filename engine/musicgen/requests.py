"""The requests MusicGen takes, and their validation against what the loaded checkpoint can do.

``generate`` is a plain ``GenerationRequest``; ``continue`` prompts the decoder with the end of the user's
audio (a ``Continuation``; on a melody checkpoint conditioned on the text and the "no melody" chroma, as
audiocraft's ``generate_continuation`` does); ``melody`` (melody checkpoints) conditions on the user's tune
(an ``engine.musicgen.prefix.Melody``). A request continues audio or follows a tune, not both: audiocraft's
MusicGen offers no continuation with a melody either.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.backend import Capabilities, FieldError, InvalidRequest
from engine.conditioning import DecodedAudio, PreparedAudio, prepare_audio
from engine.musicgen.prefix import Melody, melody_of
from engine.musicgen.windows import MAX_PROMPT_SECONDS
from engine.request import GenerationRequest, validate_generation


@dataclass(frozen=True)
class Continuation:
    """A ``continue`` request: generate ``request.duration`` seconds after ``prompt`` (the user's audio at
    the model's rate and channels, cut to its last ``MAX_PROMPT_SECONDS``)."""

    request: GenerationRequest
    prompt: PreparedAudio


MusicgenRequest = GenerationRequest | Continuation | Melody


def generation_of(request: MusicgenRequest) -> GenerationRequest:
    """The generation parameters of any MusicGen request."""
    return request if isinstance(request, GenerationRequest) else request.request


def validate_request(
    capabilities: Capabilities, operation: str, params: Mapping[str, Any]
) -> MusicgenRequest:
    """``generate``: a ``GenerationRequest``. ``continue``: the same parameters plus ``source_audio``
    (an ``engine.conditioning.DecodedAudio``), whose end prompts the decoder; ``duration`` is what is
    added. ``melody`` (melody checkpoints): the same plus ``source_audio``, the tune to follow."""
    limit = capabilities.max_duration_s
    if operation == "melody" and operation not in capabilities.operations:
        raise InvalidRequest(
            [
                FieldError(
                    "melody_from",
                    f"model {capabilities.model_id!r} has no melody conditioning; use a MusicGen-Melody "
                    "checkpoint (model 'melody' or 'melody-large'), or leave melody_from out",
                )
            ]
        )
    if operation not in ("continue", "melody"):
        return validate_generation(operation, params, max_duration_s=limit)
    fields = dict(params)
    source = fields.pop("source_audio", None)
    if not isinstance(source, DecodedAudio):
        raise InvalidRequest([FieldError("source_audio", f"{operation} needs the audio to {operation}")])
    request = validate_generation("generate", fields, max_duration_s=limit)
    if operation == "melody":
        return melody_of(request, source)
    prompt = prepare_audio(
        source,
        sample_rate=capabilities.sample_rate,
        channels=capabilities.channels,
        max_seconds=MAX_PROMPT_SECONDS,
        keep="end",
    )
    return Continuation(request, prompt)
