"""MusicGen behind the ``Backend`` interface: continuous batching over slots (see ``engine.backend``).

A request is admitted into the lowest free slot at a step boundary: its text is encoded and its cross
keys/values, sampling parameters, generator and frame count are written into that slot in place, and it
decodes from its own position 0 while the other slots carry on. When a slot has run its request's steps its
codes are taken out, the slot is free for the next admission, and once the device has finished that last
step the codes are EnCodec-decoded, checked (non-finite values fail the request) and post-processed into the
request's ``Outcome``.

Buffers grow when an admission needs more slots, positions or text tokens than they hold (see
``engine.musicgen.memory`` for what that costs and when a request waits instead). On CUDA they are sized
once for the batch-size cap and the longest duration when memory allows, so graphs captured per bucket stay
valid for the life of the backend.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from engine import memory
from engine.backend import (
    Admission,
    Backend,
    Decision,
    Outcome,
    Progress,
    StepReport,
)
from engine.loading import dtype_name
from engine.musicgen.decode import (
    LENGTH_BUCKET,
    TEXT_BUCKET,
    CudaGraphs,
    DecodeState,
    DecodeStep,
    Plan,
    decode_audio,
    encode_text,
    round_up,
    tokenize,
)
from engine.musicgen.kv_cache import CacheShape
from engine.musicgen.loading import LoadedModel, capabilities
from engine.musicgen.memory import HEADROOM, SlotGeometry
from engine.request import GenerationRequest, validate_generation
from engine.results import audio_outcome, non_finite_message

log = logging.getLogger(__name__)

SEED_SPACE = 2**32
CUDA_TEXT_TOKENS = 256  # text room allocated up front on CUDA (prompts of ~1,000 characters)


@dataclass
class _Row:
    """A held request: where it decodes, how far it is, and its codes once its last step is launched."""

    request_id: str
    request: GenerationRequest
    plan: Plan
    seed: int
    generator: torch.Generator
    slot: int | None  # None once its last step is launched (the slot is free again)
    admitted_at: float
    launched: int = 0  # steps handed to the device
    done: int = 0  # steps the device has finished
    codes: torch.Tensor | None = None
    nonfinite: torch.Tensor | None = None


@dataclass
class _Launch:
    """One launched step: which rows it advanced, and (on CUDA) the event that marks it finished."""

    rows: list[_Row]
    event: Any = None
    finishing: list[_Row] = field(default_factory=list)


class MusicgenBackend(Backend[GenerationRequest]):
    """Continuous batching of MusicGen requests on one loaded checkpoint."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        max_batch: int,
        cuda_graphs: bool = True,
        free_bytes: Callable[[torch.device], int] = memory.free_bytes,
        steps_in_flight: int = 2,
        record_codes: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """``max_batch``: most requests decoding together. ``cuda_graphs``: capture the step on CUDA.
        ``free_bytes``: how free memory is measured (for the budget). ``steps_in_flight``: CUDA steps queued
        ahead of the one being accounted. ``record_codes``: when given, every completed request's codes
        (codebooks × frames) are put there by id, for checks against other decoders."""
        model = loaded.model
        self.loaded = loaded
        self._model = model
        self._processor = loaded.processor
        self._device = loaded.device
        self._dtype = dtype_name(loaded.dtype)
        self._geometry = SlotGeometry.of(model)
        self._free_bytes = free_bytes
        self._record_codes = record_codes
        self.capabilities = capabilities(loaded, max_batch)
        self._step = DecodeStep(model)
        self._cuda = self._device.type == "cuda"
        self._graphs = CudaGraphs(self._step) if self._cuda and cuda_graphs else None
        self._in_flight = steps_in_flight if self._cuda else 1
        self._state: DecodeState | None = None
        self._slots: list[_Row | None] = []
        self._rows: dict[str, _Row] = {}  # every held request: in a slot, or draining its last steps
        self._launches: deque[_Launch] = deque()
        self._ended: list[Outcome] = []  # cancelled between steps; reported by the next step()

    # --- what the scheduler asks ----------------------------------------------------------------------

    def validate(self, operation: str, params: Mapping[str, Any]) -> GenerationRequest:
        return validate_generation(operation, params)

    def steps_for(self, duration: float) -> int:
        return Plan.for_duration(self._model, duration).steps

    def can_admit(self, request: GenerationRequest) -> Admission:
        if self._free_slot() is None:
            return Admission(Decision.LATER, f"all {self.capabilities.max_batch} slots are busy")
        shape = self._shape_for(request)
        current = self._state.shape if self._state is not None else None
        grow = self._bytes(shape) - (self._bytes(current) if current else 0)
        if grow <= 0:
            return Admission(Decision.NOW)
        free = self._free_bytes(self._device)
        if grow <= HEADROOM * free:
            return Admission(Decision.NOW)
        need = self._geometry.slot_bytes(
            Plan.for_duration(self._model, request.duration).steps, shape.text_length
        )
        reason = (
            f"a {request.duration:g} s request needs {memory.gigabytes(grow)} more for its batch "
            f"({memory.gigabytes(need)} per slot) and {self._device} has {memory.gigabytes(free)} free"
        )
        if self._rows:
            return Admission(Decision.LATER, reason)
        return Admission(
            Decision.NEVER, f"{reason}; ask for a shorter duration, or free memory (other models, processes)"
        )

    def admit(self, request_id: str, request: GenerationRequest) -> None:
        if request_id in self._rows:
            raise ValueError(f"request {request_id!r} is already held")
        slot = self._free_slot()
        if slot is None:
            raise RuntimeError("admit() without a free slot; ask can_admit() first")
        self._ensure_room(self._shape_for(request))
        assert self._state is not None
        plan = Plan.for_duration(self._model, request.duration)
        self._step.ensure_positions(self._state.shape.length)
        seed = secrets.randbelow(SEED_SPACE) if request.seed is None else request.seed
        with torch.inference_mode():
            text = encode_text(self._model, self._processor, request.prompt, self._device)
            self._state.start(slot, request, plan, text)
        row = _Row(
            request_id=request_id,
            request=request,
            plan=plan,
            seed=seed,
            generator=torch.Generator(device=self._device).manual_seed(seed),
            slot=slot,
            admitted_at=time.perf_counter(),
        )
        self._slots[slot] = row
        self._rows[request_id] = row

    def cancel(self, request_id: str) -> bool:
        row = self._rows.pop(request_id, None)
        if row is None:
            return False
        if row.slot is not None:
            self._release(row)
        self._ended.append(Outcome(request_id, "cancelled"))
        return True

    def progress(self, request_id: str) -> Progress | None:
        row = self._rows.get(request_id)
        return None if row is None else self._progress_of(row)

    @property
    def has_work(self) -> bool:
        return bool(self._rows or self._ended)

    @property
    def memory_bytes(self) -> int:
        state = self._bytes(self._state.shape) if self._state is not None else 0
        return self.loaded.memory_bytes + state

    @property
    def graph_captures(self) -> int:
        return self._graphs.captures if self._graphs is not None else 0

    # --- the step ---------------------------------------------------------------------------------------

    @torch.inference_mode()
    def step(self) -> StepReport:
        finished = self._ended
        self._ended = []
        live = [row for row in self._slots if row is not None]
        if live:
            self._launch(live)
        finished.extend(self._collect(wait=not live))
        return StepReport(
            progress={row.request_id: self._progress_of(row) for row in self._rows.values()},
            finished=finished,
        )

    def _launch(self, live: list[_Row]) -> None:
        state = self._state
        assert state is not None
        for row in live:
            assert row.slot is not None
            state.noise[row.slot].exponential_(generator=row.generator)
        highest = max(row.slot for row in live if row.slot is not None) + 1
        if self._cuda:
            slots = CudaGraphs.bucket(highest, state.shape.slots)
            reach = max(row.launched for row in live) + 1
            length = min(round_up(reach, LENGTH_BUCKET), state.shape.length)
            if self._graphs is not None:
                self._graphs.run(state, slots, length)
            else:
                self._step.masked(state, slots, length)
        else:
            positions = [0] * state.shape.slots
            for row in live:
                assert row.slot is not None
                positions[row.slot] = row.launched
            self._step.exact(
                state, highest, sorted(row.slot for row in live if row.slot is not None), positions
            )
        launch = _Launch(rows=live)
        for row in live:
            row.launched += 1
            if row.launched == row.plan.steps:
                assert row.slot is not None
                row.codes = state.frames_of(row.slot, row.plan.frames)
                row.nonfinite = state.nonfinite[row.slot].clone()
                self._release(row)
                launch.finishing.append(row)
        if self._cuda:
            launch.event = torch.cuda.Event()
            launch.event.record()
        self._launches.append(launch)

    def _collect(self, wait: bool) -> list[Outcome]:
        """Account the launched steps the device has finished (waiting while too many are in flight, or for
        all of them when nothing is left to launch); outcomes of requests whose last step finished."""
        finishing: list[_Row] = []
        while self._launches:
            launch = self._launches[0]
            busy = launch.event is not None and not launch.event.query()
            if busy and not wait and len(self._launches) <= self._in_flight:
                break
            if busy:
                launch.event.synchronize()
            self._launches.popleft()
            for row in launch.rows:
                row.done += 1
            finishing.extend(row for row in launch.finishing if row.request_id in self._rows)
        return self._finish(finishing)

    def _finish(self, rows: list[_Row]) -> list[Outcome]:
        if not rows:
            return []
        outcomes = []
        decodable = []
        for row in rows:
            del self._rows[row.request_id]
            assert row.nonfinite is not None and row.codes is not None
            if bool(row.nonfinite):
                outcomes.append(
                    Outcome(
                        row.request_id,
                        "failed",
                        error=non_finite_message("the decoder's logits", self._dtype),
                    )
                )
            else:
                decodable.append(row)
        codes = [row.codes for row in decodable if row.codes is not None]
        if self._record_codes is not None:
            self._record_codes.update(zip([row.request_id for row in decodable], codes, strict=True))
        audio = decode_audio(self._model, codes)
        for row, samples in zip(decodable, audio, strict=True):
            outcomes.append(
                audio_outcome(
                    row.request_id,
                    samples[:, : row.plan.samples],
                    sample_rate=self.capabilities.sample_rate,
                    expected_shape=(self.capabilities.channels, row.plan.samples),
                    target_lufs=row.request.loudness_lufs,
                    seed=row.seed,
                    steps=row.plan.steps,
                    seconds=time.perf_counter() - row.admitted_at,
                    dtype=self._dtype,
                )
            )
        return outcomes

    # --- slots and buffers ------------------------------------------------------------------------------

    def _progress_of(self, row: _Row) -> Progress:
        phase = "decoding" if row.done < row.plan.steps else "decoding audio"
        return Progress(done=row.done, total=row.plan.steps, phase=phase)

    def _free_slot(self) -> int | None:
        for slot, row in enumerate(self._slots):
            if row is None:
                return slot
        held = sum(row is not None for row in self._slots)
        return len(self._slots) if held < self.capabilities.max_batch else None

    def _release(self, row: _Row) -> None:
        assert row.slot is not None and self._state is not None
        self._state.stop(row.slot)
        self._slots[row.slot] = None
        row.slot = None

    def _shape_for(self, request: GenerationRequest) -> CacheShape:
        """The buffer shape the batch needs once ``request`` is in."""
        tokens = int(tokenize(self._processor, request.prompt, torch.device("cpu"))["input_ids"].shape[1])
        steps = Plan.for_duration(self._model, request.duration).steps
        slot = self._free_slot()
        assert slot is not None
        capacity = self.capabilities.max_batch
        config = self._model.decoder.config
        if self._cuda:  # once, at the largest size the cap and durations allow: graphs then never go stale
            longest = Plan.for_duration(self._model, self.capabilities.max_duration_s).steps
            steps, tokens, slots = longest, max(tokens, CUDA_TEXT_TOKENS), capacity
        else:
            slots = CudaGraphs.bucket(slot + 1, capacity)
        current = self._state.shape if self._state is not None else None
        heads = int(config.num_attention_heads)
        return CacheShape(
            layers=int(config.num_hidden_layers),
            slots=max(slots, current.slots if current else 0),
            heads=heads,
            head_dim=int(config.hidden_size) // heads,
            length=max(round_up(steps, LENGTH_BUCKET), current.length if current else 0),
            text_length=max(round_up(tokens, TEXT_BUCKET), current.text_length if current else 0),
        )

    def _bytes(self, shape: CacheShape) -> int:
        return self._geometry.batch_bytes(shape.slots, shape.length, shape.text_length)

    def _ensure_room(self, shape: CacheShape) -> None:
        if self._state is None:
            self._state = DecodeState(self._model, shape, self._device)
        elif self._state.grow(shape.slots, shape.length, shape.text_length) and self._graphs is not None:
            self._graphs.clear()
        self._slots.extend([None] * (shape.slots - len(self._slots)))
