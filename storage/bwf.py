"""Broadcast WAV (EBU Tech 3285 v2) encoding: 24-bit PCM with a `bext` chunk and an iXML chunk, via struct."""

from __future__ import annotations

import re
import struct
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from xml.sax.saxutils import escape

import numpy as np
import soxr

BEXT_VERSION = 2
UNKNOWN_LOUDNESS = 0x7FFF  # EBU Tech 3285: "set to 0x7FFF when the value is not known"
FULL_SCALE_24 = 2**23
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class BroadcastInfo:
    description: str  # the full prompt: cut to 256 ASCII in bext, kept whole in iXML
    originator: str  # the model
    originator_reference: str  # 32 characters at most: the generation id without dashes
    origination: datetime
    loudness_lufs: float | None
    coding_history: str  # free text after the A=PCM,F=..,W=..,M=.. prefix


def ascii_field(text: str, size: int) -> bytes:
    """Fold to ASCII (é -> e, other non-ASCII dropped), control characters to spaces, cut to `size` bytes."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return _CONTROL.sub(" ", folded).encode("ascii")[:size]


def true_peak_dbtp(audio: np.ndarray, sample_rate: int) -> float | None:
    """ITU-R BS.1770 true peak: the sample peak of a 4x oversampled signal; None for digital silence."""
    oversampled = soxr.resample(np.ascontiguousarray(audio.T), sample_rate, sample_rate * 4)
    peak = float(np.max(np.abs(oversampled))) if oversampled.size else 0.0
    return 20.0 * np.log10(peak) if peak > 0 else None


def _hundredths(value: float | None) -> int:
    if value is None or not np.isfinite(value):
        return UNKNOWN_LOUDNESS
    return int(np.clip(round(value * 100), -32768, 32766))


def _chunk(tag: bytes, payload: bytes) -> bytes:
    pad = b"\0" if len(payload) % 2 else b""
    return tag + struct.pack("<I", len(payload)) + payload + pad


def _bext(info: BroadcastInfo, audio: np.ndarray, sample_rate: int) -> bytes:
    channels = audio.shape[0]
    mode = {1: "mono", 2: "stereo"}.get(channels, "multichannel")
    history = (
        ascii_field(f"A=PCM,F={sample_rate},W=24,M={mode},T={info.coding_history}", 1024).rstrip() + b"\r\n"
    )
    fixed = struct.pack(
        "<256s32s32s10s8sIIH64s5h180s",
        ascii_field(info.description, 256),
        ascii_field(info.originator, 32),
        ascii_field(info.originator_reference, 32),
        info.origination.strftime("%Y-%m-%d").encode("ascii"),
        info.origination.strftime("%H:%M:%S").encode("ascii"),
        0,  # TimeReference low: the clip starts at 0 on a timeline (Ardour reads this as its position)
        0,  # TimeReference high
        BEXT_VERSION,
        b"",  # UMID: none
        _hundredths(info.loudness_lufs),
        UNKNOWN_LOUDNESS,  # loudness range: not measured
        _hundredths(true_peak_dbtp(audio, sample_rate)),
        UNKNOWN_LOUDNESS,  # max momentary loudness: not measured
        UNKNOWN_LOUDNESS,  # max short-term loudness: not measured
        b"",
    )
    return _chunk(b"bext", fixed + history)


def _ixml(info: BroadcastInfo) -> bytes:
    note = escape(_CONTROL.sub(" ", info.description))
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<BWFXML><IXML_VERSION>2.10</IXML_VERSION>'
        f"<PROJECT>dgx-music</PROJECT><FILE_UID>{escape(info.originator_reference)}</FILE_UID>"
        f"<NOTE>{note}</NOTE></BWFXML>"
    )
    return _chunk(b"iXML", xml.encode("utf-8"))


def validate_audio(audio: np.ndarray, sample_rate: int) -> None:
    if not isinstance(audio, np.ndarray) or audio.ndim != 2 or not 1 <= audio.shape[0] <= 8:
        shape = getattr(audio, "shape", type(audio).__name__)
        raise ValueError(
            f"audio must be a 2-D array (channels 1-8, samples), got {shape}: use audio[None, :]"
        )
    if audio.shape[1] == 0:
        raise ValueError("audio has no samples: a generation must produce at least one sample")
    if not np.all(np.isfinite(audio)):
        raise ValueError("audio contains NaN or infinite samples: check the model output before saving")
    if not 1000 <= sample_rate <= 384_000:
        raise ValueError(f"sample_rate must be 1000-384000 Hz, got {sample_rate}")


def encode(audio: np.ndarray, sample_rate: int, info: BroadcastInfo) -> bytes:
    """The complete file: fmt, bext, iXML, data. Samples beyond full scale are clipped."""
    validate_audio(audio, sample_rate)
    clipped = np.clip(audio.astype(np.float64), -1.0, 1.0)
    ints = np.clip(np.round(clipped * FULL_SCALE_24), -FULL_SCALE_24, FULL_SCALE_24 - 1).astype("<i4")
    frames = np.ascontiguousarray(ints.T)  # interleave: one frame = one sample of every channel
    pcm = frames.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    channels = audio.shape[0]
    fmt = struct.pack("<HHIIHH", 1, channels, sample_rate, sample_rate * channels * 3, channels * 3, 24)
    body = (
        b"WAVE"
        + _chunk(b"fmt ", fmt)
        + _bext(info, clipped, sample_rate)
        + _ixml(info)
        + _chunk(b"data", pcm)
    )
    return b"RIFF" + struct.pack("<I", len(body)) + body
