"""Stem separation driven step by step: one segment of each admitted separation per step.

demucs.apply.apply_model runs a whole track in one blocking call. Here the same computation is cut at its
natural joints so a scheduler can drive it: the source is resampled to the model's rate (soxr) and
standardised; each model of the bag runs on overlapping segments (25 % overlap, triangular cross-fade
weights, as apply_model's `split`); a step runs the next segment of every active separation (a batch
when several share a model); when a separation's last segment is in, its stems are scaled back, brought
to the source's channels and rate, and cut to exactly the source's length. Stems are not normalised one by
one: the sum of the stems stays the mix as far as the model keeps it (with random weights it does not).
The random time shift of apply_model's `shifts` is left out, so the same input gives the same stems.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import torch
from demucs.apply import BagOfModels, TensorChunk
from demucs.htdemucs import HTDemucs
from demucs.utils import center_trim

from engine.audio import fit_length, resample
from engine.demucs.errors import SeparationInputError, SeparatorError

OVERLAP = 0.25
MIN_SECONDS = 1.0
MAX_SECONDS = 1200.0  # 20 minutes: ACE-Step songs reach 10
SAMPLE_RATES = (8000, 384_000)


@dataclass(frozen=True)
class SeparatorCapabilities:
    """What a loaded separator does and accepts."""

    model: str
    sources: tuple[str, ...]  # stem names, in the order results list them
    sample_rate: int  # the model's own rate; inputs are resampled to it and back
    model_channels: int
    input_channels: tuple[int, ...]  # mono or stereo; stems keep the source's channel count
    min_seconds: float
    max_seconds: float
    segment_seconds: float
    models_in_bag: int
    max_batch: int
    operations: tuple[str, ...] = ("stems",)


@dataclass(frozen=True)
class SeparationRequest:
    """Audio to split: float samples as channels x samples, at `sample_rate`."""

    audio: np.ndarray
    sample_rate: int


@dataclass(frozen=True)
class SeparationResult:
    stems: dict[str, np.ndarray]  # name -> float32 channels x samples: the source's channels, rate, length
    sample_rate: int
    model: str
    steps: int
    separation_seconds: float


@dataclass
class _Separation:
    """One admitted request: its standardised mix at the model's rate and the stems accumulated so far."""

    request: SeparationRequest
    mix: torch.Tensor  # (model channels, samples at model rate), standardised
    scale: float
    offset: float
    out: torch.Tensor  # (sources, model channels, samples at model rate)
    work: list[tuple[int, int]]  # (model index, segment start) still to run, in order
    weight_sums: list[torch.Tensor]  # per model: the cross-fade weights of all segments at each sample
    total: int
    started: float = field(default_factory=time.perf_counter)

    @property
    def done(self) -> int:
        return self.total - len(self.work)


