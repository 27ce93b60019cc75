"""The ACE-Step backend on tiny random pipelines built on disk in the diffusers layout, loaded like real ones.

Every song here is short and takes two denoising steps: the tiny VAE's decode of 10 s of 48 kHz stereo is
most of each test's time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from engine import audio
from engine.acestep.backend import AceStepBackend
from engine.acestep.checkpoints import build_random_checkpoint
from engine.acestep.loading import load
from engine.acestep.request import SongRequest
from engine.backend import Decision, InvalidRequest, Outcome, run_to_completion
from engine.errors import EngineError, ModelNotAvailableError

RATE = 48_000
SONG = {"prompt": "dreamy synth pop", "lyrics": "[verse]\nCity lights", "duration": 10.01, "bpm": 96,
        "key": "A minor", "time_signature": 4, "steps": 2, "seed": 7}  # fmt: skip
MATE = {"prompt": "hard rock anthem with distorted guitars and pounding drums", "duration": 10.01,
        "lyrics": "[chorus]\nSing it loud, sing it high, we are burning through the night", "steps": 2,
        "seed": 8}  # fmt: skip


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_random_checkpoint(tmp_path_factory.mktemp("acestep") / "tiny", audio_tokenizer=True)


@pytest.fixture(scope="module")
def backend(checkpoint: Path) -> AceStepBackend:
    return AceStepBackend.load(str(checkpoint), local_files_only=True, max_batch=4)


@pytest.fixture(scope="module")
def first_song(backend: AceStepBackend) -> np.ndarray:
    outcome = _run(backend, backend.validate("generate", SONG))
    assert outcome.result is not None
    return outcome.result.audio


def _run(backend: AceStepBackend, request: SongRequest) -> Outcome:
    outcome = run_to_completion(backend, [("only", request)])["only"]
    assert not backend.has_work
    return outcome


def _pipeline_song(pipeline: Any, **options: Any) -> torch.Tensor:
    """SONG through ``AceStepPipeline.__call__`` itself: (2, samples of whole latent frames)."""
    return pipeline(
        SONG["prompt"],
        lyrics=SONG["lyrics"],
        audio_duration=SONG["duration"],
        num_inference_steps=2,
        bpm=96,
        keyscale="A minor",
        timesignature="4",
        generator=torch.Generator().manual_seed(7),
        **options,
    ).audios[0]


def test_a_song_is_exactly_its_duration_at_48k_stereo_and_normalised(
    backend: AceStepBackend, first_song: np.ndarray
) -> None:
    assert backend.capabilities.sample_rate == RATE and backend.capabilities.channels == 2
    assert first_song.shape == (2, 480_480) and first_song.dtype == np.float32
    assert audio.integrated_loudness(first_song, RATE) == pytest.approx(-14.0, abs=0.1)
    assert audio.peak_dbfs(first_song) <= -1.0


def test_step_by_step_equals_the_pipelines_own_call(backend: AceStepBackend, first_song: np.ndarray) -> None:
    pipeline = load(backend.model_id, torch.device("cpu"), torch.float32, local_files_only=True).pipeline
    reference = _pipeline_song(pipeline)
    # The pipeline returns whole latent frames; the backend trims to the request and post-processes.
    expected = audio.postprocess(reference.numpy()[:, :480_480], RATE, -14.0)
    np.testing.assert_array_equal(first_song, expected)


def test_guided_steps_on_a_base_checkpoint_equal_the_pipelines_own_call(tmp_path: Path) -> None:
    directory = build_random_checkpoint(tmp_path / "base", turbo=False)
    base = AceStepBackend.load(str(directory), local_files_only=True)
    assert "guidance_scale" in base.capabilities.parameters
    params = {**SONG, "guidance_scale": 4.0, "loudness_lufs": None}
    outcome = _run(base, base.validate("generate", params))
    reference = _pipeline_song(base.pipeline, guidance_scale=4.0)
    assert outcome.result is not None
    np.testing.assert_array_equal(
        outcome.result.audio, audio.postprocess(reference.numpy()[:, :480_480], RATE, None)
    )


def test_loading_and_generating_print_nothing_on_stdout(
    checkpoint: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    quiet = AceStepBackend.load(str(checkpoint), local_files_only=True)
    _run(quiet, quiet.validate("generate", {**SONG, "steps": 1}))
    assert capfd.readouterr().out == ""  # a stdio MCP server's stdout carries its protocol only


def test_the_same_seed_gives_the_same_song(backend: AceStepBackend, first_song: np.ndarray) -> None:
    again = _run(backend, backend.validate("generate", SONG))
    assert again.result is not None and again.result.seed == 7
    np.testing.assert_array_equal(again.result.audio, first_song)
    other_seed = _run(backend, backend.validate("generate", {**SONG, "seed": 70}))
    assert other_seed.result is not None and np.abs(other_seed.result.audio - first_song).max() > 1e-3


def test_batch_mates_joining_mid_run_do_not_change_a_song_and_cancel_between_steps(
    backend: AceStepBackend, first_song: np.ndarray
) -> None:
    backend.admit("song", backend.validate("generate", SONG))
    report = backend.step()
    assert report.progress["song"].done == 1 and report.progress["song"].total == 2
    mate, doomed = backend.validate("generate", MATE), backend.validate("generate", {**MATE, "seed": 9})
    assert backend.can_admit(mate).decision is Decision.NOW
    backend.admit("mate", mate)
    backend.admit("doomed", doomed)
    assert backend.cancel("doomed") and not backend.cancel("never-admitted")
    outcomes: dict[str, Outcome] = {}
    while backend.has_work:
        report = backend.step()
        outcomes.update((outcome.request_id, outcome) for outcome in report.finished)
        if "song" in outcomes and "mate" not in outcomes:
            assert report.progress["mate"].done == 1  # the song ended first; its mate keeps running
    assert outcomes["doomed"].status == "cancelled" and outcomes["doomed"].result is None
    song, other = outcomes["song"].result, outcomes["mate"].result
    assert song is not None and other is not None
    # Equal up to the float rounding of a batched matrix product (see engine.acestep.backend).
    np.testing.assert_allclose(song.audio, first_song, rtol=0, atol=1e-5)
    assert np.abs(other.audio - first_song).max() > 1e-3  # another prompt and seed: another song
    assert backend.progress("song") is None


def test_admission_groups_by_operation_and_duration_and_respects_slots_and_memory(
    backend: AceStepBackend, checkpoint: Path
) -> None:
    backend.admit("running", backend.validate("generate", SONG))
    try:
        longer = backend.validate("generate", {**SONG, "duration": 12})
        assert backend.can_admit(longer).decision is Decision.LATER
        assert "latent frames" in backend.can_admit(longer).reason
        for index in range(3):
            backend.admit(f"filler-{index}", backend.validate("generate", SONG))
        assert backend.can_admit(backend.validate("generate", SONG)).decision is Decision.LATER
    finally:
        for request_id in ("running", "filler-0", "filler-1", "filler-2"):
            backend.cancel(request_id)
        assert {outcome.status for outcome in backend.step().finished} == {"cancelled"}
    starved = AceStepBackend.load(str(checkpoint), local_files_only=True, free_memory=lambda: 1_000)
    admission = starved.can_admit(starved.validate("generate", SONG))
    assert admission.decision is Decision.NEVER and "GB" in admission.reason


def test_edit_keeps_every_sample_outside_the_section(backend: AceStepBackend) -> None:
    seconds = np.arange(32_000 * 4) / 32_000
    source = (0.3 * np.sin(2 * np.pi * 220 * seconds)).astype(np.float32)  # mono at MusicGen's 32 kHz
    request = backend.validate(
        "edit",
        {
            "source_audio": source,
            "source_sample_rate": 32_000,
            "start_s": 1.5,
            "end_s": 2.5,
            "steps": 2,
            "seed": 1,
        },
    )
    outcome = _run(backend, request)
    assert outcome.result is not None and request.source is not None
    edited, original = outcome.result.audio, request.source
    assert edited.shape == original.shape == (2, 4 * RATE)
    outside = np.ones(edited.shape[1], dtype=bool)
    outside[round(1.4 * RATE) : round(2.6 * RATE)] = False  # the section and its 100 ms cross-fades
    np.testing.assert_array_equal(edited[:, outside], original[:, outside])
    inside = slice(round(1.5 * RATE), round(2.5 * RATE))
    assert np.abs(edited[:, inside] - original[:, inside]).max() > 0.01
    assert np.isfinite(edited).all() and audio.peak_dbfs(edited) <= -1.0 + 1e-3


def test_remix_follows_the_source_length_on_a_checkpoint_with_the_audio_tokenizer(
    backend: AceStepBackend,
) -> None:
    assert "remix" in backend.capabilities.operations and "strength" in backend.capabilities.parameters
    source = np.random.default_rng(0).standard_normal((2, RATE * 2)).astype(np.float32) * 0.1
    request = backend.validate(
        "remix",
        {"source_audio": source, "source_sample_rate": RATE, "prompt": "jazz", "strength": 0.5, "steps": 2},
    )
    outcome = _run(backend, request)
    assert outcome.result is not None and outcome.result.audio.shape == (2, 2 * RATE)


def test_remix_is_refused_without_the_audio_tokenizer(tmp_path: Path) -> None:
    plain = AceStepBackend.load(str(build_random_checkpoint(tmp_path / "plain")), local_files_only=True)
    assert plain.capabilities.operations == {"generate", "edit"}
    with pytest.raises(InvalidRequest) as error:
        plain.validate("remix", {"prompt": "jazz"})
    assert error.value.errors[0].field == "operation" and "audio_tokenizer" in str(error.value)


def test_non_finite_audio_fails_the_song(backend: AceStepBackend) -> None:
    weight = backend.pipeline.transformer.proj_out_conv.weight
    saved = weight.detach().clone()
    with torch.no_grad():
        weight.fill_(float("nan"))
    try:
        outcome = _run(backend, backend.validate("generate", SONG))
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    assert outcome.status == "failed" and outcome.result is None
    assert outcome.error is not None and "non-finite" in outcome.error


@pytest.fixture
def empty_hub_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    yield


@pytest.mark.usefixtures("empty_hub_cache")
def test_offline_and_missing_models_name_the_model_and_the_pull_command(tmp_path: Path) -> None:
    with pytest.raises(ModelNotAvailableError) as error:
        load("ace-step", torch.device("cpu"), torch.float32, local_files_only=True)
    message = str(error.value)
    assert "ACE-Step/acestep-v15-xl-turbo-diffusers" in message and "`dgx-music pull ace-step`" in message
    assert "\n" not in message
    with pytest.raises(ModelNotAvailableError) as error:
        load(str(tmp_path / "nowhere"), torch.device("cpu"), torch.float32, local_files_only=True)
    assert "model_index.json missing" in str(error.value) and "dgx-music pull ace-step" in str(error.value)
    other = tmp_path / "other"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(EngineError, match="not ACE-Step"):
        load(str(other), torch.device("cpu"), torch.float32, local_files_only=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_bf16_song_on_the_gpu(checkpoint: Path) -> None:
    gpu = AceStepBackend.load(str(checkpoint), device="cuda", dtype=torch.bfloat16, local_files_only=True)
    outcome = _run(gpu, gpu.validate("generate", SONG))
    assert outcome.result is not None and outcome.result.audio.shape == (2, 480_480)
    assert np.isfinite(outcome.result.audio).all()
