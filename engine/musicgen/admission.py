"""Whether a MusicGen request fits now: the buffer shape the batch needs once it is in, and the memory that
growing to that shape takes (the formula in ``engine.musicgen.memory``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from engine import memory
from engine.backend import Admission, Decision
from engine.musicgen.cuda_graphs import CudaGraphs
from engine.musicgen.decode import LENGTH_BUCKET, TEXT_BUCKET, round_up
from engine.musicgen.kv_cache import CacheShape
from engine.musicgen.memory import HEADROOM, SlotGeometry

CUDA_TEXT_TOKENS = 256  # text room allocated up front on CUDA (prompts of ~1,000 characters)


class BatchSizing:
    """Buffer shapes and their cost for one loaded checkpoint on one device."""

    def __init__(
        self,
        model: Any,
        device: torch.device,
        *,
        capacity: int,
        melody: bool,
        cuda_positions: int | None,
        free_bytes: Callable[[torch.device], int],
    ) -> None:
        """``capacity``: the batch-size cap. ``melody``: the checkpoint conditions through a decoder prefix.
        ``cuda_positions``: on CUDA, the positions of the longest request (buffers are then sized once).
        ``free_bytes``: how free memory is measured."""
        self._model = model
        self._device = device
        self._geometry = SlotGeometry.of(model)
        self._capacity = capacity
        self._melody = melody
        self._cuda_positions = cuda_positions
        self._free_bytes = free_bytes

    def shape(self, current: CacheShape | None, *, slot: int, positions: int, text_tokens: int) -> CacheShape:
        """The buffer shape the batch needs once a request of ``positions`` decode positions and
        ``text_tokens`` text tokens is in ``slot``; never smaller than ``current``."""
        steps, tokens = positions, text_tokens
        capacity = self._capacity
        config = self._model.decoder.config
        if self._cuda_positions is not None:  # once, at the largest size: graphs then never go stale
            steps, tokens, slots = max(steps, self._cuda_positions), max(tokens, CUDA_TEXT_TOKENS), capacity
        else:
            slots = CudaGraphs.bucket(slot + 1, capacity)
        if self._melody:  # chroma frames and text are positions before the audio, not cross-attention room
            steps, tokens = steps + int(self._model.config.chroma_length) + tokens, 0
        heads = int(config.num_attention_heads)
        return CacheShape(
            layers=int(config.num_hidden_layers),
            slots=max(slots, current.slots if current else 0),
            heads=heads,
            head_dim=int(config.hidden_size) // heads,
            length=max(round_up(steps, LENGTH_BUCKET), current.length if current else 0),
            text_length=max(round_up(tokens, TEXT_BUCKET), current.text_length if current else 0),
        )

    def bytes(self, shape: CacheShape) -> int:
        return self._geometry.batch_bytes(shape.slots, shape.length, shape.text_length)

    def admission(
        self, current: CacheShape | None, shape: CacheShape, *, positions: int, duration: float, holding: bool
    ) -> Admission:
        """Admit a ``duration`` s request of ``positions`` positions that needs the buffers at ``shape`` now
        if the growth fits in free memory; else later while requests are ``holding`` memory, else never."""
        grow = self.bytes(shape) - (self.bytes(current) if current else 0)
        if grow <= 0:
            return Admission(Decision.NOW)
        free = self._free_bytes(self._device)
        if grow <= HEADROOM * free:
            return Admission(Decision.NOW)
        need = self._geometry.slot_bytes(positions, shape.text_length)
        reason = (
            f"a {duration:g} s request needs {memory.gigabytes(grow)} more for its batch "
            f"({memory.gigabytes(need)} per slot) and {self._device} has {memory.gigabytes(free)} free"
        )
        if holding:
            return Admission(Decision.LATER, reason)
        return Admission(
            Decision.NEVER, f"{reason}; ask for a shorter duration, or free memory (other models, processes)"
        )
