"""Melody chroma without torchaudio equals transformers' MusicgenMelodyFeatureExtractor (fixture made where
torchaudio works: tests/fixtures/make_chroma_fixture.py), and its decoder prefix equals transformers'."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import GenerationConfig, MusicgenMelodyForConditionalGeneration

from engine.musicgen.checkpoints import build_random_checkpoint
from engine.musicgen.chroma import HOP_LENGTH, chroma_energy, melody_chroma, melody_prefix, null_chroma

FIXTURE = Path(__file__).parent / "fixtures" / "chroma_reference.npz"
CASES = ("stereo", "mono", "short")


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as arrays:
        return dict(arrays)


@pytest.mark.parametrize("case", CASES)
def test_chroma_equals_the_feature_extractor(reference: dict[str, np.ndarray], case: str) -> None:
    audio = reference[f"{case}_audio"].astype(np.float32) / 32768.0
    energy = chroma_energy(audio).numpy()
    features = melody_chroma(audio).numpy()
    assert energy.shape == reference[f"{case}_energy"].shape
    np.testing.assert_allclose(energy, reference[f"{case}_energy"], rtol=0, atol=1e-4)
    assert features.shape == reference[f"{case}_features"].shape
    assert np.abs(features - reference[f"{case}_features"]).max() <= 1e-4
    # The fixture's tunes are not degenerate: several pitch classes win somewhere.
    assert len(set(features.argmax(-1).tolist())) >= (2 if case != "short" else 1)


def test_chroma_reads_the_first_30_seconds_only() -> None:
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((1, 32_000 * 31)).astype(np.float32)
    full = melody_chroma(audio)
    assert full.shape == (1 + 32_000 * 30 // HOP_LENGTH, 12)  # 235: the melody checkpoints' chroma_length
    torch.testing.assert_close(full, melody_chroma(audio[:, : 32_000 * 30]))


def test_melody_prefix_is_what_transformers_prepends(tmp_path: Path) -> None:
    model = MusicgenMelodyForConditionalGeneration.from_pretrained(
        build_random_checkpoint(tmp_path / "melody", melody=True)
    ).eval()
    chroma = melody_chroma(np.sin(np.arange(32_000 * 2) * 0.05, dtype=np.float32)[None])
    with torch.inference_mode():
        theirs = model._prepare_encoder_hidden_states_kwargs_for_generation(
            None,
            {"attention_mask": None, "input_features": chroma[None]},
            None,
            GenerationConfig(guidance_scale=1.0),
        )["encoder_hidden_states"][0]
        ours = melody_prefix(model, chroma)
        null = melody_prefix(model, null_chroma())
    assert ours.shape == (model.config.chroma_length, model.decoder.config.hidden_size)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert torch.equal(null, null[:1].expand_as(null))  # one "no melody" frame, repeated
