"""Stems from a tiny random HTDemucs written on disk in demucs' layout and loaded back through it.

Random weights do not separate anything, so these tests check what the plumbing owes: the same numbers as
demucs' own apply_model, shapes, exact lengths, resampling both ways, level, step-wise progress,
cancellation, batching, and errors that name the argument.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from demucs.apply import apply_model

from engine.audio import fit_length, resample
from engine.demucs import (
    DemucsSeparator,
    SeparationInputError,
    SeparationRequest,
    UnknownSeparatorError,
    load_separator,
)
from engine.demucs.checkpoints import build_random_separator
from engine.demucs.names import SIX_STEMS
from engine.errors import ModelNotAvailableError

FOUR = ["drums", "bass", "other", "vocals"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_random_separator(tmp_path_factory.mktemp("demucs") / "htdemucs-tiny")


@pytest.fixture(scope="module")
def separator(tiny_dir: Path) -> DemucsSeparator:
    return load_separator(tiny_dir, device="cpu")


def noise(channels: int, seconds: float, rate: int, seed: int = 0, level: float = 0.1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (level * rng.standard_normal((channels, round(seconds * rate)))).astype(np.float32)


def demucs_reference(separator: DemucsSeparator, audio: np.ndarray, rate: int) -> np.ndarray:
    """What demucs' own apply_model gives (no random shifts), standardised as demucs.api does, at `rate`."""
    stereo = audio if audio.shape[0] == 2 else np.repeat(audio, 2, axis=0)
    mix = torch.from_numpy(resample(stereo, rate, separator.sample_rate))
    reference = mix.mean(0)
    offset, scale = reference.mean(), reference.std() + 1e-8
    stems = apply_model(separator.bag, ((mix - offset) / scale)[None], shifts=0, split=True, overlap=0.25)[0]
    stems = stems * scale + offset / len(separator.sources)
    if audio.shape[0] == 1:
        stems = stems.mean(dim=1, keepdim=True)
    flat = resample(stems.reshape(-1, stems.shape[-1]).numpy(), separator.sample_rate, rate)
    return fit_length(flat, audio.shape[1]).reshape(len(separator.sources), audio.shape[0], -1)


def stacked(stems: dict[str, np.ndarray]) -> np.ndarray:
    return np.stack(list(stems.values()))


def test_loaded_from_disk_with_the_published_shape(separator: DemucsSeparator, tiny_dir: Path) -> None:
    files = sorted(p.suffix for p in tiny_dir.iterdir())
    assert files == [".safetensors", ".yaml"]
    caps = separator.capabilities
    assert caps.sources == tuple(FOUR) and caps.sample_rate == 44100 and caps.model_channels == 2
    assert caps.segment_seconds == 4.0 and caps.models_in_bag == 1 and caps.model == "htdemucs-tiny"


@pytest.mark.parametrize(("rate", "channels", "seconds"), [(32000, 1, 8.0), (48000, 2, 5.5)])
def test_stems_match_demucs_and_keep_the_source_rate_channels_and_length(
    separator: DemucsSeparator, rate: int, channels: int, seconds: float
) -> None:
    audio = noise(channels, seconds, rate)[:, :-1]  # an odd length: no rounding may hide
    result = separator.separate(audio, rate)
    assert result is not None
    assert list(result.stems) == FOUR and result.sample_rate == rate and result.model == "htdemucs-tiny"
    for stem in result.stems.values():
        assert stem.shape == audio.shape and stem.dtype == np.float32
        assert np.isfinite(stem).all() and np.abs(stem).max() > 0
    np.testing.assert_allclose(stacked(result.stems), demucs_reference(separator, audio, rate), atol=2e-6)


def test_a_bag_of_specialists_matches_demucs(tmp_path: Path) -> None:
    bag = load_separator(build_random_separator(tmp_path / "ft", name="ft-tiny", models=4), device="cpu")
    assert bag.capabilities.models_in_bag == 4
    audio = noise(2, 3.0, 44100, seed=3)
    result = bag.separate(audio, 44100)
    assert result is not None and result.steps == 4 * 1
    np.testing.assert_allclose(stacked(result.stems), demucs_reference(bag, audio, 44100), atol=2e-6)


def test_stems_follow_the_level_of_the_mix(separator: DemucsSeparator) -> None:
    """No stem is normalised on its own: half the input level gives half of every stem."""
    audio = noise(2, 2.0, 44100, seed=1, level=0.3)
    loud, quiet = separator.separate(audio, 44100), separator.separate(audio * 0.5, 44100)
    assert loud is not None and quiet is not None
    np.testing.assert_allclose(stacked(quiet.stems), 0.5 * stacked(loud.stems), atol=1e-6)


