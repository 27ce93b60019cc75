"""The MusicGen batching backend (engine.musicgen) against transformers' ``generate``, on tiny random
checkpoints: greedy codes bit-identical, requests independent of batch-mates and of when they joined, slots
reused, non-finite decodes failed, memory budget respected."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import ClassifierFreeGuidanceLogitsProcessor, TopKLogitsWarper, TopPLogitsWarper

from engine.backend import Decision, InvalidRequest, Outcome, Progress, StepReport
from engine.musicgen import audio_out, encoding, loading
from engine.musicgen.backend import MusicgenBackend, MusicgenRequest
from engine.musicgen.decode import Plan, decode_audio
from engine.musicgen.memory import SlotGeometry
from engine.musicgen.sampling import SamplingParams, filter_logits, guide, sample
from engine.request import GenerationRequest

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _load(checkpoint: Path, device: torch.device = CPU) -> loading.LoadedModel:
    return loading.load(str(checkpoint), device, torch.float32)


@pytest.fixture(scope="module")
def mono(tiny_checkpoint: Path) -> loading.LoadedModel:
    return _load(tiny_checkpoint)


@pytest.fixture(scope="module")
def stereo(tiny_stereo_checkpoint: Path) -> loading.LoadedModel:
    return _load(tiny_stereo_checkpoint)


class Run:
    """Drives a backend step by step: admissions and cancellations at chosen steps; records every report
    and the codes each request handed to EnCodec."""

    def __init__(self, backend: MusicgenBackend) -> None:
        self.backend = backend
        self.codes: dict[str, torch.Tensor] = {}
        backend._record_codes = self.codes
        self.outcomes: dict[str, Outcome] = {}
        self.reports: list[StepReport] = []
        self.slots: dict[str, int | None] = {}

    def __call__(
        self,
        admit: Mapping[int, Sequence[tuple[str, MusicgenRequest]]],
        cancel: dict[int, list[str]] | None = None,
    ) -> dict[str, Outcome]:
        cancel = cancel or {}
        step = 0
        while step <= max([*admit, *cancel]) or self.backend.has_work:
            for request_id, request in admit.get(step, []):
                assert self.backend.can_admit(request).decision is Decision.NOW
                self.backend.admit(request_id, request)
                self.slots[request_id] = self.backend._rows[request_id].slot
            for request_id in cancel.get(step, []):
                assert self.backend.cancel(request_id)
            report = self.backend.step()
            self.reports.append(report)
            self.outcomes.update((outcome.request_id, outcome) for outcome in report.finished)
            step += 1
        return self.outcomes


def started_at(run: Run, request_id: str) -> int:
    """The step at which ``request_id`` decoded its first frame (its report shows one step done)."""
    return next(
        step
        for step, report in enumerate(run.reports)
        if report.progress.get(request_id, Progress(0, 1, "")).done
    )


def _alone(
    loaded: loading.LoadedModel, request: GenerationRequest, monkeypatch: pytest.MonkeyPatch
) -> tuple[torch.Tensor, Outcome]:
    run = Run(MusicgenBackend(loaded, max_batch=4))
    outcomes = run({0: [("alone", request)]})
    return run.codes["alone"], outcomes["alone"]


def generate_codes(
    loaded: loading.LoadedModel,
    request: GenerationRequest,
    monkeypatch: pytest.MonkeyPatch,
    **conditioning: Any,
) -> tuple[torch.Tensor, np.ndarray]:
    """Greedy codes and audio from transformers' ``generate`` (given ``conditioning`` too, e.g. a melody's
    ``input_features``); the codes as it hands them to EnCodec."""
    model = loaded.model
    handed: list[torch.Tensor] = []
    real_decode = model.audio_encoder.decode

    def recording_decode(codes: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        handed.append(codes.clone())
        return real_decode(codes, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(model.audio_encoder, "decode", recording_decode)
        inputs = loaded.processor(text=[request.prompt], padding=True, return_tensors="pt")
        steps = Plan.for_duration(model, request.duration).steps
        audio = model.generate(
            **inputs,
            **conditioning,
            do_sample=False,
            guidance_scale=request.guidance_scale,
            max_new_tokens=steps,
        )
    # Stereo: left (even codebooks) and right (odd) are decoded separately; interleave them back.
    codes = torch.stack([codes[0, 0] for codes in handed], dim=1).flatten(0, 1)
    return codes, audio[0].numpy()


@pytest.mark.parametrize("checkpoint", ["mono", "stereo"])
def test_greedy_codes_and_audio_equal_transformers_generate(
    checkpoint: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded: loading.LoadedModel = request.getfixturevalue(checkpoint)
    greedy = GenerationRequest(prompt="warm piano lofi beat with vinyl crackle", duration=1.0, top_k=1)
    expected_codes, expected_audio = generate_codes(loaded, greedy, monkeypatch)

    codes, outcome = _alone(loaded, greedy, monkeypatch)
    assert codes.shape == expected_codes.shape == (loaded.model.decoder.num_codebooks, 50)
    assert torch.equal(codes, expected_codes)
    assert outcome.status == "completed" and outcome.result is not None
    (audio,) = decode_audio(loaded.model, [codes])
    np.testing.assert_array_equal(audio, expected_audio)


MIXED = [
    GenerationRequest(
        prompt="epic orchestral trailer with brass", duration=1.2, temperature=0.8, top_k=50, seed=11
    ),
    GenerationRequest(prompt="warm piano", duration=1.0, seed=22),
    GenerationRequest(
        prompt="dark techno kick drum, 128 bpm, industrial",
        duration=1.5,
        temperature=1.3,
        top_k=0,
        top_p=0.9,
        guidance_scale=1.0,
        seed=33,
    ),
]


def test_batch_composition_changes_no_request(
    mono: loading.LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = Run(MusicgenBackend(mono, max_batch=4))
    outcomes = run({0: [(str(i), request) for i, request in enumerate(MIXED)]})
    for index, request in enumerate(MIXED):
        alone, _ = _alone(mono, request, monkeypatch)
        assert run.codes[str(index)].shape == (4, round(request.duration * 50))
        assert torch.equal(run.codes[str(index)], alone)
        together = outcomes[str(index)].result
        assert together is not None and together.seed == request.seed
    reseeded, _ = _alone(mono, MIXED[0].model_copy(update={"seed": 12}), monkeypatch)
    assert not torch.equal(reseeded, run.codes["0"])


def test_request_admitted_mid_batch_gives_the_same_codes_as_alone(
    mono: loading.LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    long, short, late = MIXED[2], MIXED[1], MIXED[0]
    run = Run(MusicgenBackend(mono, max_batch=4))
    outcomes = run({0: [("long", long)], 10: [("short", short)], 31: [("late", late)]})
    for name, request in (("long", long), ("short", short), ("late", late)):
        alone, _ = _alone(mono, request, monkeypatch)
        assert torch.equal(run.codes[name], alone), name
        assert outcomes[name].status == "completed"
    # A newcomer decodes from the first step after its text is encoded (on a thread, while the batch steps
    # on), and is returned when its own audio is done: short (53 steps) before long (78, from step 0). Its
    # audio decodes on the audio thread while the batch steps on, so it comes a few steps after its last.
    start = {name: started_at(run, name) for name in ("long", "short", "late")}
    assert 10 <= start["short"] < 10 + 5 and 31 <= start["late"] < 31 + 5
    finished_at = {o.request_id: i for i, report in enumerate(run.reports) for o in report.finished}
    assert start["short"] + 53 - 1 <= finished_at["short"] < finished_at["long"]
    assert finished_at["long"] >= start["long"] + 78 - 1 and finished_at["late"] >= start["late"] + 63 - 1
    assert run.reports[start["short"] + 53 - 1].progress.get("short", Progress(53, 53, "")).done == 53
    # Progress counts each request's own steps.
    assert run.reports[20].progress["short"].done == 20 - start["short"] + 1
    assert run.reports[20].progress["long"].done == 20 - start["long"] + 1


def test_a_cancelled_rows_slot_is_reused(mono: loading.LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second, third = MIXED
    backend = MusicgenBackend(mono, max_batch=2)
    run = Run(backend)
    # Two slots, both busy: a third request must wait ...
    backend.admit("first", first)
    backend.admit("second", second)
    assert backend.can_admit(third).decision is Decision.LATER
    for _ in range(5):
        backend.step()
    # ... until one is cancelled: it frees its slot at once, and the newcomer takes it.
    assert backend.cancel("first") and not backend.cancel("first") and not backend.cancel("unknown")
    outcomes = run({0: [("third", third)]})
    assert run.slots["third"] == 0
    assert outcomes["first"].status == "cancelled" and outcomes["first"].result is None
    for name, request in (("second", second), ("third", third)):
        alone, _ = _alone(mono, request, monkeypatch)
        assert torch.equal(run.codes[name], alone), name
    assert not backend.has_work and backend.progress("third") is None


def test_progress_reports_every_step_with_each_requests_total(
    stereo: loading.LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests = [
        ("folk", GenerationRequest(prompt="acoustic folk guitar", duration=1.0, seed=1)),
        ("reggae", GenerationRequest(prompt="reggae skank", duration=1.23, seed=2)),
    ]
    run = Run(MusicgenBackend(stereo, max_batch=4))
    outcomes = run({0: requests})
    totals = {"folk": 53, "reggae": 65}  # 50 frames/s (1.23 s rounds up to 62 frames) + 3 steps of delay tail
    start = {name: started_at(run, name) for name in totals}
    for step, report in enumerate(run.reports[:-1]):
        for name, progress in report.progress.items():
            # Nothing done while its text is encoded, then one step a step; after its last step a request is
            # held, fully done, until its audio is decoded.
            done = max(0, min(step - start[name] + 1, totals[name]))
            assert (progress.done, progress.total) == (done, totals[name])
            phase = "encoding the prompt" if done == 0 else "decoding"
            assert progress.phase == ("decoding audio" if done == totals[name] else phase)
    for name, request in requests:
        result = outcomes[name].result
        assert result is not None and result.audio.dtype == np.float32
        assert result.audio.shape == (2, round(request.duration * 32_000))
        assert np.isfinite(result.audio).all() and result.steps == totals[name]


def test_non_finite_logits_fail_the_request_and_spare_its_batch_mates(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = _load(tiny_checkpoint)
    backend = MusicgenBackend(loaded, max_batch=2)
    real_encode = encoding.encode_tokens

    def poisoned(model: Any, inputs: Any) -> list[tuple[torch.Tensor, ...]]:
        # A NaN in one request's text keys poisons only that slot's logits, as an overflow would.
        return [(keys * float("nan"), values) for keys, values in real_encode(model, inputs)]

    backend.admit("healthy", MIXED[1])
    while backend.progress("healthy").done == 0:  # type: ignore[union-attr]
        backend.step()
    monkeypatch.setattr(encoding, "encode_tokens", poisoned)
    backend.admit("broken", MIXED[0])
    outcomes: dict[str, Outcome] = {}
    while backend.has_work:
        outcomes.update((o.request_id, o) for o in backend.step().finished)
    assert outcomes["broken"].status == "failed" and outcomes["broken"].result is None
    assert "non-finite values (NaN or infinity)" in (outcomes["broken"].error or "")
    assert outcomes["healthy"].status == "completed"


def test_non_finite_audio_fails_the_request(
    mono: loading.LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_codec(model: Any, codes: list[torch.Tensor]) -> list[np.ndarray]:
        audio = decode_audio(model, codes)
        for samples in audio:
            samples[0, 100] = np.inf
        return audio

    monkeypatch.setattr(audio_out, "decode_audio", broken_codec)
    _, outcome = _alone(mono, MIXED[1], monkeypatch)
    assert outcome.status == "failed" and "1 of 32,000 samples" in (outcome.error or "")


def test_a_codec_that_raises_fails_its_request_and_spares_the_batch(
    mono: loading.LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The audio thread turns an exception into its request's failure; the worker and other rows go on."""

    def failing_codec(model: Any, codes: list[torch.Tensor]) -> list[np.ndarray]:
        if any(row.shape[-1] == 50 for row in codes):  # the 1 s request's frames
            raise RuntimeError("codec exploded")
        return decode_audio(model, codes)

    monkeypatch.setattr(audio_out, "decode_audio", failing_codec)
    run = Run(MusicgenBackend(mono, max_batch=4))
    outcomes = run({0: [("short", MIXED[1]), ("long", MIXED[2])]})
    assert outcomes["short"].status == "failed"
    assert "decoding the audio failed (RuntimeError: codec exploded)" in (outcomes["short"].error or "")
    assert outcomes["long"].status == "completed"


