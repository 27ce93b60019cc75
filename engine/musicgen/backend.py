"""MusicGen behind the ``Backend`` interface: continuous batching over slots (see ``engine.backend``).

A request is admitted into the lowest free slot at a step boundary: its text is encoded and its cross
keys/values, sampling parameters, generator and frame count are written into that slot in place, and it
decodes from its own position 0 while the other slots carry on. When a slot has run its request's steps its
codes are taken out, the slot is free for the next admission, and once the device has finished that last
step the codes are EnCodec-decoded, checked (non-finite values fail the request) and post-processed into the
request's ``Outcome`` (``engine.musicgen.audio_out``: on a CPU on a thread of its own, while the other slots
step on).

Buffers grow when an admission needs more slots, positions or text tokens than they hold (sized by
``engine.musicgen.admission``; see ``engine.musicgen.memory`` for what that costs and when a request waits
instead). On CUDA they are sized once for the batch-size cap and the longest duration when memory allows, so
graphs captured per bucket stay valid for the life of the backend. Which request holds which slot is
``engine.musicgen.rows``'s bookkeeping.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import torch

from engine import memory
from engine.backend import Admission, Backend, Decision, Outcome, Progress, StepReport
from engine.loading import dtype_name
from engine.musicgen.admission import BatchSizing
from engine.musicgen.audio_out import WAIT_S, AudioOut
from engine.musicgen.continuation import frame_samples
from engine.musicgen.cuda_graphs import CudaGraphs
from engine.musicgen.decode import LENGTH_BUCKET, DecodeStep, round_up, tokenize
from engine.musicgen.decode_state import DecodeState
from engine.musicgen.encoding import Conditioning, ConditioningEncoder, wait_for_any
from engine.musicgen.kv_cache import CacheShape
from engine.musicgen.loading import LoadedModel, capabilities
from engine.musicgen.prefix import Melody, window_prefix
from engine.musicgen.requests import Continuation, MusicgenRequest, generation_of, validate_request
from engine.musicgen.rows import Launch, Row, SlotTable
from engine.musicgen.windows import MAX_PIECE_SECONDS, WINDOW_SECONDS, WindowPlan, plan_piece
from engine.request import GenerationRequest
from engine.results import non_finite_message

SEED_SPACE = 2**32


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
        self._record_codes = record_codes
        self._step = DecodeStep(model)
        # Melody checkpoints condition through a decoder prefix (``engine.musicgen.prefix``), per window.
        self._melody = not self._step.cross_attention
        self.capabilities = capabilities(
            loaded,
            max_batch,
            max_duration_s=MAX_PIECE_SECONDS,
            operations=frozenset({"generate", "continue"} | ({"melody"} if self._melody else set())),
        )
        self._frame_samples = frame_samples(model)
        self._delay_tail = model.decoder.num_codebooks // model.config.decoder.audio_channels - 1
        self._cuda = self._device.type == "cuda"
        self._graphs = CudaGraphs(self._step) if self._cuda and cuda_graphs else None
        self._in_flight = steps_in_flight if self._cuda else 1
        longest = GenerationRequest(prompt="longest", duration=WINDOW_SECONDS)
        self._sizing = BatchSizing(
            model,
            self._device,
            capacity=max_batch,
            melody=self._melody,
            cuda_positions=self.plan(longest).positions if self._cuda else None,
            free_bytes=free_bytes,
        )
        self._state: DecodeState | None = None
        self._slots = SlotTable(max_batch)
        self._rows: dict[str, Row] = {}  # every held request: in a slot, or draining its last steps
        self._launches: deque[Launch] = deque()
        self._ended: list[Outcome] = []  # cancelled, or failed at the last step; reported by the next step()
        self._encoder = ConditioningEncoder(model, background=not self._cuda)
        self._audio = AudioOut(
            model,
            sample_rate=self.capabilities.sample_rate,
            channels=self.capabilities.channels,
            dtype=self._dtype,
            background=not self._cuda,
        )

    # --- what the scheduler asks ----------------------------------------------------------------------

    def validate(self, operation: str, params: Mapping[str, Any]) -> MusicgenRequest:
        """``generate``, ``continue`` or (melody checkpoints) ``melody`` parameters as a request
        (``engine.musicgen.requests``)."""
        return validate_request(self.capabilities, operation, params)

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

    def can_admit(self, request: MusicgenRequest) -> Admission:
        if self._slots.free() is None:
            return Admission(Decision.LATER, f"all {self.capabilities.max_batch} slots are busy")
        current = self._state.shape if self._state is not None else None
        return self._sizing.admission(
            current,
            self._shape_for(request),
            positions=self.plan(request).positions,
            duration=generation_of(request).duration,
            holding=bool(self._rows),
        )

    def admit(self, request_id: str, request: MusicgenRequest) -> None:
        if request_id in self._rows:
            raise ValueError(f"request {request_id!r} is already held")
        slot = self._slots.free()
        if slot is None:
            raise RuntimeError("admit() without a free slot; ask can_admit() first")
        self._ensure_room(self._shape_for(request))
        assert self._state is not None
        continuation = request if isinstance(request, Continuation) else None
        generation = generation_of(request)
        plan = self.plan(request)
        self._step.ensure_positions(self._state.shape.length)
        seed = secrets.randbelow(SEED_SPACE) if generation.seed is None else generation.seed
        # Tokenised here: a fast tokenizer may not be called from two threads at once.
        tokens = None if self._melody else tokenize(self._processor, generation.prompt, self._device)
        codebooks = int(self._model.decoder.num_codebooks)
        row = Row(
            request_id=request_id,
            request=generation,
            windows=plan,
            samples=round(generation.duration * self.capabilities.sample_rate),
            seed=seed,
            generator=torch.Generator(device=self._device).manual_seed(seed),
            slot=slot,
            admitted_at=time.perf_counter(),
            piece=torch.zeros((codebooks, 0), dtype=torch.long, device=self._device),
            continuation=continuation,
            melody=request if isinstance(request, Melody) else None,
            position=plan.windows[0].context_frames,
            conditioning=self._encoder.submit(
                tokens, continuation.prompt.audio if continuation is not None else None
            ),
        )
        self._slots.take(slot, row)  # reserved now; it decodes once its conditioning is encoded
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
        return None if row is None else row.progress()

    @property
    def has_work(self) -> bool:
        return bool(self._rows or self._ended or self._audio.busy)

    @property
    def memory_bytes(self) -> int:
        state = self._sizing.bytes(self._state.shape) if self._state is not None else 0
        return self.loaded.memory_bytes + state

    def close(self) -> None:
        self._encoder.close()
        self._audio.close()

    @property
    def graph_captures(self) -> int:
        return self._graphs.captures if self._graphs is not None else 0

    # --- the step ---------------------------------------------------------------------------------------

    @torch.inference_mode()
    def step(self) -> StepReport:
        self._start_encoded(wait=not self._decoding())
        live = self._decoding()
        if live:
            self._launch(live)
        self._collect(wait=not live)
        # With nothing to launch, help decode the audio (unless a row is about to start); with nothing to
        # report either, wait a little for it rather than spin.
        idle = not live and not any(row.conditioning is not None for row in self._rows.values())
        finished = self._ended + self._decoded(wait=not live and not self._ended, steal=idle)
        self._ended = []
        return StepReport(
            progress={row.request_id: row.progress() for row in self._rows.values()},
            finished=finished,
        )

    def _decoding(self) -> list[Row]:
        return [row for row in self._slots.live() if row.conditioning is None]

    def _start_encoded(self, wait: bool) -> None:
        """Start decoding every admitted row whose conditioning is encoded (waiting a little for one when
        nothing else would step); a row whose encoding or start failed fails its request."""
        encoding = [(row, row.conditioning) for row in self._rows.values() if row.conditioning is not None]
        if wait:
            wait_for_any([future for _, future in encoding], WAIT_S)
        for row, future in encoding:
            if not future.done():
                continue
            row.conditioning = None
            try:
                self._start(row, future.result())
            except Exception as error:  # this request fails; its batch-mates carry on
                del self._rows[row.request_id]
                self._release(row)
                message = f"starting the request failed ({type(error).__name__}: {error})"
                self._ended.append(Outcome(row.request_id, "failed", error=message))

    def _start(self, row: Row, conditioning: Conditioning) -> None:
        """Write ``row``'s conditioning into its slot: the text's keys and values (or a melody checkpoint's
        prefix), then a continuation's prompt, prefilled."""
        assert row.slot is not None and self._state is not None
        first = row.windows.windows[0]
        if conditioning.prompt is not None:
            row.piece, row.prompt_samples = conditioning.prompt.codes, conditioning.prompt.samples
        self._state.start(row.slot, row.request, first.frames, conditioning.text)
        if self._melody:
            row.prefix = self._write_prefix(row.slot, row.request.prompt, row.melody, row.windows, 0)
        if first.context_frames:
            self._state.restart(row.slot, first.frames, first.prompt(row.piece))
            self._step.prefill(self._state, row.slot)

    def _launch(self, live: list[Row]) -> None:
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
        launch = Launch(rows=live)
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

    def _next_window(self, row: Row) -> None:
        """Restart ``row``'s slot on its next window, prompted with the tail of its piece so far (a melody
        row's prefix first rewritten with the chroma of the tune where the window starts)."""
        assert row.slot is not None and self._state is not None
        row.window += 1
        window = row.windows.windows[row.window]
        self._state.restart(row.slot, window.frames, window.prompt(row.piece))
        if row.melody is not None:
            self._write_prefix(row.slot, row.request.prompt, row.melody, row.windows, row.window)
        self._step.prefill(self._state, row.slot)
        row.position = window.context_frames
        row.in_window = 0

    def _write_prefix(
        self, slot: int, prompt: str, melody: Melody | None, plan: WindowPlan, index: int
    ) -> int:
        """Write window ``index``'s conditioning prefix into ``slot`` (a melody checkpoint); its length."""
        assert self._state is not None
        states = window_prefix(self._model, self._processor, prompt, melody, plan, index, self._device)
        self._step.prefill_prefix(self._state, slot, states)
        return int(states.shape[1])

    def _collect(self, wait: bool) -> None:
        """Account the launched steps the device has finished (waiting while too many are in flight, or for
        all of them when nothing is left to launch); requests whose last step finished go to ``_finish``."""
        finishing: list[Row] = []
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
        self._finish(finishing)

    def _finish(self, rows: list[Row]) -> None:
        """Hand ``rows``, whose last step the device finished, to the audio decoder; non-finite logits fail
        their request at once."""
        decodable = []
        for row in rows:
            assert row.nonfinite is not None and row.codes is not None
            if bool(row.nonfinite):
                del self._rows[row.request_id]
                error = non_finite_message("the decoder's logits", self._dtype)
                self._ended.append(Outcome(row.request_id, "failed", error=error))
            else:
                decodable.append(row)
        if self._record_codes is not None:
            self._record_codes.update(
                (row.request_id, row.codes) for row in decodable if row.codes is not None
            )
        if decodable:
            self._audio.submit(decodable)

    def _decoded(self, wait: bool, steal: bool) -> list[Outcome]:
        """Outcomes whose audio is decoded, for requests still held (a cancelled one's is dropped)."""
        ready = self._audio.ready(WAIT_S if wait else 0.0, steal=steal)
        return [outcome for outcome in ready if self._rows.pop(outcome.request_id, None) is not None]

    # --- slots and buffers ------------------------------------------------------------------------------

    def _release(self, row: Row) -> None:
        assert self._state is not None
        self._state.stop(self._slots.release(row))

    def _shape_for(self, request: MusicgenRequest) -> CacheShape:
        """The buffer shape the batch needs once ``request`` is in."""
        text = generation_of(request).prompt
        tokens = int(tokenize(self._processor, text, torch.device("cpu"))["input_ids"].shape[1])
        slot = self._slots.free()
        assert slot is not None
        current = self._state.shape if self._state is not None else None
        return self._sizing.shape(
            current, slot=slot, positions=self.plan(request).positions, text_tokens=tokens
        )

    def _ensure_room(self, shape: CacheShape) -> None:
        if self._state is None:
            self._state = DecodeState(self._model, shape, self._device)
        elif self._state.grow(shape.slots, shape.length, shape.text_length) and self._graphs is not None:
            self._graphs.clear()
        self._slots.extend(shape.slots)
