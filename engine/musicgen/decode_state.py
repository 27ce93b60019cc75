"""Every per-slot buffer of a running MusicGen batch (``DecodeState``), allocated up front and written in
place, so that a slot is reused without anything changing shape (a captured CUDA graph stays valid).

``engine.musicgen.decode`` runs the decoder over these buffers; ``engine.musicgen.kv_cache`` holds the keys
and values among them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from engine.musicgen.kv_cache import CacheShape, SlotCache
from engine.musicgen.sampling import SamplingParams
from engine.request import GenerationRequest


class DecodeState:
    """Every per-slot buffer of a running batch; all allocated up front, all written in place."""

    def __init__(self, model: Any, shape: CacheShape, device: torch.device) -> None:
        config = model.decoder.config
        self.device = device
        self.vocab_size = int(config.vocab_size)
        self.codebooks = int(model.decoder.num_codebooks)
        self.start_token = int(model.generation_config.decoder_start_token_id)
        self.delay = torch.arange(self.codebooks, device=device) // config.audio_channels
        slots, length = shape.slots, shape.length
        self.cache = SlotCache(shape, model.decoder.dtype, device)
        self.tokens = torch.full((slots, self.codebooks), self.start_token, dtype=torch.long, device=device)
        self.codes = torch.full(
            (slots, self.codebooks, length), self.start_token, dtype=torch.long, device=device
        )
        self.position = torch.zeros(slots, dtype=torch.long, device=device)
        self.live = torch.zeros(slots, dtype=torch.long, device=device)  # 1 for a slot that is decoding
        self.frames = torch.zeros(slots, dtype=torch.long, device=device)
        self.prompt = torch.zeros(
            slots, dtype=torch.long, device=device
        )  # leading frames copied, not sampled
        # Decoder positions before the slot's audio: a melody checkpoint's conditioning prefix (0 otherwise).
        self.prefix = torch.zeros(slots, dtype=torch.long, device=device)
        self.noise = torch.ones((slots, self.codebooks, self.vocab_size), dtype=torch.float32, device=device)
        self.nonfinite = torch.zeros(slots, dtype=torch.bool, device=device)  # the row's logits went NaN/inf
        self.params = SamplingParams.empty(slots, self.vocab_size, device)

    @property
    def shape(self) -> CacheShape:
        return self.cache.shape

    def grow(self, slots: int, length: int, text_length: int) -> bool:
        """Room for ``slots`` slots of ``length`` positions and ``text_length`` text tokens, keeping every
        slot's state; True when buffers were reallocated (captured graphs then no longer apply)."""
        written = int((self.position + self.prefix).max()) + 1  # a slot writes at its position, then moves on
        cache = self.cache.grown(slots, length, text_length, min(written, self.shape.length))
        if cache is self.cache:
            return False
        old = self.shape
        new = cache.shape

        def widened(tensor: torch.Tensor, fill: float | bool, trailing: tuple[int, ...] = ()) -> torch.Tensor:
            size = (new.slots, *(trailing or tensor.shape[1:]))
            grown = torch.full(size, fill, dtype=tensor.dtype, device=self.device)
            index = (slice(0, old.slots), *(slice(0, size) for size in tensor.shape[1:]))
            grown[index] = tensor
            return grown

        self.cache = cache
        self.tokens = widened(self.tokens, self.start_token)
        self.codes = widened(self.codes, self.start_token, (self.codebooks, new.length))
        self.position = widened(self.position, 0)
        self.live = widened(self.live, 0)
        self.frames = widened(self.frames, 0)
        self.prompt = widened(self.prompt, 0)
        self.prefix = widened(self.prefix, 0)
        self.noise = widened(self.noise, 1.0)
        self.nonfinite = widened(self.nonfinite, False)
        params = SamplingParams.empty(new.slots, self.vocab_size, self.device)
        for mine, theirs in zip(
            (self.params.temperature, self.params.top_k, self.params.top_p, self.params.guidance_scale),
            (params.temperature, params.top_k, params.top_p, params.guidance_scale),
            strict=True,
        ):
            theirs[: old.slots] = mine
        self.params = params
        return True

    def start(
        self, slot: int, request: GenerationRequest, frames: int, text: list[tuple[torch.Tensor, ...]]
    ) -> None:
        """Put a newly admitted request in ``slot``: text keys/values, parameters, position 0, frame count."""
        for layer, (key, value) in enumerate(text):
            self.cache.fill_text(slot, layer, key, value)
        self.params.write(slot, request, self.vocab_size)
        self.tokens[slot] = self.start_token
        self.position[slot] = 0
        self.frames[slot] = frames
        self.prompt[slot] = 0
        self.prefix[slot] = 0
        self.nonfinite[slot] = False
        self.live[slot] = 1

    def restart(self, slot: int, frames: int, prompt: torch.Tensor) -> None:
        """Start a new window in ``slot`` (same text and parameters) holding ``frames`` frames, the first
        ``prompt.shape[-1]`` of them the given (codebooks, frames) codes: they are written in the delay
        pattern, as if the slot had emitted them, and the step copies them instead of sampling (the lagging
        codebooks of the first new frames included). ``DecodeStep.prefill`` then computes their keys and
        values; the slot continues at the position after the prompt."""
        context = int(prompt.shape[-1])
        self.codes[slot] = self.start_token
        index = self.delay[:, None] + torch.arange(context, device=self.device)
        self.codes[slot].scatter_(1, index, prompt.to(self.device))
        self.frames[slot] = frames
        self.prompt[slot] = context
        self.position[slot] = context
        self.tokens[slot] = self.codes[slot, :, context - 1]
        self.live[slot] = 1

    def stop(self, slot: int) -> None:
        """Free ``slot``: it stops advancing and writes (harmlessly) at its position 0 until reused."""
        self.live[slot] = 0
        self.position[slot] = 0
        self.prefix[slot] = 0

    def frames_of(self, slot: int, frames: int) -> torch.Tensor:
        """Undo the delay pattern for one slot: its (codebooks, frames) codes (a new tensor)."""
        index = self.delay[:, None] + torch.arange(frames, device=self.device)
        return self.codes[slot].gather(1, index)

    @contextmanager
    def preserved(self) -> Iterator[None]:
        """Run a throw-away step (graph warm-up) without disturbing running slots. Cached keys/values need no
        saving: the throw-away step writes each row's current position, which the real step rewrites before
        anything reads it."""
        saved = [tensor.clone() for tensor in (self.tokens, self.codes, self.position, self.nonfinite)]
        try:
            yield
        finally:
            for tensor, copy in zip(
                (self.tokens, self.codes, self.position, self.nonfinite), saved, strict=True
            ):
                tensor.copy_(copy)