def test_an_encoder_that_raises_fails_its_request_and_spares_the_batch(
    mono: loading.LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The text is encoded on a thread: an exception there fails that request, not the worker."""
    real_encode = encoding.encode_tokens

    def failing_encoder(model: Any, inputs: Any) -> list[tuple[torch.Tensor, ...]]:
        if inputs["input_ids"].shape[1] == len(mono.processor.tokenizer(MIXED[1].prompt)["input_ids"]):
            raise RuntimeError("encoder exploded")
        return real_encode(model, inputs)

    monkeypatch.setattr(encoding, "encode_tokens", failing_encoder)
    run = Run(MusicgenBackend(mono, max_batch=4))
    outcomes = run({0: [("long", MIXED[2])], 3: [("short", MIXED[1])]})
    assert outcomes["short"].status == "failed" and outcomes["short"].result is None
    assert "starting the request failed (RuntimeError: encoder exploded)" in (outcomes["short"].error or "")
    assert outcomes["long"].status == "completed"
    alone, _ = _alone(mono, MIXED[2], monkeypatch)
    assert torch.equal(run.codes["long"], alone)


def test_the_stepping_thread_decodes_audio_when_it_has_nothing_to_step(
    mono: loading.LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests that finish together decode on both threads, each alone (the same audio as alone)."""
    threads: list[str] = []

    def recording_codec(model: Any, codes: list[torch.Tensor]) -> list[np.ndarray]:
        threads.append(threading.current_thread().name)
        if threading.current_thread() is not threading.main_thread():
            time.sleep(0.5)  # keep the audio thread busy, so the others queue behind it
        return decode_audio(model, codes)

    monkeypatch.setattr(audio_out, "decode_audio", recording_codec)
    twins = [MIXED[1].model_copy(update={"seed": seed}) for seed in (1, 2, 3)]
    run = Run(MusicgenBackend(mono, max_batch=4))
    outcomes = run({0: [(str(index), twin) for index, twin in enumerate(twins)]})
    assert all(outcome.status == "completed" for outcome in outcomes.values())
    assert len(threads) == 3 and "MainThread" in threads and any(t.startswith("audio-out") for t in threads)
    for index, twin in enumerate(twins):
        threads.clear()
        _, outcome = _alone(mono, twin, monkeypatch)
        assert outcome.result is not None and outcomes[str(index)].result is not None
        np.testing.assert_array_equal(outcomes[str(index)].result.audio, outcome.result.audio)


def test_memory_budget_makes_requests_wait_or_refuses_what_never_fits(mono: loading.LoadedModel) -> None:
    geometry = SlotGeometry.of(mono.model)
    one_slot = geometry.batch_bytes(1, 256, 64)  # a 1 s request: 53 steps round up to one 256-position bucket
    free = {"bytes": int(1.5 * one_slot / 0.9)}
    backend = MusicgenBackend(mono, max_batch=8, free_bytes=lambda device: free["bytes"])
    short = MIXED[1]
    assert backend.can_admit(short).decision is Decision.NOW
    backend.admit("a", short)
    free["bytes"] = int(0.5 * one_slot)  # the first slot took its share
    later = backend.can_admit(short)
    assert later.decision is Decision.LATER and "free" in later.reason
    while backend.has_work:
        backend.step()
    free["bytes"] = 10
    never = MusicgenBackend(mono, max_batch=8, free_bytes=lambda device: free["bytes"]).can_admit(short)
    assert never.decision is Decision.NEVER and "shorter duration" in never.reason
    # The formula: self-attention K/V of both guidance rows, cross K/V, mask, logits buffers, codes.
    config = mono.model.decoder.config
    layers, hidden = config.num_hidden_layers, config.hidden_size
    expected = (
        2 * layers * 2 * hidden * 256 * 4 + layers * 2 * hidden * 64 * 4 + 64 + 8 * 4 * 2048 * 4 + 4 * 256 * 8
    )
    assert one_slot == expected


def test_validation_names_the_fields(mono: loading.LoadedModel) -> None:
    backend = MusicgenBackend(mono, max_batch=2)
    with pytest.raises(InvalidRequest) as raised:
        backend.validate("generate", {"prompt": "x", "duration": 400, "top_k": -1})
    assert [error.field for error in raised.value.errors] == ["duration", "top_k"]
    assert "duration: must be in [1, 300] seconds (got 400" in str(raised.value)
    with pytest.raises(InvalidRequest, match="operation: 'separate' is not supported"):
        backend.validate("separate", {"prompt": "x"})
    capabilities = backend.capabilities
    assert capabilities.family == "musicgen" and capabilities.operations == {"generate", "continue"}
    assert capabilities.parameters["duration"].maximum == capabilities.max_duration_s == 300
    assert (capabilities.sample_rate, capabilities.channels, capabilities.max_batch) == (32_000, 1, 2)


def _row_by_row(scores: torch.Tensor, requests: list[GenerationRequest]) -> torch.Tensor:
    """transformers' own warpers, applied one request at a time (temperature, top-k, top-p)."""
    rows = []
    for row, request in zip(scores, requests, strict=True):
        warped = row / request.temperature
        if request.top_k:
            warped = TopKLogitsWarper(request.top_k)(torch.empty(0), warped)
        if 0 < request.top_p < 1:
            warped = TopPLogitsWarper(request.top_p)(torch.empty(0), warped)
        rows.append(warped)
    return torch.stack(rows)


def test_per_row_filters_and_guidance_match_transformers_processors() -> None:
    generator = torch.Generator().manual_seed(0)
    requests = [
        GenerationRequest(prompt="a", temperature=0.7, top_k=250, guidance_scale=3.0),
        GenerationRequest(prompt="b", temperature=1.0, top_k=0, top_p=0.8, guidance_scale=1.0),
        GenerationRequest(prompt="c", temperature=1.5, top_k=40, top_p=0.5, guidance_scale=7.5),
        GenerationRequest(prompt="d", temperature=1.0, top_k=0, top_p=0.0, guidance_scale=0.0),
    ]
    logits = torch.randn((2 * len(requests), 4, 2048), generator=generator) * 3
    params = SamplingParams.from_requests(requests, 2048, CPU)

    cond, uncond = logits.chunk(2)
    guided = guide(cond, uncond, params.guidance_scale)
    for row, request in enumerate(requests):
        pair = logits[[row, row + len(requests)]].flatten(0, 1)  # cond then uncond, as generate lays them out
        if request.guidance_scale > 1:
            cond_ids = torch.zeros((4, 1), dtype=torch.long)  # only its batch size is checked
            pair = ClassifierFreeGuidanceLogitsProcessor(request.guidance_scale)(cond_ids, pair)
            assert torch.equal(guided[row], pair)
        else:
            assert torch.equal(guided[row], logits[row])

    filtered = filter_logits(guided, params)
    expected = _row_by_row(guided, requests)
    assert torch.equal(filtered.isinf(), expected.isinf())
    assert torch.equal(filtered[~filtered.isinf()], expected[~expected.isinf()])
    kept = (~filtered.isinf()).sum(dim=-1)
    assert (kept[0] == 250).all() and (kept[3] == 2048).all() and (kept[2] <= 40).all()


def test_sampling_follows_the_distribution_and_top_k_one_is_greedy() -> None:
    generator = torch.Generator().manual_seed(1)
    scores = torch.tensor([[[0.0, 1.0, 2.0, float("-inf")]]]).expand(20_000, 1, 4)
    draws = sample(scores, torch.empty(scores.shape).exponential_(generator=generator))
    frequencies = torch.bincount(draws.flatten(), minlength=4) / draws.numel()
    torch.testing.assert_close(frequencies, scores[0, 0].softmax(-1), atol=0.015, rtol=0)

    greedy = GenerationRequest(prompt="x", top_k=1, temperature=2.0)
    logits = torch.randn((1, 4, 2048), generator=generator)
    params = SamplingParams.from_requests([greedy], 2048, CPU)
    noise = torch.empty(logits.shape).exponential_(generator=generator)
    assert torch.equal(sample(filter_logits(logits, params), noise), logits.argmax(-1))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graphs_match_eager_decoding_and_are_captured_once_per_bucket(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = _load(tiny_checkpoint, torch.device("cuda"))
    greedy = [r.model_copy(update={"top_k": 1}) for r in MIXED]
    codes = {}
    for graphs in (True, False):
        backend = MusicgenBackend(loaded, max_batch=4, cuda_graphs=graphs)
        run = Run(backend)
        run({0: [("a", greedy[0])], 3: [("b", greedy[1])], 7: [("c", greedy[2])]})
        codes[graphs] = run.codes
        if graphs:
            captured = backend.graph_captures
            run2 = Run(backend)
            run2({0: [("a", greedy[0])], 3: [("b", greedy[1])], 7: [("c", greedy[2])]})
            assert backend.graph_captures == captured  # reused across batches
            assert all(torch.equal(run2.codes[k], run.codes[k]) for k in run.codes)
    for name in ("a", "b", "c"):
        assert torch.equal(codes[True][name], codes[False][name])


def run_bench(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


def test_benchmark_smoke(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    completed = run_bench(
        "bench.benchmark", "--tiny", "--checkpoint", str(tiny_checkpoint), "--json", str(out)
    )
    report = json.loads(out.read_text())
    names = [row["scenario"] for row in report["results"]]
    assert names == ["baseline generate", "engine 1 request", "engine 2 concurrent"]
    for row in report["results"]:
        assert row["ms_per_step"] > 0 and row["seconds_per_audio_second"] > 0 and row["peak_rss_mb"] > 0
    assert report["results"][0]["throughput_vs_baseline"] == 1.0
    assert "engine 2 concurrent" in completed.stdout


@pytest.mark.slow  # keeps the default suite near 10 min; .ci/run runs it
def test_staggered_bench_smoke(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "staggered.json"
    run_bench(
        "bench.staggered", "--tiny", "--checkpoint", str(tiny_checkpoint), "--long", "2", "--json", str(out)
    )
    rows = {row["name"]: row for row in json.loads(out.read_text())["results"]}
    assert list(rows) == ["cold start", "solo", "staggered 2", "short after long"]
    assert rows["staggered 2"]["throughput_vs_solo"] > 0 and len(rows["staggered 2"]["latencies"]) == 2
    assert "of the long one's wall time" in rows["short after long"]["note"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_check_refuses_clearly_without_cuda() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "bench.gpu_check"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 2
    assert "needs a CUDA GPU" in completed.stderr and "deploy/torch.sh" in completed.stderr
