"""Audio given to condition on: decoded from files and inline base64, refused with the argument named, then
resampled, mixed and trimmed for the model."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import soundfile

from engine.backend import InvalidRequest
from engine.conditioning import (
    MAX_INLINE_BYTES,
    DecodedAudio,
    decode_inline_audio,
    mix_channels,
    prepare_audio,
    read_audio_file,
)


def _tone(seconds: float, rate: int, channels: int = 1, frequency: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return np.stack([0.5 * np.sin(2 * np.pi * frequency * (c + 1) * t) for c in range(channels)]).astype(
        np.float32
    )


def _encoded(audio: np.ndarray, rate: int, format: str = "WAV", subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, audio.T, rate, format=format, subtype=subtype)
    return buffer.getvalue()


def _refusal(error: pytest.ExceptionInfo[InvalidRequest], argument: str) -> str:
    assert [field.field for field in error.value.errors] == [argument]
    return error.value.errors[0].message


@pytest.mark.parametrize("format", ["WAV", "FLAC"])
def test_inline_wav_and_flac_decode_to_channels_by_samples(format: str) -> None:
    audio = _tone(1.5, 44_100, channels=2)
    text = base64.b64encode(_encoded(audio, 44_100, format, "PCM_24")).decode()
    decoded = decode_inline_audio(text, "melody_from")
    assert decoded.sample_rate == 44_100 and decoded.audio.shape == audio.shape
    assert decoded.audio.dtype == np.float32 and decoded.skipped_seconds == 0
    np.testing.assert_allclose(decoded.audio, audio, atol=2**-22)
    # A data URI, as a browser or an agent may produce it, is the same audio.
    uri = decode_inline_audio(f"data:audio/{format.lower()};base64,{text}", "melody_from")
    np.testing.assert_array_equal(uri.audio, decoded.audio)
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))  # MIME line length
    np.testing.assert_array_equal(decode_inline_audio(wrapped, "melody_from").audio, decoded.audio)


def test_inline_audio_refusals_name_the_argument() -> None:
    with pytest.raises(InvalidRequest) as error:
        decode_inline_audio("not base64 at all!", "continue_from")
    assert "base64" in _refusal(error, "continue_from")
    with pytest.raises(InvalidRequest) as error:
        decode_inline_audio(base64.b64encode(b"RIFF\x00\x01garbage" * 50).decode(), "continue_from")
    assert "not readable audio" in _refusal(error, "continue_from")
    ogg = _encoded(_tone(1.5, 32_000), 32_000, "OGG", "VORBIS")
    with pytest.raises(InvalidRequest) as error:
        decode_inline_audio(base64.b64encode(ogg).decode(), "melody_from")
    assert "WAV or FLAC" in _refusal(error, "melody_from")
    short = _encoded(_tone(0.9, 32_000), 32_000)
    with pytest.raises(InvalidRequest) as error:
        decode_inline_audio(base64.b64encode(short).decode(), "continue_from")
    assert "0.90 s long; at least 1 s" in _refusal(error, "continue_from")
    oversized = base64.b64encode(b"\x00" * (MAX_INLINE_BYTES + 1)).decode()
    with pytest.raises(InvalidRequest) as error:
        decode_inline_audio(oversized, "continue_from")
    assert "at most 10 MiB" in _refusal(error, "continue_from")


def test_files_are_decoded_and_corrupt_ones_refused(tmp_path: Path) -> None:
    audio = _tone(2.0, 48_000)
    path = tmp_path / "take.flac"
    soundfile.write(path, audio.T, 48_000)
    decoded = read_audio_file(path, "continue_from")
    assert decoded.sample_rate == 48_000 and decoded.audio.shape == (1, 96_000)

    broken = tmp_path / "broken.wav"
    broken.write_bytes(_encoded(audio, 48_000)[:40])  # a header and nothing after it
    with pytest.raises(InvalidRequest) as error:
        read_audio_file(broken, "continue_from")
    assert "broken.wav" in _refusal(error, "continue_from")
    text = tmp_path / "notes.wav"
    text.write_text("these are not samples " * 100)
    with pytest.raises(InvalidRequest) as error:
        read_audio_file(text, "melody_from")
    assert "not readable audio" in _refusal(error, "melody_from")
    nan = audio.copy()
    nan[0, 100] = np.nan
    bad = tmp_path / "nan.wav"
    soundfile.write(bad, nan.T, 48_000, subtype="FLOAT")
    with pytest.raises(InvalidRequest) as error:
        read_audio_file(bad, "continue_from")
    assert "non-finite" in _refusal(error, "continue_from")


def test_a_long_file_is_read_only_as_far_as_needed(tmp_path: Path) -> None:
    rate = 8_000
    audio = (np.arange(rate * 12) % 1000 / 1000).astype(np.float32)[None]  # 12 s ramp: positions visible
    path = tmp_path / "long.wav"
    soundfile.write(path, audio.T, rate, subtype="FLOAT")
    tail = read_audio_file(path, "continue_from", max_seconds=5)
    np.testing.assert_array_equal(tail.audio, audio[:, -5 * rate :])
    assert tail.skipped_seconds == 7
    head = read_audio_file(path, "melody_from", max_seconds=5, keep="start")
    np.testing.assert_array_equal(head.audio, audio[:, : 5 * rate])


def test_prepare_resamples_mixes_and_trims_to_the_end() -> None:
    rate = 44_100
    stereo = _tone(40.0, rate, channels=2, frequency=220.0)
    prepared = prepare_audio(DecodedAudio(stereo, rate), sample_rate=32_000, channels=1, max_seconds=29.0)
    assert prepared.sample_rate == 32_000 and prepared.audio.shape == (1, 29 * 32_000)
    assert prepared.trimmed and prepared.trimmed_seconds == pytest.approx(11.0)
    # It is the end of the mono mix: compare with the source's last 29 s resampled by soxr independently.
    import soxr

    expected = soxr.resample(stereo.mean(axis=0), rate, 32_000, quality="HQ")[-29 * 32_000 :]
    middle = slice(1000, -1000)  # away from the edges, where resampling a whole or a part differ
    np.testing.assert_allclose(prepared.audio[0, middle], expected[middle], atol=1e-4)

    fits = prepare_audio(
        DecodedAudio(stereo[:, : 5 * rate], rate), sample_rate=32_000, channels=2, max_seconds=29
    )
    assert not fits.trimmed and fits.audio.shape == (2, 5 * 32_000)
    head = prepare_audio(
        DecodedAudio(stereo, rate), sample_rate=32_000, channels=2, max_seconds=30, keep="start"
    )
    assert head.audio.shape == (2, 30 * 32_000) and head.trimmed_seconds == pytest.approx(10.0)
    skipped = prepare_audio(
        DecodedAudio(stereo[:, :rate], rate, 3.0), sample_rate=32_000, channels=1, max_seconds=29
    )
    assert skipped.trimmed_seconds == 3.0  # what the reader skipped counts as trimmed


def test_channel_mixing() -> None:
    mono = np.array([[0.5, -0.25]], dtype=np.float32)
    np.testing.assert_array_equal(mix_channels(mono, 2), np.repeat(mono, 2, axis=0))
    stereo = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    np.testing.assert_array_equal(mix_channels(stereo, 1), [[0.5, 0.5]])
    assert mix_channels(stereo, 2) is stereo
    surround = np.arange(12, dtype=np.float32).reshape(6, 2)
    np.testing.assert_allclose(mix_channels(surround, 2), [[5.0, 6.0], [5.0, 6.0]])
