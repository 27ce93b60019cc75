"""Long pieces and continuation in the MusicGen batching loop (engine.musicgen.backend), on the tiny random
checkpoint: a row at the end of its window restarts on the tail of its own codes while its batch-mates keep
decoding, progress runs over all windows, lengths are exact, a continuation keeps the user's samples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from engine.backend import InvalidRequest, Outcome
from engine.conditioning import DecodedAudio
from engine.musicgen import loading
from engine.musicgen.backend import Continuation, MusicgenBackend
from engine.musicgen.decode import DecodeState
from engine.request import GenerationRequest

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def mono(tiny_checkpoint: Path) -> loading.LoadedModel:
    return loading.load(str(tiny_checkpoint), CPU, torch.float32)


def _drive(backend: MusicgenBackend, admit: dict[int, list[tuple[str, Any]]]) -> dict[str, Any]:
    """Step ``backend`` to the end, admitting ``admit[step]`` before that step; every request's outcome and
    the progress reports it got."""
    outcomes: dict[str, Outcome] = {}
    progress: dict[str, list[tuple[int, int]]] = {}
    step = 0
    while step == 0 or backend.has_work or any(at >= step for at in admit):
        for request_id, request in admit.get(step, []):
            backend.admit(request_id, request)
        report = backend.step()
        for request_id, seen in report.progress.items():
            progress.setdefault(request_id, []).append((seen.done, seen.total))
        outcomes.update((outcome.request_id, outcome) for outcome in report.finished)
        step += 1
    return {"outcomes": outcomes, "progress": progress}


def test_window_boundaries_restart_on_the_tail_of_the_piece_in_the_running_batch(
    mono: loading.LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    codes: dict[str, torch.Tensor] = {}
    backend = MusicgenBackend(mono, max_batch=2, record_codes=codes)
    long = GenerationRequest(prompt="a long piece", duration=33, seed=1, context_seconds=4)
    short = GenerationRequest(prompt="a short one", duration=3, seed=2)
    plan = backend.plan(long)
    assert [w.new_frames for w in plan.windows] == [1500, 150]  # 30 s, then 3 s after 4 s of context

    prompts: list[torch.Tensor] = []
    restart = DecodeState.restart

    def recording(state: DecodeState, slot: int, frames: int, prompt: torch.Tensor) -> None:
        prompts.append(prompt.clone())
        live = state.live.clone()
        restart(state, slot, frames, prompt)
        assert int(state.live.sum()) == int(live.sum())  # the batch-mate is still decoding

    monkeypatch.setattr(DecodeState, "restart", recording)
    # The short request joins so that it is decoding when the long one crosses its window boundary.
    boundary = plan.windows[0].steps
    run = _drive(backend, {0: [("long", long)], boundary - 50: [("short", short)]})

    [prompt] = prompts
    piece = codes["long"]
    second = plan.windows[1]
    assert piece.shape[-1] == plan.total_frames == 1650
    assert torch.equal(prompt, piece[:, second.start - second.context_frames : second.start])
    assert prompt.shape[-1] == 200  # 4 s at 50 frames a second

    result = run["outcomes"]["long"].result
    assert result is not None and result.audio.shape == (1, 33 * 32_000)
    assert result.loudness_lufs == pytest.approx(-14, abs=0.5)
    seen = run["progress"]["long"]
    assert {total for _, total in seen} == {plan.steps}  # one total from the start
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[-1] in (plan.steps - 1, plan.steps)  # then held, decoding audio

    # The short request's codes do not depend on the long one's window restart.
    alone: dict[str, torch.Tensor] = {}
    _drive(MusicgenBackend(mono, max_batch=2, record_codes=alone), {0: [("short", short)]})
    assert torch.equal(alone["short"], codes["short"])


def test_a_continuation_keeps_the_original_samples_and_adds_the_duration(
    mono: loading.LoadedModel,
) -> None:
    backend = MusicgenBackend(mono, max_batch=2)
    rate = 32_000
    t = np.arange(int(2.5 * rate)) / rate
    original = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)[None]
    request = backend.validate(
        "continue",
        {
            "prompt": "carry on",
            "duration": 2,
            "seed": 3,
            "loudness_lufs": None,
            "source_audio": DecodedAudio(original, rate),
        },
    )
    run = _drive(backend, {0: [("continued", request)]})
    result = run["outcomes"]["continued"].result
    assert result is not None
    assert result.audio.shape == (1, int(4.5 * rate))
    kept = int((2.5 - 0.05) * rate)
    assert np.array_equal(result.audio[:, :kept], original[:, :kept])


def test_a_long_continuation_prompt_is_cut_to_the_window_less_a_second(mono: loading.LoadedModel) -> None:
    backend = MusicgenBackend(mono, max_batch=1)
    long_audio = np.zeros((1, 40 * 32_000), dtype=np.float32)
    request = backend.validate(
        "continue", {"prompt": "x", "duration": 1, "source_audio": DecodedAudio(long_audio, 32_000)}
    )
    assert isinstance(request, Continuation)
    assert request.prompt.seconds == 29 and request.prompt.trimmed_seconds == 11
    with pytest.raises(InvalidRequest, match="source_audio"):
        backend.validate("continue", {"prompt": "x", "duration": 1})


def test_greedy_continuation_codes_equal_transformers_generate_with_an_audio_prompt(
    mono: loading.LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The prompt prefill (one pass over the prompt's codes) and the kept lagging codebooks after it
    compute exactly what ``generate(input_values=...)`` does."""
    model = mono.model
    rate = 32_000
    t = np.arange(rate) / rate  # 1 s: 50 whole frames, nothing dropped
    original = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)[None]
    codes: dict[str, torch.Tensor] = {}
    backend = MusicgenBackend(mono, max_batch=2, record_codes=codes)
    params = {"prompt": "carry on", "duration": 1, "top_k": 1, "source_audio": DecodedAudio(original, rate)}
    _drive(backend, {0: [("continued", backend.validate("continue", params))]})

    handed: list[torch.Tensor] = []
    real_decode = model.audio_encoder.decode

    def recording_decode(values: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        handed.append(values.clone())
        return real_decode(values, *args, **kwargs)

    monkeypatch.setattr(model.audio_encoder, "decode", recording_decode)
    inputs = mono.processor(text=["carry on"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        model.generate(
            **inputs,
            input_values=torch.from_numpy(original)[None],
            do_sample=False,
            guidance_scale=3.0,
            max_new_tokens=50 + model.decoder.num_codebooks - 1,
        )
    [expected] = handed
    assert codes["continued"].shape == (model.decoder.num_codebooks, 100)
    assert torch.equal(codes["continued"], expected[0, 0])
