"""Generation through MusicEngine with tiny random checkpoints loaded the way a real one is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import torch

from engine import EngineError, GenerationRequest, MusicEngine
from engine.audio import postprocess
from engine.backend import StepReport
from engine.musicgen import reference

DURATION = 1.01  # 32,320 samples: not a whole number of 640-sample EnCodec frames


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def mono(tiny_checkpoint: Path) -> MusicEngine:
    return MusicEngine.load(str(tiny_checkpoint), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def stereo(tiny_stereo_checkpoint: Path) -> MusicEngine:
    return MusicEngine.load(str(tiny_stereo_checkpoint), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def mono_reference(tiny_checkpoint: Path) -> MusicEngine:
    return MusicEngine.load(str(tiny_checkpoint), device="cpu", dtype="float32", backend="reference")


def make_request(**overrides: object) -> GenerationRequest:
    return GenerationRequest(**{"prompt": "lofi beat", "duration": DURATION, "seed": 7, **overrides})  # type: ignore[arg-type]


@pytest.mark.parametrize(("engine_name", "channels"), [("mono", 1), ("stereo", 2)])
def test_audio_shape_length_loudness_and_peak(
    engine_name: str, channels: int, request: pytest.FixtureRequest, capfd: pytest.CaptureFixture[str]
) -> None:
    engine: MusicEngine = request.getfixturevalue(engine_name)
    [result] = engine.generate([make_request()])
    assert capfd.readouterr().out == "", "stdio MCP owns stdout: generation must print nothing there"
    assert result is not None
    assert result.audio.dtype == np.float32
    assert result.audio.shape == (channels, 32_320)
    assert result.sample_rate == engine.sample_rate == 32_000
    assert result.duration_s == pytest.approx(DURATION, abs=1 / 32_000)
    assert result.seed == 7 and result.steps == engine.steps_for(DURATION) == 54
    loudness = pyloudnorm.Meter(32_000).integrated_loudness(result.audio.T.astype(np.float64))
    assert loudness == pytest.approx(-14.0, abs=0.5)
    assert result.loudness_lufs == pytest.approx(loudness)
    assert 20 * np.log10(np.max(np.abs(result.audio))) <= -1.0
    assert result.peak_dbfs <= -1.0 and result.generation_seconds > 0


def test_same_seed_same_samples_other_seed_other_samples(mono: MusicEngine) -> None:
    first, again, other = mono.generate([make_request(seed=11), make_request(seed=11), make_request(seed=12)])
    assert first is not None and again is not None and other is not None
    np.testing.assert_array_equal(first.audio, again.audio)
    assert not np.array_equal(first.audio, other.audio)


def test_unset_seed_is_reported_and_reproduces(mono: MusicEngine) -> None:
    [drawn] = mono.generate([make_request(seed=None)])
    assert drawn is not None and 0 <= drawn.seed < 2**32
    [replay] = mono.generate([make_request(seed=drawn.seed)])
    assert replay is not None
    np.testing.assert_array_equal(drawn.audio, replay.audio)


def test_loudness_off_only_fades_and_limits(mono_reference: MusicEngine, tiny_checkpoint: Path) -> None:
    off = make_request(loudness_lufs=None, seed=5)
    [result] = mono_reference.generate([off])
    assert result is not None
    model, processor = mono_reference._loaded.model, mono_reference._loaded.processor
    [raw] = reference.generate_batch(model, processor, [off], [5], torch.device("cpu"))
    assert raw is not None
    np.testing.assert_array_equal(result.audio, postprocess(raw, 32_000, None))
    assert result.loudness_lufs != pytest.approx(-14.0, abs=0.5)


def test_progress_sees_every_step_once(stereo: MusicEngine) -> None:
    seen: list[StepReport] = []
    sampling = {"guidance_scale": 0.5, "top_k": 0, "top_p": 0.9, "temperature": 0.7}
    stereo.generate([make_request(duration=1.0, **sampling)], on_step=seen.append)
    total = 50 * 1 + 3
    # One report per step, then (the audio decoding on its own thread) ones that wait for the audio; the
    # last carries the outcome instead of progress.
    progress = [report.progress["0"] for report in seen[:-1]]
    assert [p.done for p in progress[:total]] == list(range(1, total + 1))[: len(progress)]
    assert all(p.done == total and p.phase == "decoding audio" for p in progress[total:])
    assert all(p.total == total for p in progress) and len(seen) >= total
    [outcome] = seen[-1].finished
    assert outcome.status == "completed" and outcome.result is not None and outcome.result.steps == total


def test_cancellation_returns_none_and_stops_decoding(mono: MusicEngine) -> None:
    steps: list[StepReport] = []
    results = mono.generate(
        [make_request(duration=5.0)], on_step=steps.append, is_cancelled=lambda row: len(steps) >= 5
    )
    assert results == [None]
    decoded = [report for report in steps if report.progress]
    assert len(decoded) <= 6 < mono.steps_for(5.0)
    assert [outcome.status for outcome in steps[-1].finished] == ["cancelled"]


def test_reference_rows_run_in_turn_and_do_not_depend_on_position(mono_reference: MusicEngine) -> None:
    assert (mono_reference.backend, mono_reference.max_batch_size) == ("reference", 1)
    seen: list[StepReport] = []
    cancelled, alone, second = mono_reference.generate(
        [make_request(seed=1), make_request(seed=3), make_request(seed=2, duration=1.0, guidance_scale=0.0)],
        on_step=seen.append,
        is_cancelled=lambda row: row == 0,
    )
    [single] = mono_reference.generate([make_request(seed=3)])
    assert cancelled is None and alone is not None and single is not None and second is not None
    np.testing.assert_array_equal(alone.audio, single.audio)
    # One request at a time, each reporting its own steps, then its outcome.
    running = [next(iter(report.progress)) for report in seen if report.progress]
    assert running == ["1"] * 54 + ["2"] * 53  # each step of each; the step after its last brings the audio
    assert [o.request_id for report in seen for o in report.finished] == ["1", "2"]


def test_melody_checkpoint_decodes_in_the_batching_loop(tiny_melody_checkpoint: Path) -> None:
    engine = MusicEngine.load(str(tiny_melody_checkpoint), device="cpu", dtype="float32")
    assert (engine.backend, engine.max_batch_size, engine.audio_channels) == ("batched", 8, 1)
    assert engine.core.capabilities.operations == {"generate", "continue", "melody"}
    steps: list[StepReport] = []
    [result] = engine.generate([make_request(duration=1.0)], on_step=steps.append)
    assert result is not None and result.audio.shape == (1, 32_000)
    assert result.loudness_lufs == pytest.approx(-14.0, abs=0.5) and result.peak_dbfs <= -1.0
    # 53 steps, each reported (then held until the audio is decoded); the last report carries the outcome.
    done = [report.progress["0"].done for report in steps if report.progress]
    assert done[:53] == list(range(1, 54))[: len(done)] and set(done[53:]) <= {53}
    assert [outcome.request_id for outcome in steps[-1].finished] == ["0"]


def test_unknown_backend_is_rejected(tiny_checkpoint: Path) -> None:
    with pytest.raises(
        EngineError, match="backend 'fast' is not supported; use one of auto, batched, reference"
    ):
        MusicEngine.load(str(tiny_checkpoint), device="cpu", backend="fast")


@pytest.mark.parametrize(
    "sampling",
    [
        {"guidance_scale": 0.0},
        {"guidance_scale": 10.0, "temperature": 2.0, "top_k": 1},
        {"top_k": 0, "top_p": 1.0, "temperature": 0.01},
        {"top_k": 2048, "top_p": 0.5},
    ],
)
@pytest.mark.parametrize("backend", ["mono", "mono_reference"])
def test_parameter_extremes_generate(
    backend: str, sampling: dict[str, float], request: pytest.FixtureRequest
) -> None:
    engine: MusicEngine = request.getfixturevalue(backend)
    [result] = engine.generate([make_request(duration=1.0, **sampling)])
    assert result is not None and result.audio.shape == (1, 32_000)
    assert np.all(np.isfinite(result.audio)) and result.peak_dbfs <= -1.0
