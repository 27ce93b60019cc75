"""Melody pieces longer than one window, and continuation on melody checkpoints, in the batching loop
(engine.musicgen.backend, engine.musicgen.prefix): each window after the first is conditioned on the chroma
of the tune's matching 30 s (looped when the tune is shorter), its prefix rewritten in its own slot only;
a continuation is conditioned on the text and the "no melody" chroma, as transformers' ``generate`` does
with an audio prompt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_decode import Run, generate_codes

from engine.audio import integrated_loudness
from engine.conditioning import DecodedAudio
from engine.musicgen import loading
from engine.musicgen.backend import MusicgenBackend
from engine.musicgen.chroma import melody_chroma
from engine.musicgen.continuation import encode_prompt
from engine.musicgen.decode import DecodeStep
from engine.musicgen.prefix import Melody, conditioning_prefix, window_chroma
from engine.musicgen.requests import Continuation
from engine.musicgen.windows import plan_piece
from engine.request import GenerationRequest

CPU = torch.device("cpu")
RATE = 32_000
FRAME_SECONDS = 640 / RATE  # the tiny checkpoint's codec, as the published ones: 50 frames a second

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def melody_model(tiny_melody_checkpoint: Path) -> loading.LoadedModel:
    return loading.load(str(tiny_melody_checkpoint), CPU, torch.float32)


def scale_tune(seconds_a_note: float = 1.0) -> np.ndarray:
    """Twelve sine notes, MIDI 60 to 71 (note k has pitch class k), ``seconds_a_note`` each: mono samples."""
    step = np.arange(round(seconds_a_note * RATE)) / RATE
    notes = [np.sin(2 * np.pi * 440 * 2 ** ((midi - 69) / 12) * step) for midi in range(60, 72)]
    return (0.5 * np.concatenate(notes)).astype(np.float32)


TUNE = scale_tune()  # 12 s: a 70 s piece loops it
LONG = Melody(
    GenerationRequest(prompt="folk tune on strings", duration=70, context_seconds=2, top_k=50, seed=5), TUNE
)


def test_each_window_is_conditioned_on_the_chroma_of_the_tunes_matching_slice() -> None:
    plan = plan_piece(70, sample_rate=RATE, frame_samples=640, delay_tail=3, context_seconds=2)
    # 30 s, then 28 s after 2 s of context, then the last 12 s: windows start at 0, 28 and 56 s.
    assert [w.first_frame * FRAME_SECONDS for w in plan.windows] == [0, 28, 56]
    looped = np.tile(TUNE, 8)  # 96 s of the tune played over and over
    for index, start in enumerate((0, 28, 56)):
        expected = melody_chroma(looped[start * RATE : (start + 30) * RATE])
        chroma = window_chroma(LONG, plan, index, FRAME_SECONDS)
        assert chroma is not None and torch.equal(chroma, expected), index
        # Half a second in (frame 4 of 128 ms hops), the note playing is the tune's at start mod 12 s.
        assert int(chroma[4].argmax()) == start % 12
    # A piece of one window sees the tune as the checkpoint's extractor does (its first 30 s), and a
    # text-only request the "no melody" chroma.
    one = plan_piece(20, sample_rate=RATE, frame_samples=640, delay_tail=3)
    whole = window_chroma(LONG, one, 0, FRAME_SECONDS)
    assert whole is not None and torch.equal(whole, melody_chroma(TUNE))
    assert window_chroma(None, plan, 1, FRAME_SECONDS) is None


def _recording_prefixes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, torch.Tensor]]:
    """Every (slot, prefix) ``DecodeStep.prefill_prefix`` writes from now on."""
    written: list[tuple[int, torch.Tensor]] = []
    real = DecodeStep.prefill_prefix

    def recording(step: DecodeStep, state: Any, slot: int, prefix: torch.Tensor) -> None:
        written.append((slot, prefix.clone()))
        real(step, state, slot, prefix)

    monkeypatch.setattr(DecodeStep, "prefill_prefix", recording)
    return written


@pytest.mark.slow  # keeps the default suite near 10 min; .ci/run runs it
def test_a_70_second_melody_piece_rewrites_its_prefix_per_window_beside_an_untouched_batch_mate(
    melody_model: loading.LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    alone = Run(MusicgenBackend(melody_model, max_batch=2))
    alone({0: [("melody", LONG)]})
    short = GenerationRequest(prompt="ambient pad", duration=3, top_p=0.9, top_k=0, seed=6)
    short_alone = Run(MusicgenBackend(melody_model, max_batch=2))
    short_alone({0: [("short", short)]})

    backend = MusicgenBackend(melody_model, max_batch=2)
    plan = backend.plan(LONG)
    assert [w.new_frames for w in plan.windows] == [1500, 1400, 600]
    written = _recording_prefixes(monkeypatch)
    # The text-only request joins so that it is decoding when the melody row crosses its first boundary.
    run = Run(backend)
    outcomes = run({0: [("melody", LONG)], plan.windows[0].steps - 50: [("short", short)]})
    assert {outcome.status for outcome in outcomes.values()} == {"completed"}

    result = outcomes["melody"].result
    assert result is not None and result.audio.shape == (1, 70 * RATE)  # 70.00 s exactly
    assert integrated_loudness(result.audio, RATE) == pytest.approx(-14, abs=0.5)
    assert run.codes["melody"].shape == (4, plan.total_frames) == (4, 3500)

    # Slot 0 got a prefix at admission and at each boundary; the batch-mate's slot one, at its admission.
    assert [slot for slot, _ in written] == [0, 1, 0, 0]
    model, processor = melody_model.model, melody_model.processor
    looped = np.tile(TUNE, 8)
    with torch.inference_mode():
        for (_, prefix), start in zip([written[0], written[2], written[3]], (0, 28, 56), strict=True):
            chroma = melody_chroma(looped[start * RATE : (start + 30) * RATE])
            expected = conditioning_prefix(model, processor, LONG.request.prompt, chroma, CPU)
            assert torch.equal(prefix, expected), start

    # Rewriting the melody row's prefix and prompt at its boundaries leaves the batch-mate's codes as they
    # are alone, and the melody row's codes do not depend on the batch-mate either.
    assert torch.equal(run.codes["short"], short_alone.codes["short"])
    assert torch.equal(run.codes["melody"], alone.codes["melody"])


def test_greedy_codes_of_a_later_window_equal_transformers_generate_on_its_tune_slice_and_prompt(
    melody_model: loading.LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Window 2 of a 31 s piece (2 s of context, 1 s new) is what ``generate`` decodes given the tune's
    30 s from 28 s on as ``input_features`` and window 1's last 2 s of codes as the audio prompt."""
    greedy = GenerationRequest(prompt="folk tune on strings", duration=31, context_seconds=2, top_k=1)
    run = Run(MusicgenBackend(melody_model, max_batch=1))
    run({0: [("piece", Melody(greedy, TUNE))]})
    piece = run.codes["piece"]
    assert piece.shape == (4, 1550)

    chroma = melody_chroma(np.tile(TUNE, 5)[28 * RATE : 58 * RATE])
    second = greedy.model_copy(update={"duration": 1.0})  # 50 new frames after the prompt
    expected, _ = generate_codes(
        melody_model, second, monkeypatch, input_features=chroma[None], decoder_input_ids=piece[:, 1400:1500]
    )
    assert torch.equal(piece[:, 1400:], expected)


