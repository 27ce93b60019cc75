"""The batching decode loop (engine.decode) against transformers' ``generate``, on tiny random checkpoints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import ClassifierFreeGuidanceLogitsProcessor, TopKLogitsWarper, TopPLogitsWarper

from engine import decode, loading
from engine.request import GenerationRequest
from engine.sampling import SamplingParams, filter_logits, guide, sample

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parents[1]


def _load(checkpoint: Path, device: torch.device = CPU) -> loading.LoadedModel:
    return loading.load(str(checkpoint), device, torch.float32)


@pytest.fixture(scope="module")
def mono(tiny_checkpoint: Path) -> loading.LoadedModel:
    return _load(tiny_checkpoint)


@pytest.fixture(scope="module")
def stereo(tiny_stereo_checkpoint: Path) -> loading.LoadedModel:
    return _load(tiny_stereo_checkpoint)


def _codes(
    loaded: loading.LoadedModel,
    requests: list[GenerationRequest],
    seeds: list[int],
    device: torch.device = CPU,
    **callbacks: Any,
) -> list[torch.Tensor | None]:
    return decode.decode_codes(loaded.model, loaded.processor, requests, seeds, device, **callbacks)


def _generate_codes(
    loaded: loading.LoadedModel, request: GenerationRequest, monkeypatch: pytest.MonkeyPatch
) -> tuple[torch.Tensor, np.ndarray]:
    """Greedy codes and audio from transformers' ``generate``; the codes as it hands them to EnCodec."""
    model = loaded.model
    handed: list[torch.Tensor] = []
    real_decode = model.audio_encoder.decode

    def recording_decode(codes: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        handed.append(codes.clone())
        return real_decode(codes, *args, **kwargs)

    monkeypatch.setattr(model.audio_encoder, "decode", recording_decode)
    inputs = loaded.processor(text=[request.prompt], padding=True, return_tensors="pt")
    steps = decode.Plan.for_requests(model, [request]).steps[0]
    audio = model.generate(
        **inputs, do_sample=False, guidance_scale=request.guidance_scale, max_new_tokens=steps
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
    expected_codes, expected_audio = _generate_codes(loaded, greedy, monkeypatch)

    codes = _codes(loaded, [greedy], [0])
    assert codes[0] is not None
    assert codes[0].shape == expected_codes.shape == (loaded.model.decoder.num_codebooks, 50)
    assert torch.equal(codes[0], expected_codes)

    (audio,) = decode.decode_audio(loaded.model, codes)
    assert audio is not None
    np.testing.assert_array_equal(audio, expected_audio)


def test_batch_composition_changes_no_request(mono: loading.LoadedModel) -> None:
    requests = [
        GenerationRequest(
            prompt="epic orchestral trailer with brass", duration=1.2, temperature=0.8, top_k=50
        ),
        GenerationRequest(prompt="warm piano", duration=1.0),
        GenerationRequest(
            prompt="dark techno kick drum, 128 bpm, industrial",
            duration=1.5,
            temperature=1.3,
            top_k=0,
            top_p=0.9,
            guidance_scale=1.0,
        ),
    ]
    seeds = [11, 22, 33]
    batched = _codes(mono, requests, seeds)
    for request, seed, together in zip(requests, seeds, batched, strict=True):
        (alone,) = _codes(mono, [request], [seed])
        assert together is not None and alone is not None
        assert together.shape == (4, round(request.duration * 50))
        assert torch.equal(together, alone)
    assert batched[0] is not None
    (reseeded,) = _codes(mono, [requests[0]], [12])
    assert reseeded is not None and not torch.equal(reseeded, batched[0])


def test_progress_reports_every_step_with_each_rows_total(stereo: loading.LoadedModel) -> None:
    requests = [
        GenerationRequest(prompt="acoustic folk guitar", duration=1.0),
        GenerationRequest(prompt="reggae skank", duration=1.23),
    ]
    calls: list[tuple[int, list[int]]] = []
    audio = decode.generate_batch(
        stereo.model, stereo.processor, requests, [1, 2], CPU, on_step=lambda s, t: calls.append((s, t))
    )
    totals = [53, 65]  # 50 frames/s (1.23 s rounds up to 62 frames) + 3 steps of delay-pattern tail
    assert calls == [(step, totals) for step in range(1, 66)]
    for samples, request in zip(audio, requests, strict=True):
        assert samples is not None and samples.dtype == np.float32
        assert samples.shape == (2, round(request.duration * 32_000))
        assert np.isfinite(samples).all()


def test_cancelled_row_stops_and_leaves_the_others_alone(mono: loading.LoadedModel) -> None:
    long = GenerationRequest(prompt="ambient synth pad", duration=1.5)
    short = GenerationRequest(prompt="chiptune melody", duration=1.0)
    steps_seen: list[int] = []
    cancel_after = 10

    def is_cancelled(row: int) -> bool:
        return row == 0 and len(steps_seen) >= cancel_after

    result = decode.generate_batch(
        mono.model,
        mono.processor,
        [long, short],
        [5, 6],
        CPU,
        on_step=lambda step, totals: steps_seen.append(step),
        is_cancelled=is_cancelled,
    )
    assert result[0] is None
    # With the long row gone, the batch ends when the short one is done.
    assert steps_seen == list(range(1, 54))
    (alone,) = decode.generate_batch(mono.model, mono.processor, [short], [6], CPU)
    assert result[1] is not None and alone is not None
    np.testing.assert_array_equal(result[1], alone)


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

    guided = guide(logits, params.guidance_scale)
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
def test_cuda_graph_decoding_matches_eager_decoding(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cuda = torch.device("cuda")
    loaded = _load(tiny_checkpoint, cuda)
    requests = [
        GenerationRequest(prompt="warm piano", duration=1.0, top_k=1),
        GenerationRequest(prompt="dark techno", duration=1.5, top_k=50, temperature=0.9),
    ]
    graphed = _codes(loaded, requests, [3, 4], cuda)
    assert "capture failed" not in caplog.text
    monkeypatch.setenv(decode.CUDA_GRAPH_ENV, "0")
    eager = _codes(loaded, requests, [3, 4], cuda)
    for with_graph, without in zip(graphed, eager, strict=True):
        assert with_graph is not None and without is not None
        assert torch.equal(with_graph, without)


def test_benchmark_smoke(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.benchmark",
            "--tiny",
            "--checkpoint",
            str(tiny_checkpoint),
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(out.read_text())
    names = [row["scenario"] for row in report["results"]]
    assert names == ["baseline generate", "engine 1 request", "engine 2 concurrent"]
    for row in report["results"]:
        assert row["ms_per_step"] > 0 and row["seconds_per_audio_second"] > 0 and row["peak_rss_mb"] > 0
    assert report["results"][0]["throughput_vs_baseline"] == 1.0
    assert "engine 2 concurrent" in completed.stdout
