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

import numpy as np
import torch

from engine import memory
from engine.backend import (
    Admission,
    Backend,
    Decision,
    FieldError,
    InvalidRequest,
    Outcome,
    Progress,
    StepReport,
)
from engine.conditioning import DecodedAudio, PreparedAudio, prepare_audio
from engine.loading import dtype_name
from engine.musicgen.continuation import encode_prompt, frame_samples, splice
from engine.musicgen.decode import (
    LENGTH_BUCKET,
    TEXT_BUCKET,
    CudaGraphs,
    DecodeState,
    DecodeStep,
    decode_audio,
    encode_text,
    round_up,
    tokenize,
)
from engine.musicgen.kv_cache import CacheShape
from engine.musicgen.loading import LoadedModel, capabilities
from engine.musicgen.memory import HEADROOM, SlotGeometry
from engine.musicgen.piece import decode_piece
from engine.musicgen.prefix import Melody, conditioning_prefix, melody_of
from engine.musicgen.windows import (
    MAX_PIECE_SECONDS,
    MAX_PROMPT_SECONDS,
    WINDOW_SECONDS,
    WindowPlan,
    plan_piece,
)
from engine.request import GenerationRequest, validate_generation
from engine.results import audio_outcome, non_finite_message

log = logging.getLogger(__name__)

SEED_SPACE = 2**32
CUDA_TEXT_TOKENS = 256  # text room allocated up front on CUDA (prompts of ~1,000 characters)


@dataclass(frozen=True)
class Continuation:
    """A ``continue`` request: generate ``request.duration`` seconds after ``prompt`` (the user's audio at
    the model's rate and channels, cut to its last ``MAX_PROMPT_SECONDS``)."""

    request: GenerationRequest
    prompt: PreparedAudio


MusicgenRequest = GenerationRequest | Continuation | Melody


def generation_of(request: MusicgenRequest) -> GenerationRequest:
    """The generation parameters of any MusicGen request."""
    return request if isinstance(request, GenerationRequest) else request.request


@dataclass
class _Row:
    """A held request: where it decodes, how far it is, and its codes once its last step is launched.

    A piece longer than one window decodes its windows one after another in the same slot: when a window's
    last step is launched its new codes join ``piece`` and the slot restarts, prompted with the piece's
    last context frames (``WindowPlan``), while the other slots carry on."""

    request_id: str
    request: GenerationRequest
    windows: WindowPlan
    samples: int  # audio samples generated (added, for a continuation)
    seed: int
    generator: torch.Generator
    slot: int | None  # None once its last step is launched (the slot is free again)
    admitted_at: float
    piece: torch.Tensor  # (codebooks, frames) so far: a continuation's prompt codes, then every window's
    continuation: Continuation | None = None
    prefix: int = 0  # decoder positions before the slot's audio (a melody checkpoint's conditioning)
    prompt_samples: int = 0  # samples the prompt codes encode (the end of the continuation's audio)
    window: int = 0  # index of the window decoding now
    position: int = 0  # the slot's position in its window
    in_window: int = 0  # steps of the current window handed to the device
    launched: int = 0  # steps handed to the device, over all windows
    done: int = 0  # steps the device has finished, over all windows
    codes: torch.Tensor | None = None
    nonfinite: torch.Tensor | None = None


@dataclass
class _Launch:
    """One launched step: which rows it advanced, and (on CUDA) the event that marks it finished."""

    rows: list[_Row]
    event: Any = None
    finishing: list[_Row] = field(default_factory=list)