def _sine(seconds: float, hz: float = 220.0) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)[None]


def test_greedy_melody_continuation_codes_equal_transformers_generate_with_the_prompt_codes(
    melody_model: loading.LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A continuation on a melody checkpoint: the text and "no melody" prefix, then the prompt's codes
    prefilled after it, as ``MusicgenMelodyForConditionalGeneration.generate`` decodes given the prompt's
    codes as ``decoder_input_ids`` (it takes no ``input_values``) and no ``input_features``."""
    original = _sine(1.0)  # 50 whole frames, nothing dropped
    backend = MusicgenBackend(melody_model, max_batch=2)
    params = {"prompt": "carry on", "duration": 1, "top_k": 1, "source_audio": DecodedAudio(original, RATE)}
    request = backend.validate("continue", params)
    assert isinstance(request, Continuation)
    run = Run(backend)
    outcome = run({0: [("continued", request)]})["continued"]
    assert outcome.status == "completed" and outcome.result is not None
    assert outcome.result.audio.shape == (1, 2 * RATE)

    prompt = encode_prompt(melody_model.model, request.prompt.audio)
    expected, _ = generate_codes(melody_model, request.request, monkeypatch, decoder_input_ids=prompt.codes)
    assert run.codes["continued"].shape == expected.shape == (4, 100)
    assert torch.equal(run.codes["continued"], expected)
    assert torch.equal(run.codes["continued"][:, :50], prompt.codes)  # the prompt, kept


def test_a_melody_continuation_runs_over_window_boundaries_exactly(melody_model: loading.LoadedModel) -> None:
    backend = MusicgenBackend(melody_model, max_batch=1)
    request = backend.validate(
        "continue",
        {
            "prompt": "keep going",
            "duration": 31,
            "context_seconds": 2,
            "seed": 9,
            "source_audio": DecodedAudio(_sine(2.5), RATE),
        },
    )
    plan = backend.plan(request)
    assert plan.prompt_frames == 125 and [w.new_frames for w in plan.windows] == [1375, 175]
    outcome = Run(backend)({0: [("extended", request)]})["extended"]
    assert outcome.status == "completed" and outcome.result is not None
    assert outcome.result.audio.shape == (1, round(33.5 * RATE))  # 2.5 s kept, 31 s added
