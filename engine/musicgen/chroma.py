"""Melody conditioning for MusicGen-Melody checkpoints: the chroma of a tune, without torchaudio.

transformers' ``MusicgenMelodyFeatureExtractor`` needs torchaudio (for its spectrogram), which has no build
for current torch. ``melody_chroma`` computes the same features from the same parts: a power spectrogram by
``torch.stft`` with the window normalisation torchaudio's ``Spectrogram(normalized=True)`` applies,
transformers' own chroma filter bank (``transformers.audio_utils.chroma_filter_bank``), a max-normalisation
per frame and a one-hot of each frame's strongest pitch class. ``tests/test_chroma.py`` checks it against the
extractor's output on a fixture made where torchaudio works (``tests/fixtures/make_chroma_fixture.py``).

As in the extractor, only the first ``max_seconds`` (30) count, stereo is averaged to mono, and audio shorter
than one FFT window is zero-padded on both sides. The extractor resamples other rates with torchaudio; here
audio must already be at ``sample_rate`` (``engine.conditioning`` resamples with soxr).

``melody_prefix`` turns chroma into what the melody decoder attends to: MusicGen-Melody has no
cross-attention; its conditioning (chroma frames, then text) is a prefix of the decoder's sequence, exactly as
``MusicgenMelodyForConditionalGeneration`` builds it for generation.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

# The extractor's defaults, which the published melody checkpoints' preprocessor configs keep.
SAMPLE_RATE = 32_000
N_FFT = 16_384
HOP_LENGTH = 4_096
NUM_CHROMA = 12
MAX_SECONDS = 30
_NORM_EPS = 1e-6  # as the extractor's max-normalisation


@functools.lru_cache(maxsize=4)
def _filter_bank(sample_rate: int, n_fft: int, num_chroma: int) -> torch.Tensor:
    from transformers.audio_utils import chroma_filter_bank

    bank = chroma_filter_bank(
        sampling_rate=sample_rate, num_frequency_bins=n_fft, tuning=0, num_chroma=num_chroma
    )
    return torch.from_numpy(bank).float()  # (num_chroma, n_fft // 2 + 1)


def _mono(audio: np.ndarray | torch.Tensor) -> torch.Tensor:
    waveform = torch.as_tensor(audio, dtype=torch.float32)
    if waveform.ndim == 2:  # channels × samples
        waveform = waveform.mean(dim=0)
    if waveform.ndim != 1:
        raise ValueError(f"audio must be samples or channels x samples, got shape {tuple(waveform.shape)}")
    return waveform


def chroma_energy(
    audio: np.ndarray | torch.Tensor,
    *,
    sample_rate: int = SAMPLE_RATE,
    n_fft: int = N_FFT,
    hop_length: int = HOP_LENGTH,
    num_chroma: int = NUM_CHROMA,
    max_seconds: float = MAX_SECONDS,
) -> torch.Tensor:
    """Chroma of ``audio`` (samples, or channels × samples at ``sample_rate``) before the one-hot:
    (frames, num_chroma) float32, each frame divided by its largest value. One frame per ``hop_length``
    samples of the first ``max_seconds``, plus one (a centred STFT)."""
    waveform = _mono(audio)[: round(max_seconds * sample_rate)]
    if waveform.shape[-1] < n_fft:
        pad = n_fft - waveform.shape[-1]
        waveform = F.pad(waveform, (pad // 2, pad // 2 + pad % 2))
    window = torch.hann_window(n_fft, device=waveform.device)
    spectrum = torch.stft(
        waveform,
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=n_fft,
        window=window,
        center=True,
        pad_mode="reflect",
        normalized=False,
        onesided=True,
        return_complex=True,
    )
    spectrum = spectrum / window.pow(2.0).sum().sqrt()  # torchaudio's normalized=True ("window")
    power = spectrum.abs().pow(2.0)  # (frequencies, frames)
    raw = _filter_bank(sample_rate, n_fft, num_chroma).to(power.device) @ power  # (num_chroma, frames)
    return F.normalize(raw, p=math.inf, dim=0, eps=_NORM_EPS).T.contiguous()


def melody_chroma(audio: np.ndarray | torch.Tensor, **options: Any) -> torch.Tensor:
    """The melody features MusicGen-Melody is conditioned on: (frames, num_chroma) float32, a 1 at each
    frame's strongest pitch class and 0 elsewhere. ``options`` are ``chroma_energy``'s."""
    energy = chroma_energy(audio, **options)
    return F.one_hot(energy.argmax(dim=-1), energy.shape[-1]).float()


def null_chroma(num_chroma: int = NUM_CHROMA) -> torch.Tensor:
    """The "no melody" features (1, num_chroma): what the unconditional half of guidance, and a text-only
    request to a melody checkpoint, are conditioned on."""
    chroma = torch.zeros(1, num_chroma)
    chroma[0, 0] = 1
    return chroma


def melody_prefix(model: Any, chroma: torch.Tensor) -> torch.Tensor:
    """The decoder-side conditioning of ``chroma`` (frames, num_chroma) for a MusicGen-Melody ``model``:
    (chroma_length, hidden) in the model's dtype, on its device. Projected to the decoder's width, then
    repeated or cut to the checkpoint's ``chroma_length`` as transformers does; the text encoder's states
    follow it in the decoder's prefix."""
    config = model.config
    states = chroma.to(device=model.device, dtype=model.dtype)[None]
    if config.num_chroma != model.decoder.config.hidden_size:
        states = model.audio_enc_to_dec_proj(states)
    length = int(config.chroma_length)
    if states.shape[1] < length:
        states = states.repeat(1, math.ceil(length / states.shape[1]), 1)
    return states[0, :length]
