"""The separator behind the engine's Backend interface (engine.backend), for the worker's scheduler.

A thin adapter: DemucsSeparator already works step by step; this maps its requests, progress and results
onto the shared types. Operation "stems"; params `audio` (float32 channels x samples) and `sample_rate`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine import audio as audio_tools
from engine.backend import (
    Admission,
    Backend,
    Capabilities,
    Decision,
    FieldError,
    GenerationResult,
    InvalidRequest,
    Outcome,
    Parameter,
    Progress,
    StepReport,
)
from engine.demucs.errors import SeparationInputError
from engine.demucs.loading import load_separator
from engine.demucs.names import DEFAULT_SEPARATOR
from engine.demucs.separator import MAX_SECONDS, DemucsSeparator, SeparationRequest, SeparationResult

OPERATION = "stems"
PARAMETERS = {
    "sample_rate": Parameter(
        "sample_rate", "integer", "rate of `audio` in Hz", minimum=8000, maximum=384_000
    ),
}


class DemucsBackend(Backend[SeparationRequest]):
    """Stems of each admitted request, one segment per step. A result's `stems` holds the separated
    audio at the source's rate, channels and length; its `audio` is their sum (what the stems rebuild).
    `capabilities.sample_rate`/`channels` are 0: results follow the source, whatever it is."""

    def __init__(self, separator: DemucsSeparator) -> None:
        self.separator = separator
        self.capabilities = Capabilities(
            family="demucs",
            model_id=separator.name,
            operations=frozenset({OPERATION}),
            parameters=PARAMETERS,
            max_duration_s=MAX_SECONDS,
            sample_rate=0,
            channels=0,
            max_batch=separator.max_batch,
        )
        self._cancelled: list[str] = []

    @classmethod
    def load(
        cls,
        model: str | Path = DEFAULT_SEPARATOR,
        *,
        device: str | torch.device | None = None,
        offline: bool = False,
        cache_dir: Path | None = None,
        max_batch: int = 4,
    ) -> DemucsBackend:
        return cls(
            load_separator(model, device=device, offline=offline, cache_dir=cache_dir, max_batch=max_batch)
        )

    def validate(self, operation: str, params: Mapping[str, Any]) -> SeparationRequest:
        if operation != OPERATION:
            raise InvalidRequest(
                [FieldError("operation", f"the separator does {OPERATION!r} only (got {operation!r})")]
            )
        unknown = sorted(set(params) - {"audio", "sample_rate"})
        errors = [FieldError(name, "is not a parameter of stem separation") for name in unknown]
        errors += [FieldError(name, "is required") for name in ("audio", "sample_rate") if name not in params]
        if errors:
            raise InvalidRequest(errors)
        request = SeparationRequest(params["audio"], params["sample_rate"])
        try:
            self.separator.validate(request)
        except SeparationInputError as error:
            raise InvalidRequest(
                [FieldError(error.argument, str(error).removeprefix(f"{error.argument}: "))]
            ) from None
        return request

    def can_admit(self, request: SeparationRequest) -> Admission:
        if len(self.separator.active) >= self.separator.max_batch:
            return Admission(Decision.LATER, f"{self.separator.max_batch} separations are running")
        return Admission(Decision.NOW)

    def admit(self, request_id: str, request: SeparationRequest) -> None:
        self.separator.admit(request_id, request)

    def step(self) -> StepReport:
        finished = [Outcome(request_id, "cancelled") for request_id in self._cancelled]
        self._cancelled = []
        if self.separator.active:
            finished += [_outcome(request_id, result) for request_id, result in self.separator.step()]
        progress = {rid: p for rid in self.separator.active if (p := self.progress(rid)) is not None}
        return StepReport(progress=progress, finished=finished)

    def cancel(self, request_id: str) -> bool:
        if not self.separator.cancel(request_id):
            return False
        self._cancelled.append(request_id)
        return True

    def progress(self, request_id: str) -> Progress | None:
        done_total = self.separator.progress(request_id)
        return None if done_total is None else Progress(*done_total, phase="separating")

    @property
    def has_work(self) -> bool:
        return bool(self.separator.active or self._cancelled)

    @property
    def memory_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.separator.bag.parameters())


def _outcome(request_id: str, result: SeparationResult) -> Outcome:
    stems = np.stack(list(result.stems.values()))
    if not np.isfinite(stems).all():
        return Outcome(
            request_id,
            "failed",
            error="separation produced non-finite samples (NaN or infinity); nothing was stored: the "
            "separator's weights may be damaged, check them with `dgx-music doctor`",
        )
    mix = stems.sum(axis=0)
    return Outcome(
        request_id,
        "completed",
        result=GenerationResult(
            audio=mix,
            sample_rate=result.sample_rate,
            seed=0,  # deterministic: no random shifts
            duration_s=mix.shape[1] / result.sample_rate,
            loudness_lufs=audio_tools.integrated_loudness(mix, result.sample_rate),
            peak_dbfs=audio_tools.peak_dbfs(mix),
            steps=result.steps,
            generation_seconds=result.separation_seconds,
            stems=result.stems,
        ),
    )