class MusicgenBackend(Backend[MusicgenRequest]):
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
        self._step = DecodeStep(model)
        # Melody checkpoints condition through a decoder prefix (``engine.musicgen.prefix``), one window long.
        self._melody = not self._step.cross_attention
        self.capabilities = capabilities(
            loaded,
            max_batch,
            max_duration_s=WINDOW_SECONDS if self._melody else MAX_PIECE_SECONDS,
            operations=frozenset({"generate", "melody"} if self._melody else {"generate", "continue"}),
        )
        self._frame_samples = frame_samples(model)
        self._delay_tail = model.decoder.num_codebooks // model.config.decoder.audio_channels - 1
        self._cuda = self._device.type == "cuda"
        self._graphs = CudaGraphs(self._step) if self._cuda and cuda_graphs else None
        self._in_flight = steps_in_flight if self._cuda else 1
        self._state: DecodeState | None = None
        self._slots: list[_Row | None] = []
        self._rows: dict[str, _Row] = {}  # every held request: in a slot, or draining its last steps
        self._launches: deque[_Launch] = deque()
        self._ended: list[Outcome] = []  # cancelled between steps; reported by the next step()

    # --- what the scheduler asks ----------------------------------------------------------------------

    def validate(self, operation: str, params: Mapping[str, Any]) -> MusicgenRequest:
        """``generate``: a ``GenerationRequest``. ``continue``: the same parameters plus ``source_audio``
        (an ``engine.conditioning.DecodedAudio``), whose end prompts the decoder; ``duration`` is what is
        added. ``melody`` (melody checkpoints): the same plus ``source_audio``, the tune to follow."""
        limit = self.capabilities.max_duration_s
        if operation in ("continue", "melody") and operation not in self.capabilities.operations:
            raise InvalidRequest([FieldError(f"{operation}_from", self._unsupported(operation))])
        if operation not in ("continue", "melody"):
            return validate_generation(operation, params, max_duration_s=limit)
        fields = dict(params)
        source = fields.pop("source_audio", None)
        if not isinstance(source, DecodedAudio):
            raise InvalidRequest([FieldError("source_audio", f"{operation} needs the audio to {operation}")])
        request = validate_generation("generate", fields, max_duration_s=limit)
        if operation == "melody":
            return melody_of(request, source)
        prompt = prepare_audio(
            source,
            sample_rate=self.capabilities.sample_rate,
            channels=self.capabilities.channels,
            max_seconds=MAX_PROMPT_SECONDS,
            keep="end",
        )
        return Continuation(request, prompt)

    def _unsupported(self, operation: str) -> str:
        model = self.capabilities.model_id
        if operation == "melody":
            return (
                f"model {model!r} has no melody conditioning; use a MusicGen-Melody checkpoint "
                "(model 'melody' or 'melody-large'), or leave melody_from out"
            )
        return (
            f"model {model!r} conditions on a melody and does not continue audio; use a text checkpoint "
            "(model 'small', 'medium' or 'large') to continue, or leave continue_from out"
        )

    def plan(self, request: MusicgenRequest) -> WindowPlan:
        """The windows ``request`` decodes (``engine.musicgen.windows``)."""
        generation = generation_of(request)
        prompt_frames = 0
        if isinstance(request, Continuation):
            prompt_frames = request.prompt.audio.shape[1] // self._frame_samples
        return plan_piece(
            generation.duration,
            sample_rate=self.capabilities.sample_rate,
            frame_samples=self._frame_samples,
            delay_tail=self._delay_tail,
            context_seconds=generation.context_seconds,
            prompt_frames=prompt_frames,
        )

    def steps_for(self, duration: float) -> int:
        return self.plan(GenerationRequest(prompt="steps", duration=duration)).steps

    def _positions(self, plan: WindowPlan) -> int:
        """Decode positions a slot needs for ``plan``'s longest window (prompt included)."""
        return max(window.context_frames + window.steps for window in plan.windows)

    def can_admit(self, request: MusicgenRequest) -> Admission:
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
        need = self._geometry.slot_bytes(self._positions(self.plan(request)), shape.text_length)
        duration = generation_of(request).duration
        reason = (
            f"a {duration:g} s request needs {memory.gigabytes(grow)} more for its batch "
            f"({memory.gigabytes(need)} per slot) and {self._device} has {memory.gigabytes(free)} free"
        )
        if self._rows:
            return Admission(Decision.LATER, reason)
        return Admission(
            Decision.NEVER, f"{reason}; ask for a shorter duration, or free memory (other models, processes)"
        )

    def admit(self, request_id: str, request: MusicgenRequest) -> None:
        if request_id in self._rows:
            raise ValueError(f"request {request_id!r} is already held")
        slot = self._free_slot()
        if slot is None:
            raise RuntimeError("admit() without a free slot; ask can_admit() first")
        self._ensure_room(self._shape_for(request))
        assert self._state is not None
        continuation = request if isinstance(request, Continuation) else None
        generation = generation_of(request)
        plan = self.plan(request)
        self._step.ensure_positions(self._state.shape.length)
        seed = secrets.randbelow(SEED_SPACE) if generation.seed is None else generation.seed
        codebooks = int(self._model.decoder.num_codebooks)
        with torch.inference_mode():
            piece = torch.zeros((codebooks, 0), dtype=torch.long, device=self._device)
            prompt_samples = 0
            if continuation is not None:
                prompt = encode_prompt(self._model, continuation.prompt.audio)
                piece, prompt_samples = prompt.codes, prompt.samples
            first = plan.windows[0]
            prefix = 0
            if self._melody:
                chroma = request.chroma if isinstance(request, Melody) else None
                states = conditioning_prefix(
                    self._model, self._processor, generation.prompt, chroma, self._device
                )
                self._state.start(slot, generation, first.frames, [])
                self._step.prefill_prefix(self._state, slot, states)
                prefix = int(states.shape[1])
            else:
                text = encode_text(self._model, self._processor, generation.prompt, self._device)
                self._state.start(slot, generation, first.frames, text)
            if first.context_frames:
                self._state.restart(slot, first.frames, first.prompt(piece))
                self._step.prefill(self._state, slot)
        row = _Row(
            request_id=request_id,
            request=generation,
            windows=plan,
            samples=round(generation.duration * self.capabilities.sample_rate),
            seed=seed,
            generator=torch.Generator(device=self._device).manual_seed(seed),
            slot=slot,
            admitted_at=time.perf_counter(),
            piece=piece,
            continuation=continuation,
            prompt_samples=prompt_samples,
            position=first.context_frames,
            prefix=prefix,
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
            reach = max(row.prefix + row.launched for row in live) + 1
            length = min(round_up(reach, LENGTH_BUCKET), state.shape.length)
            if self._graphs is not None:
                self._graphs.run(state, slots, length)
            else:
                self._step.masked(state, slots, length)
        else:
            positions = [0] * state.shape.slots
            for row in live:
                assert row.slot is not None
                positions[row.slot] = row.prefix + row.position
            self._step.exact(
                state, highest, sorted(row.slot for row in live if row.slot is not None), positions
            )
        launch = _Launch(rows=live)
        for row in live:
            row.launched += 1
            row.in_window += 1
            row.position += 1
            window = row.windows.windows[row.window]
            if row.in_window < window.steps:
                continue
            assert row.slot is not None
            new = state.frames_of(row.slot, window.frames)[:, window.context_frames :]
            row.piece = torch.cat([row.piece, new], dim=1)
            if row.window + 1 < len(row.windows.windows):
                self._next_window(row)
                continue
            row.codes = row.piece
            row.nonfinite = state.nonfinite[row.slot].clone()
            self._release(row)
            launch.finishing.append(row)
        if self._cuda:
            launch.event = torch.cuda.Event()
            launch.event.record()
        self._launches.append(launch)

    def _next_window(self, row: _Row) -> None:
        """Restart ``row``'s slot on its next window, prompted with the tail of its piece so far."""
        assert row.slot is not None and self._state is not None
        row.window += 1
        window = row.windows.windows[row.window]
        self._state.restart(row.slot, window.frames, window.prompt(row.piece))
        self._step.prefill(self._state, row.slot)
        row.position = window.context_frames
        row.in_window = 0

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
        for row, samples in zip(decodable, self._decode(decodable), strict=True):
            outcomes.append(
                audio_outcome(
                    row.request_id,
                    samples,
                    sample_rate=self.capabilities.sample_rate,
                    expected_shape=(self.capabilities.channels, samples.shape[1]),
                    target_lufs=row.request.loudness_lufs,
                    seed=row.seed,
                    steps=row.windows.steps,
                    seconds=time.perf_counter() - row.admitted_at,
                    dtype=self._dtype,
                )
            )
        return outcomes

    def _decode(self, rows: list[_Row]) -> list[np.ndarray]:
        """Each row's audio at its exact length: one-window pieces share ``decode_audio`` calls; longer
        pieces are decoded whole (``decode_piece``); a continuation is spliced onto the user's audio."""
        single = [row for row in rows if len(row.windows.windows) == 1 and row.continuation is None]
        decoded = dict(
            zip(
                (row.request_id for row in single),
                decode_audio(self._model, [row.codes for row in single if row.codes is not None]),
                strict=True,
            )
        )
        audio = []
        for row in rows:
            assert row.codes is not None
            whole = decoded.get(row.request_id)
            if whole is None:
                whole = decode_piece(self._model, row.codes)
            if row.continuation is None:
                audio.append(whole[:, : row.samples])
                continue
            audio.append(
                splice(
                    row.continuation.prompt.audio,
                    whole,
                    prompt_samples=row.prompt_samples,
                    added_samples=row.samples,
                    sample_rate=self.capabilities.sample_rate,
                )
            )
        return audio

    # --- slots and buffers ------------------------------------------------------------------------------

    def _progress_of(self, row: _Row) -> Progress:
        total = row.windows.steps
        count = len(row.windows.windows)
        phase = "decoding" if row.done < total else "decoding audio"
        if count > 1 and row.done < total:
            window = next(w for w in row.windows.windows if row.windows.steps_before(w.index + 1) > row.done)
            phase = f"decoding window {window.index + 1} of {count}"
        return Progress(done=row.done, total=total, phase=phase)

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

    def _shape_for(self, request: MusicgenRequest) -> CacheShape:
        """The buffer shape the batch needs once ``request`` is in."""
        text = generation_of(request).prompt
        tokens = int(tokenize(self._processor, text, torch.device("cpu"))["input_ids"].shape[1])
        steps = self._positions(self.plan(request))
        slot = self._free_slot()
        assert slot is not None
        capacity = self.capabilities.max_batch
        config = self._model.decoder.config
        if self._cuda:  # once, at the largest size the cap and durations allow: graphs then never go stale
            longest = self._positions(self.plan(GenerationRequest(prompt="longest", duration=WINDOW_SECONDS)))
            steps, tokens, slots = max(steps, longest), max(tokens, CUDA_TEXT_TOKENS), capacity
        else:
            slots = CudaGraphs.bucket(slot + 1, capacity)
        if self._melody:  # chroma frames and text are positions before the audio, not cross-attention room
            steps, tokens = steps + int(self._model.config.chroma_length) + tokens, 0
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
