"""MusicEngine: a resident model behind a family's ``Backend``, with a blocking ``generate`` for callers that
want one call (the CLI, doctor, pull, tests). The job worker drives ``MusicEngine.core`` step by step instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import memory
from engine.backend import Backend, GenerationResult, StepReport, run_to_completion
from engine.errors import EngineError
from engine.models import resolve_model_id
from engine.request import GenerationRequest

if TYPE_CHECKING:
    from engine.musicgen.backend import MusicgenBackend
    from engine.musicgen.loading import LoadedModel
    from engine.musicgen.reference import ReferenceBackend

log = logging.getLogger(__name__)

OnStep = Callable[[StepReport], None]


class MusicEngine:
    """A checkpoint loaded once and kept resident. ``generate`` is blocking and serialised."""

    def __init__(self, core: MusicgenBackend | ReferenceBackend) -> None:
        self.core = core
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        model: str,
        *,
        device: str | None = None,
        dtype: str | None = None,
        backend: str = "auto",
        max_batch: int = 8,
        cuda_graphs: bool = True,
        local_files_only: bool | None = None,
        kernel_cache: Path | None = None,
    ) -> MusicEngine:
        """Load ``model`` (alias, hub id or hub-layout directory). ``device`` defaults to CUDA when available;
        ``dtype`` to bf16 where the hardware computes it natively, else fp32. ``local_files_only``: read the
        weights from the Hugging Face cache only (the caller knows they are cached, or that the hub cannot be
        reached); None = as HF_HUB_OFFLINE says. ``kernel_cache``: where the fp32 CPU decoder's small-row
        kernel is built once and kept (None: this process builds its own)."""
        from engine.musicgen import load_backend

        model_id = resolve_model_id(model)
        core = load_backend(
            model_id,
            device=device,
            dtype=dtype,
            backend=backend,
            max_batch=max_batch,
            cuda_graphs=cuda_graphs,
            local_files_only=local_files_only,
            kernel_cache=kernel_cache,
        )
        engine = cls(core)
        log.info(
            "loaded %s on %s in %s: %.1f s, %s",
            model_id,
            engine.device,
            engine.dtype,
            engine.load_seconds,
            memory.gigabytes(engine.memory_bytes),
        )
        return engine

    @property
    def _loaded(self) -> LoadedModel:
        return self.core.loaded

    @property
    def model_id(self) -> str:
        return self.core.capabilities.model_id

    @property
    def backend(self) -> str:
        """ "batched" (our decode step) or "reference" (transformers' generate)."""
        from engine.musicgen.reference import ReferenceBackend

        return "reference" if isinstance(self.core, ReferenceBackend) else "batched"

    @property
    def device(self) -> str:
        return str(self._loaded.device)

    @property
    def dtype(self) -> str:
        from engine.loading import dtype_name

        return dtype_name(self._loaded.dtype)

    @property
    def sample_rate(self) -> int:
        return self.core.capabilities.sample_rate

    @property
    def audio_channels(self) -> int:
        return self.core.capabilities.channels

    @property
    def frame_rate(self) -> int:
        return int(self._loaded.model.config.audio_encoder.frame_rate)

    @property
    def max_batch_size(self) -> int:
        return self.core.capabilities.max_batch

    @property
    def load_seconds(self) -> float:
        return float(self._loaded.load_seconds)

    @property
    def memory_bytes(self) -> int:
        return self.core.memory_bytes

    def steps_for(self, duration: float) -> int:
        from engine.musicgen.reference import decode_steps

        return decode_steps(self._loaded.model, duration)

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        on_step: OnStep | None = None,
        is_cancelled: Callable[[int], bool] | None = None,
    ) -> list[GenerationResult | None]:
        """Generate every request; a cancelled one's entry is ``None``, a failed one raises ``EngineError``.

        ``on_step`` sees every ``StepReport``; ``is_cancelled(i)`` is asked after every step for request i.
        """
        ids = [str(index) for index in range(len(requests))]

        def each_step(report: StepReport) -> None:
            if is_cancelled is not None:
                for request_id in report.progress:
                    if is_cancelled(int(request_id)):
                        self.core.cancel(request_id)
            if on_step is not None:
                on_step(report)

        with self._lock:
            if is_cancelled is not None:
                requests_left = [
                    (i, r) for i, r in zip(ids, requests, strict=True) if not is_cancelled(int(i))
                ]
            else:
                requests_left = list(zip(ids, requests, strict=True))
            core: Backend[Any] = self.core  # both MusicGen backends take a GenerationRequest
            outcomes = run_to_completion(core, requests_left, each_step)
        results: list[GenerationResult | None] = []
        for request_id in ids:
            outcome = outcomes.get(request_id)
            if outcome is not None and outcome.status == "failed":
                raise EngineError(outcome.error or "generation failed")
            results.append(outcome.result if outcome is not None else None)
        return results
