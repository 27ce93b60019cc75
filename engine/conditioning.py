"""Audio a request is conditioned on (``continue_from``, ``melody_from``): decoding it, then shaping it for a
model.

Two steps, both refusing bad input with an ``InvalidRequest`` that names the argument:

- ``read_audio_file`` / ``decode_inline_audio`` turn a file (anything libsndfile reads) or an inline base64
  WAV/FLAC (at most ``MAX_INLINE_BYTES`` decoded) into float32 channels × samples at the file's own rate.
  Unreadable, corrupt, empty, non-finite or shorter-than-``MIN_SECONDS`` audio is refused. A long file is
  read only as far as the caller needs (``max_seconds``, from its start or its end), never whole.
- ``prepare_audio`` resamples to the model's rate (soxr), mixes to its channel count and keeps at most
  ``max_seconds`` of it (the end for a continuation prompt, the start for a melody), saying how much it cut.

Which files may be read at all is the application's rule (``mcp_server.inputs``); this module opens what it is
given.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import numpy as np
import soundfile

from engine.audio import resample
from engine.backend import FieldError, InvalidRequest

MIN_SECONDS = 1.0
MAX_INLINE_BYTES = 10 * 1024 * 1024
INLINE_FORMATS = ("WAV", "WAVEX", "RF64", "FLAC")  # libsndfile's names for WAV (and its 64-bit forms), FLAC
_DATA_URI = re.compile(r"^data:[\w./+-]*;base64,", re.IGNORECASE)

Keep = Literal["start", "end"]


@dataclass(frozen=True)
class DecodedAudio:
    """Audio as read: float32 channels × samples at ``sample_rate``; ``skipped_seconds`` of the source before
    (``keep="end"``) or after (``keep="start"``) it were not read."""

    audio: np.ndarray
    sample_rate: int
    skipped_seconds: float = 0.0

    @property
    def seconds(self) -> float:
        return self.audio.shape[1] / self.sample_rate


@dataclass(frozen=True)
class PreparedAudio:
    """Audio ready for a model: float32 channels × samples at ``sample_rate`` with the model's channels.
    ``trimmed_seconds`` of the source were left out to fit (0 when it all fitted)."""

    audio: np.ndarray
    sample_rate: int
    trimmed_seconds: float

    @property
    def trimmed(self) -> bool:
        return self.trimmed_seconds > 0

    @property
    def seconds(self) -> float:
        return self.audio.shape[1] / self.sample_rate


def _refuse(argument: str, message: str) -> InvalidRequest:
    return InvalidRequest([FieldError(argument, message)])


def _read(
    source: str | Path | IO[bytes],
    argument: str,
    what: str,
    max_seconds: float | None,
    keep: Keep,
    formats: tuple[str, ...] | None = None,
) -> DecodedAudio:
    try:
        with soundfile.SoundFile(source) as sound:
            if formats is not None and sound.format not in formats:
                raise _refuse(argument, f"{what} is {sound.format}; inline audio must be WAV or FLAC")
            rate, total = int(sound.samplerate), int(sound.frames)
            wanted = total if max_seconds is None else min(total, round(max_seconds * rate))
            if keep == "end" and wanted < total:
                sound.seek(total - wanted)
            samples = sound.read(wanted, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as error:  # what libsndfile raises on junk
        raise _refuse(
            argument, f"{what} is not readable audio ({_reason(error)}); give a WAV, FLAC or OGG file"
        ) from None
    if total / rate < MIN_SECONDS:
        raise _refuse(argument, f"{what} is {total / rate:.2f} s long; at least {MIN_SECONDS:g} s is needed")
    if samples.shape[0] < wanted:  # the header promised more frames than the file holds
        raise _refuse(argument, f"{what} is truncated ({samples.shape[0]:,} of {wanted:,} frames readable)")
    if not np.isfinite(samples).all():
        raise _refuse(argument, f"{what} contains non-finite samples (NaN or infinity); export it again")
    return DecodedAudio(
        audio=np.ascontiguousarray(samples.T), sample_rate=rate, skipped_seconds=(total - wanted) / rate
    )


def _reason(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:160]


def read_audio_file(
    path: Path, argument: str, *, max_seconds: float | None = None, keep: Keep = "end"
) -> DecodedAudio:
    """Decode the audio file at ``path`` (already checked to be allowed), reading at most ``max_seconds`` of
    it from its ``keep`` side."""
    if not path.is_file():
        raise _refuse(argument, f"{path} is not a file")
    return _read(path, argument, f"the file {path.name!r}", max_seconds, keep)


def decode_inline_audio(
    data: str, argument: str, *, max_seconds: float | None = None, keep: Keep = "end"
) -> DecodedAudio:
    """Decode base64 WAV or FLAC (optionally as a ``data:audio/...;base64,`` URI), at most
    ``MAX_INLINE_BYTES`` once decoded."""
    text = "".join(_DATA_URI.sub("", data.strip(), count=1).split())  # wrapped (MIME) base64 has newlines
    # Base64 is 4 characters per 3 bytes: refuse an oversized text before decoding any of it.
    if len(text) > (MAX_INLINE_BYTES + 2) // 3 * 4 + 4:
        raise _refuse(argument, _too_large(len(text) * 3 // 4))
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _refuse(argument, "is not valid base64; pass WAV or FLAC bytes encoded as base64") from None
    if len(raw) > MAX_INLINE_BYTES:
        raise _refuse(argument, _too_large(len(raw)))
    return _read(io.BytesIO(raw), argument, "the inline audio", max_seconds, keep, INLINE_FORMATS)


def _too_large(size: int) -> str:
    return (
        f"inline audio is {size / 2**20:.1f} MiB; at most {MAX_INLINE_BYTES / 2**20:g} MiB can be sent "
        "inline; put the file in an input directory and pass its path"
    )


def mix_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    """``audio`` (channels × samples) with ``channels`` channels: averaged down to mono, mono copied to every
    channel; stereo to stereo unchanged. More than two source channels are averaged (no surround layout is
    assumed) before being copied."""
    if audio.shape[0] == channels:
        return audio
    mono = audio.mean(axis=0, keepdims=True, dtype=np.float64).astype(np.float32)
    return np.repeat(mono, channels, axis=0)


def prepare_audio(
    decoded: DecodedAudio,
    *,
    sample_rate: int,
    channels: int,
    max_seconds: float,
    keep: Keep = "end",
) -> PreparedAudio:
    """``decoded`` at ``sample_rate`` (soxr HQ), mixed to ``channels``, cut to its last (``keep="end"``) or
    first ``max_seconds``; ``trimmed_seconds`` counts what was cut here and what the reader skipped."""
    audio = mix_channels(resample(decoded.audio, decoded.sample_rate, sample_rate), channels)
    limit = round(max_seconds * sample_rate)
    cut = max(0, audio.shape[1] - limit)
    if cut:
        audio = audio[:, cut:] if keep == "end" else audio[:, :limit]
    return PreparedAudio(
        audio=np.ascontiguousarray(audio, dtype=np.float32),
        sample_rate=sample_rate,
        trimmed_seconds=decoded.skipped_seconds + cut / sample_rate,
    )
