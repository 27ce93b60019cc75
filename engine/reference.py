"""Generation through transformers' own ``generate``, one request at a time.

This is the path for melody checkpoints, the baseline of the benchmarks and the reference the batched decode
loop (``engine.decode``) is checked against. Its signature is the seam both paths share:
``generate_batch(model, processor, requests, seeds, device, on_step, is_cancelled)`` returns raw float32
audio (channels × samples, exactly ``round(duration * rate)`` samples, not post-processed), or ``None`` for a
cancelled row.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from engine.audio import fit_length
from engine.request import GenerationRequest

OnStep = Callable[[int, list[int]], None]
IsCancelled = Callable[[int], bool]

# generate() samples from torch's global generator: seeding and sampling must not interleave across threads.
_GLOBAL_RNG = threading.Lock()


class _Cancelled(Exception):
    pass


def sample_count(model: Any, duration: float) -> int:
    return round(duration * model.config.audio_encoder.sampling_rate)


def decode_steps(model: Any, duration: float) -> int:
    """Decode steps for ``duration`` seconds: one per audio frame, plus the codebook delay pattern's tail."""
    codec = model.config.audio_encoder
    hop = math.prod(codec.upsampling_ratios)
    frames = math.ceil(sample_count(model, duration) / hop)
    codebooks_per_channel = model.decoder.num_codebooks // model.config.decoder.audio_channels
    return frames + codebooks_per_channel - 1


class _StepReporter(LogitsProcessor):
    """Counts decode steps: ``generate`` passes every step's logits through its processors exactly once."""

    def __init__(self, on_step: OnStep, offset: int, totals: list[int]) -> None:
        self.on_step, self.step, self.totals = on_step, offset, totals

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.step += 1
        self.on_step(self.step, self.totals)
        return scores


class _CancelCheck(StoppingCriteria):
    """Aborts ``generate`` by raising: stopping it early leaves ragged codebooks that cannot be decoded."""

    def __init__(self, is_cancelled: IsCancelled, row: int) -> None:
        self.is_cancelled, self.row = is_cancelled, row

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.BoolTensor:
        if self.is_cancelled(self.row):
            raise _Cancelled
        done: torch.BoolTensor = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)  # type: ignore[assignment]
        return done


def sampling_options(request: GenerationRequest) -> dict[str, Any]:
    """The request's sampling parameters in ``generate``'s terms.

    top_k 0 and top_p 0 mean "off" (audiocraft's convention); when both are set both filters apply, top-k
    first, as transformers does. A guidance scale of 1 or less runs without classifier-free guidance (below 1
    ``generate`` would switch to its unbatched guidance, which MusicGen's inputs do not fit).
    """
    return {
        "do_sample": True,
        "temperature": request.temperature,
        "top_k": request.top_k,
        "top_p": request.top_p if request.top_p > 0 else 1.0,
        "guidance_scale": max(request.guidance_scale, 1.0),
    }


@torch.inference_mode()
def generate_batch(
    model: Any,
    processor: Any,
    requests: Sequence[GenerationRequest],
    seeds: Sequence[int],
    device: torch.device,
    on_step: OnStep | None = None,
    is_cancelled: IsCancelled | None = None,
) -> list[np.ndarray | None]:
    """Generate each request in turn with ``model.generate``.

    Rows run one after another, so ``on_step(step, totals)`` counts steps across the whole call and
    ``totals[i]`` is the step at which row ``i`` finishes: ``min(step, totals[i]) / totals[i]`` is row i's
    progress, and with a single request both are plainly its own steps.
    """
    steps = [decode_steps(model, request.duration) for request in requests]
    totals = list(itertools.accumulate(steps))
    results: list[np.ndarray | None] = []
    for row, (request, seed) in enumerate(zip(requests, seeds, strict=True)):
        if is_cancelled is not None and is_cancelled(row):
            results.append(None)
            continue
        inputs = processor(text=[request.prompt], padding=True, return_tensors="pt").to(device)
        reporters = [_StepReporter(on_step, totals[row] - steps[row], totals)] if on_step else []
        stops = [_CancelCheck(is_cancelled, row)] if is_cancelled else []
        try:
            with _GLOBAL_RNG:
                torch.manual_seed(seed)
                audio = model.generate(
                    **inputs,
                    max_new_tokens=steps[row],
                    logits_processor=LogitsProcessorList(reporters),
                    stopping_criteria=StoppingCriteriaList(stops),
                    **sampling_options(request),
                )
        except _Cancelled:
            results.append(None)
            continue
        raw = audio[0].float().cpu().numpy()
        results.append(fit_length(raw, sample_count(model, request.duration)))
    return results