def test_steps_report_progress_and_cancel_mid_separation(separator: DemucsSeparator) -> None:
    total = separator.admit("long", SeparationRequest(noise(2, 20.0, 44100), 44100))
    assert total == 7  # 4 s segments every 3 s over 20 s
    assert separator.progress("long") == (0, 7)
    assert separator.step() == [] and separator.step() == []
    assert separator.progress("long") == (2, 7)
    assert separator.cancel("long") and not separator.cancel("long")
    assert separator.progress("long") is None and separator.active == [] and separator.step() == []

    seen: list[tuple[int, int]] = []
    cancelled = separator.separate(
        noise(1, 20.0, 32000), 32000, on_step=lambda done, total: seen.append((done, total)),
        is_cancelled=lambda: len(seen) == 3,
    )  # fmt: skip
    assert cancelled is None and seen == [(1, 7), (2, 7), (3, 7)] and separator.active == []


def test_results_come_as_soon_as_each_separation_is_done(separator: DemucsSeparator) -> None:
    long_audio, short_audio = noise(2, 12.0, 48000, seed=4), noise(1, 3.0, 32000, seed=5)
    assert separator.admit("long", SeparationRequest(long_audio, 48000)) == 4
    separator.step()
    assert separator.admit("short", SeparationRequest(short_audio, 32000)) == 1  # joins between steps
    [(finished, short)] = separator.step()  # one batch: long's 2nd segment with short's only one
    assert finished == "short" and separator.progress("long") == (2, 4)
    while not (done := separator.step()):
        pass
    [(finished, long)] = done
    assert finished == "long" and separator.active == []
    # Batch-mates do not change a separation's stems.
    alone_short, alone_long = separator.separate(short_audio, 32000), separator.separate(long_audio, 48000)
    assert alone_short is not None and alone_long is not None
    np.testing.assert_allclose(stacked(short.stems), stacked(alone_short.stems), atol=1e-5)
    np.testing.assert_allclose(stacked(long.stems), stacked(alone_long.stems), atol=1e-5)


@pytest.mark.parametrize(
    ("audio", "rate", "argument", "message"),
    [
        (np.zeros((1, 16000), np.float32), 32000, "audio", "must last 1-1200 s"),
        (np.zeros((3, 48000), np.float32), 48000, "audio", "mono or stereo"),
        (np.full((2, 48000), np.nan, np.float32), 48000, "audio", "NaN"),
        (np.zeros((2, 48000), np.float32), 1000, "sample_rate", "8000-384000"),
        (np.zeros((2, 48000), np.int16), 48000, "audio", "float samples"),
    ],
)
def test_bad_audio_is_refused_naming_the_argument(
    separator: DemucsSeparator, audio: np.ndarray, rate: int, argument: str, message: str
) -> None:
    with pytest.raises(SeparationInputError, match=message) as refused:
        separator.admit("bad", SeparationRequest(audio, rate))
    assert refused.value.argument == argument and str(refused.value).startswith(f"{argument}: ")
    assert separator.active == []


def test_an_unknown_separator_is_named_with_the_choices() -> None:
    with pytest.raises(UnknownSeparatorError, match=r"model='spleeter' is not a separator") as refused:
        load_separator("spleeter")
    assert refused.value.argument == "model"
    assert "htdemucs, htdemucs_6s, htdemucs_ft" in str(refused.value)


def test_offline_without_weights_says_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(ModelNotAvailableError, match=r"separator 'htdemucs_6s'.*offline") as refused:
        load_separator("htdemucs_6s", offline=True, cache_dir=tmp_path / "empty-cache")
    assert "`dgx-music pull htdemucs_6s`" in str(refused.value)


def test_a_published_name_loads_from_the_hub_cache_offline(tmp_path: Path) -> None:
    """The cache layout huggingface_hub keeps (refs/main -> snapshots/<commit>/files), as a pull leaves it."""
    cache = tmp_path / "hub"
    repo = cache / "models--adefossez--HTDemucs-6s"
    commit = "0123456789abcdef0123456789abcdef01234567"
    build_random_separator(repo / "snapshots" / commit, name="htdemucs_6s", sources=SIX_STEMS, seed=2)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    six = load_separator("HTDemucs_6s", offline=True, cache_dir=cache, device="cpu")
    assert six.name == "htdemucs_6s" and six.sources == SIX_STEMS
    result = six.separate(noise(2, 1.5, 44100), 44100)
    assert result is not None and list(result.stems) == list(SIX_STEMS)


def test_a_directory_missing_a_listed_model_is_reported(tiny_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    next(broken.glob("*.safetensors")).unlink()
    with pytest.raises(ModelNotAvailableError, match=r"lists model .* but .* is missing"):
        load_separator(broken)
