"""MusicEngine: a resident model that turns validated requests into post-processed audio."""

from __future__ import annotations

import importlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine import audio, loading, reference
from engine.errors import EngineError
from engine.models import DEFAULT_MODEL, resolve_model_id
from engine.request import GenerationRequest

log = logging.getLogger(__name__)

OnStep = Callable[[int, list[int]], None]
IsCancelled = Callable[[int], bool]
GenerateBatch = Callable[..., list[np.ndarray | None]]

BACKENDS = ("auto", "batched", "reference")
# The most requests one call should decode together: transformers' generate takes one at a time; the batching
# loop has no limit of its own beyond memory (the service hands it up to its DGX_MUSIC_MAX_BATCH, at most 64).
BATCHED_MAX = 64


@dataclass(frozen=True)
class GenerationResult:
    audio: np.ndarray  # float32, channels × samples, post-processed
    sample_rate: int
    seed: int
    duration_s: float
    loudness_lufs: float | None  # measured after normalisation; None for silence
    peak_dbfs: float
    steps: int
    generation_seconds: float  # wall time of the whole batch this result was generated in


def _batched_decoder() -> GenerateBatch | None:
    """``engine.decode.generate_batch`` when that module is present, else None."""
    try:
        decode = importlib.import_module("engine.decode")
    except ModuleNotFoundError as error:
        if error.name != "engine.decode":
            raise
        return None
    generate_batch: GenerateBatch | None = getattr(decode, "generate_batch", None)
    return generate_batch


def _choose_backend(model: Any, requested: str | None) -> tuple[str, GenerateBatch]:
    from transformers import MusicgenForConditionalGeneration

    name = requested or os.environ.get("DGX_MUSIC_BACKEND") or "auto"
    if name not in BACKENDS:
        raise EngineError(f"backend {name!r} is not supported; use one of {', '.join(BACKENDS)}")
    # The decode loop is written for the text-conditioned model; melody checkpoints take transformers' path.
    batched = _batched_decoder() if isinstance(model, MusicgenForConditionalGeneration) else None
    if name == "batched" and batched is None:
        raise EngineError(
            "backend 'batched' needs engine.decode.generate_batch, which is missing or does not support "
            f"{type(model).__name__}; use backend 'reference' or 'auto'"
        )
    if name == "reference" or batched is None:
        return "reference", reference.generate_batch
    return "batched", batched


class MusicEngine:
    """A MusicGen checkpoint loaded once and kept resident. ``generate`` is blocking and serialised."""

    def __init__(self, loaded: loading.LoadedModel, backend: str | None = None) -> None:
        self._loaded = loaded
        self.backend, self._generate_batch = _choose_backend(loaded.model, backend)
        self._lock = threading.Lock()
        config = loaded.model.config
        self.sample_rate: int = int(config.audio_encoder.sampling_rate)
        self.audio_channels: int = int(config.decoder.audio_channels)
        self.frame_rate: int = int(config.audio_encoder.frame_rate)
        self.max_batch_size: int = 1 if self.backend == "reference" else BATCHED_MAX

    @classmethod
    def load(
        cls,
        model: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        backend: str | None = None,
        local_files_only: bool | None = None,
    ) -> MusicEngine:
        """Load ``model`` (alias, hub id or hub-layout directory), else ``DGX_MUSIC_MODEL``, else small.

        ``backend``: "auto" (default, or ``DGX_MUSIC_BACKEND``) uses the batched decode loop where it supports
        the checkpoint; "reference" forces transformers' ``generate``; "batched" insists on the loop.
        ``local_files_only``: read the weights from the Hugging Face cache only (see ``loading.load``).
        """
        model_id = resolve_model_id(model or os.environ.get("DGX_MUSIC_MODEL") or DEFAULT_MODEL)
        torch_device = loading.select_device(device)
        loaded = loading.load(
            model_id, torch_device, loading.select_dtype(torch_device, dtype), local_files_only
        )
        log.info(
            "loaded %s on %s in %s: %.1f s, %.2f GB",
            model_id,
            torch_device,
            loaded.dtype,
            loaded.load_seconds,
            loaded.memory_bytes / 1e9,
        )
        return cls(loaded, backend)

    @property
    def model_id(self) -> str:
        return self._loaded.model_id

    @property
    def device(self) -> str:
        return str(self._loaded.device)

    @property
    def dtype(self) -> str:
        return loading.dtype_name(self._loaded.dtype)

    @property
    def load_seconds(self) -> float:
        return self._loaded.load_seconds

    @property
    def memory_bytes(self) -> int:
        return self._loaded.memory_bytes

    def steps_for(self, duration: float) -> int:
        """Decode steps a request of ``duration`` seconds takes (the ``totals`` entries of ``on_step``)."""
        return reference.decode_steps(self._loaded.model, duration)

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        on_step: OnStep | None = None,
        is_cancelled: IsCancelled | None = None,
    ) -> list[GenerationResult | None]:
        """Generate every request; a cancelled row's entry is ``None``. Call from a worker thread."""
        seeds = [secrets.randbelow(2**32) if request.seed is None else request.seed for request in requests]
        with self._lock:
            started = time.perf_counter()
            raw = self._generate_batch(
                self._loaded.model,
                self._loaded.processor,
                requests,
                seeds,
                self._loaded.device,
                on_step,
                is_cancelled,
            )
            elapsed = time.perf_counter() - started
        return [
            None if samples is None else self._finish(request, seed, samples, elapsed)
            for request, seed, samples in zip(requests, seeds, raw, strict=True)
        ]

    def _finish(
        self, request: GenerationRequest, seed: int, samples: np.ndarray, elapsed: float
    ) -> GenerationResult:
        expected = (self.audio_channels, round(request.duration * self.sample_rate))
        if samples.shape != expected:
            raise EngineError(
                f"the {self.backend} backend returned audio of shape {samples.shape}, expected {expected}; "
                "this is a bug in engine, please report it"
            )
        processed = audio.postprocess(samples, self.sample_rate, request.loudness_lufs)
        return GenerationResult(
            audio=processed,
            sample_rate=self.sample_rate,
            seed=seed,
            duration_s=processed.shape[1] / self.sample_rate,
            loudness_lufs=audio.integrated_loudness(processed, self.sample_rate),
            peak_dbfs=audio.peak_dbfs(processed),
            steps=self.steps_for(request.duration),
            generation_seconds=elapsed,
        )
