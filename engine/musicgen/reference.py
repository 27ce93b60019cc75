"""Generation through transformers' own ``generate``, one request at a time.

The baseline of the benchmarks (``bench/benchmark.py``), the reference the batching decode step
(``engine.musicgen.decode``) is checked against, and backend "reference" (``DGX_MUSIC_BACKEND``), which
serves text-conditioned requests one at a time. Every checkpoint, melody included, decodes in the batching
loop by default (``engine.musicgen.backend``).
``generate_batch(model, processor, requests, seeds, device, on_step, is_cancelled)`` returns raw float32
audio (channels × samples, exactly ``round(duration * rate)`` samples, not post-processed), or ``None`` for a
cancelled row.
"""

from __future__ import annotations

import itertools
import logging
import math
import queue
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from engine.audio import fit_length
from engine.backend import Admission, Backend, Decision, Outcome, Progress, StepReport
from engine.loading import dtype_name
from engine.musicgen.loading import LoadedModel, capabilities
from engine.musicgen.windows import WINDOW_SECONDS
from engine.request import GenerationRequest, validate_generation
from engine.results import audio_outcome

log = logging.getLogger(__name__)

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


# One request at a time across every reference backend: generate() samples from torch's global generator.
_ONE_AT_A_TIME = threading.Lock()


class ReferenceBackend(Backend[GenerationRequest]):
    """transformers' ``generate`` behind the ``Backend`` interface (backend "reference"), text-conditioned
    requests only. One request at a time: ``generate`` runs on a helper thread that waits at every decode
    step until ``step()`` lets it take the next one, so progress, cancellation and time limits work as they do
    for the batching backend."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self._dtype = dtype_name(loaded.dtype)
        self.capabilities = capabilities(loaded, max_batch=1, max_duration_s=WINDOW_SECONDS)
        self._held: _Held | None = None
        self._ended: list[Outcome] = []

    def validate(self, operation: str, params: Mapping[str, Any]) -> GenerationRequest:
        return validate_generation(operation, params, max_duration_s=self.capabilities.max_duration_s)

    def can_admit(self, request: GenerationRequest) -> Admission:
        if self._held is not None or _ONE_AT_A_TIME.locked():
            return Admission(Decision.LATER, "transformers' generate runs one request at a time")
        return Admission(Decision.NOW)

    def admit(self, request_id: str, request: GenerationRequest) -> None:
        if self._held is not None or not _ONE_AT_A_TIME.acquire(blocking=False):
            raise RuntimeError("admit() while a request is running; ask can_admit() first")
        seed = secrets.randbelow(2**32) if request.seed is None else request.seed
        self._held = _Held(request_id, request, seed, decode_steps(self.loaded.model, request.duration))
        self._held.thread = threading.Thread(
            target=self._generate, args=(self._held,), name=f"generate-{request_id}", daemon=True
        )

    def cancel(self, request_id: str) -> bool:
        held = self._held
        if held is None or held.request_id != request_id:
            return False
        held.cancelled = True
        return True

    def progress(self, request_id: str) -> Progress | None:
        held = self._held
        return _progress(held) if held is not None and held.request_id == request_id else None

    @property
    def has_work(self) -> bool:
        return self._held is not None or bool(self._ended)

    @property
    def memory_bytes(self) -> int:
        return self.loaded.memory_bytes

    def step(self) -> StepReport:
        finished, self._ended = self._ended, []
        held = self._held
        if held is not None:
            outcome = self._advance(held)
            if outcome is not None:
                finished.append(outcome)
                self._held = None
                _ONE_AT_A_TIME.release()
        now = self._held
        progress = {} if now is None else {now.request_id: _progress(now)}
        return StepReport(progress=progress, finished=finished)

    def _advance(self, held: _Held) -> Outcome | None:
        """Let the helper thread take one step; the outcome when that ended the request."""
        if not held.started:
            if held.cancelled:
                return Outcome(held.request_id, "cancelled")
            held.started = True
            held.thread.start()
        else:
            held.go.release()
        while True:
            kind, value = held.messages.get()
            if kind == "step" and not held.cancelled:
                held.done = value
                return None
            if kind == "step":  # cancelled while it waited: let it run into the cancellation check
                held.go.release()
                continue
            held.thread.join()
            if kind == "error":
                return Outcome(held.request_id, "failed", error=f"generation failed: {value}")
            if value is None:
                return Outcome(held.request_id, "cancelled")
            return audio_outcome(
                held.request_id,
                value,
                sample_rate=self.capabilities.sample_rate,
                expected_shape=(
                    self.capabilities.channels,
                    sample_count(self.loaded.model, held.request.duration),
                ),
                target_lufs=held.request.loudness_lufs,
                seed=held.seed,
                steps=held.total,
                seconds=time.perf_counter() - held.admitted_at,
                dtype=self._dtype,
            )

    def _generate(self, held: _Held) -> None:
        def gate(step: int, totals: list[int]) -> None:
            held.messages.put(("step", step))
            held.go.acquire()

        loaded = self.loaded
        try:
            [audio] = generate_batch(
                loaded.model,
                loaded.processor,
                [held.request],
                [held.seed],
                loaded.device,
                on_step=gate,
                is_cancelled=lambda row: held.cancelled,
            )
        except Exception as error:  # reported as the request's failure; the worker stays alive
            log.exception("generate failed")
            held.messages.put(("error", f"{type(error).__name__}: {error}"))
        else:
            held.messages.put(("done", audio))


@dataclass
class _Held:
    request_id: str
    request: GenerationRequest
    seed: int
    total: int
    admitted_at: float = field(default_factory=time.perf_counter)
    done: int = 0
    started: bool = False
    cancelled: bool = False
    go: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    messages: queue.SimpleQueue[tuple[str, Any]] = field(default_factory=queue.SimpleQueue)
    thread: threading.Thread = field(default_factory=threading.Thread)


def _progress(held: _Held) -> Progress:
    return Progress(held.done, held.total, "decoding" if held.done < held.total else "decoding audio")
