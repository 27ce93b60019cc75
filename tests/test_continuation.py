"""Continuation prompts: EnCodec codes of the prompt audio as transformers computes them for generate, and the
finished piece spliced from the original samples and the decoded audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import MusicgenForConditionalGeneration

from engine.conditioning import DecodedAudio, prepare_audio
from engine.musicgen.continuation import encode_prompt, frame_samples, splice
from engine.musicgen.decode import decode_audio
from engine.musicgen.piece import decode_piece
from engine.musicgen.windows import MAX_PROMPT_SECONDS, plan_piece

RATE = 32_000


def _model(checkpoint: Path) -> MusicgenForConditionalGeneration:
    return MusicgenForConditionalGeneration.from_pretrained(checkpoint).eval()


def _music(channels: int, samples: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / RATE
    tones = [0.3 * np.sin(2 * np.pi * f * t) for f in rng.uniform(100, 1000, size=(channels, 3)).ravel()]
    mix = np.reshape(tones, (channels, 3, samples)).sum(axis=1) + 0.01 * rng.standard_normal(
        (channels, samples)
    )
    return mix.astype(np.float32)


@pytest.mark.parametrize("stereo", [False, True])
def test_prompt_codes_are_what_generate_would_prefill(
    tiny_checkpoint: Path, tiny_stereo_checkpoint: Path, stereo: bool
) -> None:
    model = _model(tiny_stereo_checkpoint if stereo else tiny_checkpoint)
    channels = 2 if stereo else 1
    hop = frame_samples(model)
    audio = _music(channels, 2 * RATE + 123)  # not a whole number of frames: the first 123 samples go
    prompt = encode_prompt(model, audio)
    assert prompt.samples == 100 * hop and prompt.frames == 100
    assert prompt.codes.shape == (4 * channels, 100) and prompt.codes.dtype == torch.long
    assert int(prompt.codes.min()) >= 0 and int(prompt.codes.max()) < model.decoder.config.vocab_size
    with torch.inference_mode():
        theirs = model._prepare_audio_encoder_kwargs_for_generation(
            torch.from_numpy(audio[None, :, 123:]), {}
        )["decoder_input_ids"]
    torch.testing.assert_close(prompt.codes, theirs, rtol=0, atol=0)  # (K·batch, frames) for one request
    # The codes mean something: decoding them gives audio of the prompt's length, not constant.
    (decoded,) = decode_audio(model, [prompt.codes])
    assert decoded.shape == (channels, prompt.samples) and decoded.std() > 0


def test_encode_prompt_refuses_other_channel_counts(tiny_checkpoint: Path) -> None:
    with pytest.raises(ValueError, match="1 x samples"):
        encode_prompt(_model(tiny_checkpoint), _music(2, RATE))


def test_splice_keeps_the_original_then_crossfades_into_the_generated_audio() -> None:
    original = _music(2, 3 * RATE + 77, seed=1)
    prompt_samples = 3 * RATE  # the whole frames encode_prompt kept: the end of the original
    added = 2 * RATE + 5
    generated = _music(2, prompt_samples + added + 640, seed=2)  # the codec decodes whole frames: longer
    decoded = generated.copy()
    decoded[:, :prompt_samples] = original[:, -prompt_samples:] * 0.9  # a slightly different resynthesis
    piece = splice(original, decoded, prompt_samples=prompt_samples, added_samples=added, sample_rate=RATE)

    fade = round(0.05 * RATE)
    join = original.shape[1] - fade
    assert piece.shape == (2, original.shape[1] + added) and piece.dtype == np.float32
    np.testing.assert_array_equal(piece[:, :join], original[:, :join])  # the user's samples, exactly
    np.testing.assert_array_equal(
        piece[:, original.shape[1] :], decoded[:, prompt_samples : prompt_samples + added]
    )
    # Inside the fade: between the two, moving monotonically from the original to the decoded audio.
    gain = piece[:, join : original.shape[1]] / original[:, join:]
    assert np.all(np.diff(gain, axis=1) <= 1e-6)
    assert gain[:, 0] == pytest.approx(1.0, abs=1e-3) and gain[:, -1] == pytest.approx(0.9, abs=1e-3)


def test_splice_checks_its_lengths() -> None:
    original = _music(1, RATE)
    with pytest.raises(ValueError, match="shorter"):
        splice(original, _music(1, RATE), prompt_samples=RATE, added_samples=10, sample_rate=RATE)
    with pytest.raises(ValueError, match="prompt_samples"):
        splice(original, _music(1, 3 * RATE), prompt_samples=2 * RATE, added_samples=10, sample_rate=RATE)


def test_the_continuation_parts_compose(tiny_checkpoint: Path) -> None:
    """File -> prepared prompt -> codes -> a piece's codes (prompt, then new ones, as the windows give them)
    -> decoded -> spliced: prompt + added samples long, the user's samples exact up to the cross-fade."""
    model = _model(tiny_checkpoint)
    source = DecodedAudio(_music(2, 44_100 * 3 + 1000), 44_100)  # stereo at 44.1 kHz for a mono model
    prepared = prepare_audio(source, sample_rate=RATE, channels=1, max_seconds=MAX_PROMPT_SECONDS)
    prompt = encode_prompt(model, prepared.audio)
    added = round(4.5 * RATE)
    plan = plan_piece(4.5, sample_rate=RATE, frame_samples=640, delay_tail=3, prompt_frames=prompt.frames)
    generator = torch.Generator().manual_seed(5)
    new = torch.randint(0, 2048, (4, plan.new_frames), generator=generator)  # what the decoder would sample
    codes = torch.cat([prompt.codes, new], dim=-1)
    decoded = decode_piece(model, codes)
    piece = splice(
        prepared.audio, decoded, prompt_samples=prompt.samples, added_samples=added, sample_rate=RATE
    )
    join = prepared.audio.shape[1] - round(0.05 * RATE)
    assert piece.shape == (1, prepared.audio.shape[1] + added)
    assert piece.shape[1] / RATE == pytest.approx(3 + 1000 / 44_100 + 4.5, abs=1 / RATE)
    np.testing.assert_array_equal(piece[:, :join], prepared.audio[:, :join])