class DemucsSeparator:
    """A loaded separator that a scheduler drives: validate, admit, step, cancel, progress, results.

    Not thread-safe: call it from the one thread that owns the model (the worker). Each step runs the next
    segment of up to `max_batch` admitted separations, oldest first, and returns those that finished.
    """

    def __init__(self, bag: BagOfModels, name: str, device: torch.device, max_batch: int = 4) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.bag = bag.to(device)
        self.name = name
        self.device = device
        self.max_batch = max_batch
        self.sources = tuple(bag.sources)
        self.sample_rate = int(bag.samplerate)
        self.model_channels = int(bag.audio_channels)
        totals = np.asarray(bag.weights, dtype=np.float64).sum(axis=0)
        if not (totals > 0).all():
            unweighted = [source for source, total in zip(bag.sources, totals, strict=True) if total <= 0]
            raise SeparatorError(f"separator {name!r}: no model of its bag weighs the stems {unweighted}")
        # Each model's weight per source, normalised over the bag (apply_model divides by the totals).
        self._source_weights = [
            torch.tensor(np.asarray(w, dtype=np.float64) / totals, dtype=torch.float32)[:, None, None]
            for w in bag.weights
        ]
        self._models = [cast(HTDemucs, model) for model in bag.models]
        self._segments = [int(self.sample_rate * float(model.segment)) for model in self._models]
        self._ramps = [_ramp(segment) for segment in self._segments]
        self._active: dict[str, _Separation] = {}

    @property
    def capabilities(self) -> SeparatorCapabilities:
        return SeparatorCapabilities(
            model=self.name,
            sources=self.sources,
            sample_rate=self.sample_rate,
            model_channels=self.model_channels,
            input_channels=(1, 2),
            min_seconds=MIN_SECONDS,
            max_seconds=MAX_SECONDS,
            segment_seconds=self._segments[0] / self.sample_rate,
            models_in_bag=len(self.bag.models),
            max_batch=self.max_batch,
        )

    # --- the scheduler's interface -------------------------------------------------------------------

    def validate(self, request: SeparationRequest) -> None:
        """Raise SeparationInputError (naming `audio` or `sample_rate`) for input this cannot separate."""
        rate, audio = request.sample_rate, request.audio
        whole = isinstance(rate, (int, np.integer)) and not isinstance(rate, bool)
        if not whole or not SAMPLE_RATES[0] <= rate <= SAMPLE_RATES[1]:
            raise SeparationInputError(
                "sample_rate",
                f"must be a whole number of Hz in {SAMPLE_RATES[0]}-{SAMPLE_RATES[1]} (got {rate!r})",
            )
        if not isinstance(audio, np.ndarray) or audio.ndim != 2 or audio.shape[0] not in (1, 2):
            shape = getattr(audio, "shape", None)
            raise SeparationInputError(
                "audio", f"must be mono or stereo, channels x samples (got shape {shape})"
            )
        if not np.issubdtype(audio.dtype, np.floating):
            raise SeparationInputError("audio", f"must hold float samples in [-1, 1] (got {audio.dtype})")
        seconds = audio.shape[1] / rate
        if not MIN_SECONDS <= seconds <= MAX_SECONDS:
            raise SeparationInputError(
                "audio",
                f"must last {MIN_SECONDS:g}-{MAX_SECONDS:g} s to be split into stems (got {seconds:.2f} s)",
            )
        if not np.isfinite(audio).all():
            raise SeparationInputError("audio", "contains NaN or infinite samples; regenerate or repair it")

    def admit(self, request_id: str, request: SeparationRequest) -> int:
        """Start a separation (after validating it); returns its number of steps (segments x models)."""
        if request_id in self._active:
            raise ValueError(f"request_id {request_id!r} is already admitted")
        self.validate(request)
        stereo = request.audio.astype(np.float32)
        if stereo.shape[0] != self.model_channels:  # mono to the model's channels (demucs' convert_audio)
            stereo = np.repeat(stereo.mean(axis=0, keepdims=True), self.model_channels, axis=0)
        mix = torch.from_numpy(resample(stereo, request.sample_rate, self.sample_rate))
        reference = mix.mean(dim=0)
        offset, scale = float(reference.mean()), float(reference.std()) + 1e-8
        length = mix.shape[-1]
        work = [
            (index, start) for index in range(len(self._segments)) for start in self._starts(index, length)
        ]
        weight_sums = []
        for index, segment in enumerate(self._segments):
            weight_sum = torch.zeros(length)
            for start in self._starts(index, length):
                end = min(length, start + segment)
                weight_sum[start:end] += self._ramps[index][: end - start]
            weight_sums.append(weight_sum)
        self._active[request_id] = _Separation(
            request=request,
            mix=(mix - offset) / scale,
            scale=scale,
            offset=offset,
            out=torch.zeros(len(self.sources), mix.shape[0], length),
            work=work,
            weight_sums=weight_sums,
            total=len(work),
        )
        return len(work)

    def _starts(self, index: int, length: int) -> range:
        segment = self._segments[index]
        return range(0, length, int((1 - OVERLAP) * segment))

    def step(self) -> list[tuple[str, SeparationResult]]:
        """Run the next segment of up to max_batch separations; return the ones that finished, with stems."""
        chosen = list(self._active.items())[: self.max_batch]
        by_model: dict[int, list[tuple[_Separation, int]]] = {}
        for _, separation in chosen:
            index, start = separation.work.pop(0)
            by_model.setdefault(index, []).append((separation, start))
        for index, items in by_model.items():
            self._run_segments(index, items)
        finished = []
        for request_id, separation in chosen:
            if not separation.work:
                del self._active[request_id]
                finished.append((request_id, self._result(separation)))
        return finished

    def cancel(self, request_id: str) -> bool:
        """Drop a separation between steps; False when it is not (or no longer) admitted."""
        return self._active.pop(request_id, None) is not None

    def progress(self, request_id: str) -> tuple[int, int] | None:
        """(steps done, total steps) of an admitted separation; None once finished, cancelled or unknown."""
        separation = self._active.get(request_id)
        return None if separation is None else (separation.done, separation.total)

    @property
    def active(self) -> list[str]:
        return list(self._active)

    def separate(
        self,
        audio: np.ndarray,
        sample_rate: int,
        *,
        on_step: Callable[[int, int], None] | None = None,
        is_cancelled: Callable[[], bool] | None = None,
    ) -> SeparationResult | None:
        """One separation from start to end (None when cancelled): the loop a scheduler runs, for one."""
        request_id = str(uuid.uuid4())
        total = self.admit(request_id, SeparationRequest(audio, sample_rate))
        while True:
            if is_cancelled is not None and is_cancelled():
                self.cancel(request_id)
                return None
            finished = dict(self.step())
            progress = self.progress(request_id)
            if on_step is not None:
                on_step(total if progress is None else progress[0], total)
            if request_id in finished:
                return finished[request_id]

    # --- the computation -----------------------------------------------------------------------------

    def _run_segments(self, index: int, items: list[tuple[_Separation, int]]) -> None:
        """One forward of model `index` over a batch of segments; overlap-add each into its separation."""
        segment = self._segments[index]
        chunks = [TensorChunk(separation.mix, start, segment) for separation, start in items]
        batch = torch.stack([chunk.padded(segment) for chunk in chunks]).to(self.device)
        with torch.inference_mode():
            estimates = (
                self.bag.models[index](batch).float().cpu()
            )  # .cpu() waits for the device: honest progress
        for (separation, start), chunk, estimate in zip(items, chunks, estimates, strict=True):
            length = chunk.length
            window = self._ramps[index][:length] / separation.weight_sums[index][start : start + length]
            separation.out[..., start : start + length] += (
                center_trim(estimate, length) * window * self._source_weights[index]
            )

    def _result(self, separation: _Separation) -> SeparationResult:
        request = separation.request
        stems = separation.out * separation.scale + separation.offset / len(self.sources)
        channels = request.audio.shape[0]
        if channels != stems.shape[1]:
            stems = stems.mean(dim=1, keepdim=True)
        flat = stems.reshape(-1, stems.shape[-1]).numpy()
        back = fit_length(resample(flat, self.sample_rate, request.sample_rate), request.audio.shape[1])
        arrays = np.ascontiguousarray(back, dtype=np.float32).reshape(len(self.sources), channels, -1)
        return SeparationResult(
            stems={name: arrays[k] for k, name in enumerate(self.sources)},
            sample_rate=request.sample_rate,
            model=self.name,
            steps=separation.total,
            separation_seconds=time.perf_counter() - separation.started,
        )


def _ramp(segment: int) -> torch.Tensor:
    """apply_model's cross-fade weights over one segment: a triangle peaking in the middle."""
    weight = torch.cat([torch.arange(1, segment // 2 + 1), torch.arange(segment - segment // 2, 0, -1)])
    return weight.float() / weight.max()
