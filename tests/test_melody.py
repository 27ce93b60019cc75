"""MusicGen-Melody in the batching loop (engine.musicgen.prefix): the chroma and text prefix written into a
slot's cache at admission gives transformers' ``generate`` codes, and melody rows share steps with text-only
rows, joining and leaving at any step, each independent of the others."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_decode import Run, generate_codes

from engine.backend import InvalidRequest
from engine.conditioning import DecodedAudio
from engine.musicgen import loading
from engine.musicgen.backend import MusicgenBackend
from engine.musicgen.chroma import melody_chroma
from engine.musicgen.prefix import Melody
from engine.request import GenerationRequest

CPU = torch.device("cpu")
RATE = 32_000

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def melody_model(tiny_melody_checkpoint: Path) -> loading.LoadedModel:
    return loading.load(str(tiny_melody_checkpoint), CPU, torch.float32)


def tune(midis: list[int], note_seconds: float = 0.5, rate: int = RATE) -> np.ndarray:
    """A mono sine melody, channels × samples."""
    notes = [
        np.sin(2 * np.pi * 440 * 2 ** ((midi - 69) / 12) * np.arange(round(note_seconds * rate)) / rate)
        for midi in midis
    ]
    return (0.5 * np.concatenate(notes)).astype(np.float32)[None]


TUNE = tune([60, 64, 67, 72, 67, 64, 62, 59])


def _alone(loaded: loading.LoadedModel, request: GenerationRequest | Melody) -> torch.Tensor:
    run = Run(MusicgenBackend(loaded, max_batch=4))
    assert run({0: [("alone", request)]})["alone"].status == "completed"
    return run.codes["alone"]


GREEDY = GenerationRequest(prompt="warm piano lofi beat with vinyl crackle", duration=1.0, top_k=1)


def test_greedy_melody_codes_equal_transformers_generate(
    melody_model: loading.LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    chroma = melody_chroma(TUNE)
    expected, _ = generate_codes(melody_model, GREEDY, monkeypatch, input_features=chroma[None])
    codes = _alone(melody_model, Melody(GREEDY, TUNE[0]))
    assert codes.shape == expected.shape == (4, 50)
    assert torch.equal(codes, expected)
    # The tune matters: without it (a text-only request on the same checkpoint) the codes differ, and are
    # transformers' text-only codes (the "no melody" chroma in both halves of guidance).
    text_only = _alone(melody_model, GREEDY)
    assert not torch.equal(text_only, codes)
    assert torch.equal(text_only, generate_codes(melody_model, GREEDY, monkeypatch)[0])


SAMPLED_MELODY = Melody(
    GenerationRequest(prompt="epic orchestral trailer", duration=1.2, temperature=0.9, top_k=50, seed=7),
    tune([57, 60, 64, 69])[0],
)
TEXT_ONLY = GenerationRequest(prompt="ambient synth pad", duration=1.0, top_p=0.9, top_k=0, seed=8)


def test_a_melody_row_does_not_depend_on_a_text_only_batch_mate(melody_model: loading.LoadedModel) -> None:
    run = Run(MusicgenBackend(melody_model, max_batch=4))
    outcomes = run({0: [("melody", SAMPLED_MELODY), ("text", TEXT_ONLY)]})
    assert {outcome.status for outcome in outcomes.values()} == {"completed"}
    assert torch.equal(run.codes["melody"], _alone(melody_model, SAMPLED_MELODY))
    assert torch.equal(run.codes["text"], _alone(melody_model, TEXT_ONLY))


def test_a_melody_request_admitted_mid_batch_completes_beside_a_text_only_one(
    melody_model: loading.LoadedModel,
) -> None:
    run = Run(MusicgenBackend(melody_model, max_batch=4))
    outcomes = run({0: [("text", TEXT_ONLY)], 17: [("melody", SAMPLED_MELODY)]})
    finished_at = {o.request_id: i for i, report in enumerate(run.reports) for o in report.finished}
    # 53 and 63 steps, each from its admission; each outcome once its audio is decoded, a few steps later
    assert 52 <= finished_at["text"] < finished_at["melody"] and finished_at["melody"] >= 17 + 63 - 1
    melody = outcomes["melody"].result
    assert melody is not None and melody.audio.shape == (1, round(1.2 * RATE))
    assert melody.loudness_lufs == pytest.approx(-14.0, abs=0.5)
    assert torch.equal(run.codes["melody"], _alone(melody_model, SAMPLED_MELODY))
    assert torch.equal(run.codes["text"], _alone(melody_model, TEXT_ONLY))


def test_melody_validation_prepares_the_tune_and_names_what_is_wrong(
    melody_model: loading.LoadedModel, tiny_checkpoint: Path
) -> None:
    backend = MusicgenBackend(melody_model, max_batch=2)
    params = {"prompt": "folk song", "duration": 2.0}
    stereo_44k = np.repeat(tune([62, 66, 69], rate=44_100), 2, axis=0)
    request = backend.validate("melody", {**params, "source_audio": DecodedAudio(stereo_44k, 44_100)})
    assert isinstance(request, Melody) and request.request.duration == 2.0
    # Resampled to 32 kHz and mixed to mono before the chroma, as the checkpoint's extractor sees it.
    assert torch.equal(request.chroma, melody_chroma(tune([62, 66, 69])))

    def refused(operation: str, fields: dict[str, Any], model: MusicgenBackend = backend) -> str:
        with pytest.raises(InvalidRequest) as caught:
            model.validate(operation, fields)
        [error] = caught.value.errors
        return f"{error.field}: {error.message}"

    assert refused("melody", params).startswith("source_audio: melody needs the audio")
    long = {"prompt": "folk song", "duration": 300.0, "source_audio": DecodedAudio(TUNE, RATE)}
    assert isinstance(backend.validate("melody", long), Melody)  # pieces of many windows follow it too
    assert refused("melody", {**long, "duration": 301.0}).startswith("duration: must be in [1, 300]")
    assert refused("continue", params).startswith("source_audio: continue needs the audio")

    text_model = MusicgenBackend(loading.load(str(tiny_checkpoint), CPU, torch.float32), max_batch=1)
    message = refused("melody", {**params, "source_audio": DecodedAudio(TUNE, RATE)}, text_model)
    assert message.startswith("melody_from: model ") and "has no melody conditioning" in message


def test_melody_checkpoints_are_known_without_loading_them(
    tiny_melody_checkpoint: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    assert loading.conditions_on_melody(str(tiny_melody_checkpoint))
    assert not loading.conditions_on_melody(str(tiny_checkpoint))
    assert not loading.conditions_on_melody(str(tmp_path / "nothing-here"))
    assert loading.conditions_on_melody("facebook/musicgen-melody-large")
    assert loading.conditions_on_melody("facebook/musicgen-stereo-melody")
    assert not loading.conditions_on_melody("facebook/musicgen-small")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_melody_rows_replay_in_cuda_graphs_as_they_decode_eagerly(tiny_melody_checkpoint: Path) -> None:
    loaded = loading.load(str(tiny_melody_checkpoint), torch.device("cuda"), torch.float32)
    melody = Melody(SAMPLED_MELODY.request.model_copy(update={"top_k": 1}), SAMPLED_MELODY.tune)
    text = TEXT_ONLY.model_copy(update={"top_k": 1, "top_p": 0.0})
    # Over its window boundary (step 1503) the long piece's prefix is rewritten while "late" decodes.
    long = Melody(
        GenerationRequest(prompt="folk", duration=31, context_seconds=2, top_k=1), SAMPLED_MELODY.tune
    )
    codes = {}
    for graphs in (True, False):
        run = Run(MusicgenBackend(loaded, max_batch=4, cuda_graphs=graphs))
        outcomes = run({0: [("text", text), ("long", long)], 5: [("melody", melody)], 1480: [("late", text)]})
        assert {outcome.status for outcome in outcomes.values()} == {"completed"}
        codes[graphs] = run.codes
    for name in ("text", "melody", "long", "late"):
        assert torch.equal(codes[True][name], codes[False][name]), name
