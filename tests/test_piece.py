"""A long piece's codes decoded in overlapping, cross-faded chunks: exact length, and the same audio as one
whole-sequence decode (no seam where chunks meet)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import MusicgenForConditionalGeneration

from engine.musicgen.decode import decode_audio
from engine.musicgen.piece import decode_piece


@pytest.mark.parametrize("stereo", [False, True])
def test_chunked_decoding_matches_decoding_the_whole_piece(
    tiny_checkpoint: Path, tiny_stereo_checkpoint: Path, stereo: bool
) -> None:
    model = MusicgenForConditionalGeneration.from_pretrained(
        tiny_stereo_checkpoint if stereo else tiny_checkpoint
    ).eval()
    codebooks = 8 if stereo else 4
    codes = torch.randint(0, 2048, (codebooks, 430), generator=torch.Generator().manual_seed(3))
    (whole,) = decode_audio(model, [codes])
    chunked = decode_piece(model, codes, chunk_frames=200, overlap_frames=60)  # chunks at 0, 140, 280
    assert chunked.shape == whole.shape == (2 if stereo else 1, 430 * 640)
    assert chunked.dtype == np.float32
    assert np.abs(whole).max() > 0.01
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-5)
    # Fitting in one chunk, it is exactly one decode.
    single = decode_piece(model, codes[:, :200], chunk_frames=200, overlap_frames=60)
    np.testing.assert_array_equal(single, decode_audio(model, [codes[:, :200]])[0])


def test_overlap_must_leave_room(tiny_checkpoint: Path) -> None:
    model = MusicgenForConditionalGeneration.from_pretrained(tiny_checkpoint).eval()
    with pytest.raises(ValueError, match="overlap_frames"):
        decode_piece(model, torch.zeros(4, 10, dtype=torch.long), chunk_frames=100, overlap_frames=50)
