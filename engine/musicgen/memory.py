"""How many bytes one MusicGen slot needs, from the model's config: the formula the admission check uses.

For a slot decoding ``steps`` positions with ``text`` text tokens, a decoder of ``L`` layers and hidden size
``d`` (= heads × head_dim) in a dtype of ``e`` bytes, ``K`` codebooks and a vocabulary of ``V``::

    slot_bytes = 2 · L · 2 · d · steps · e      self-attention keys and values, for the conditional and the
                                                unconditional (classifier-free guidance) row
               + L · 2 · d · text · e           cross-attention keys and values (conditional row only)
               + text                           the text padding mask (bool)
               + LOGIT_BUFFERS · K · V · 4      float32 logits of both rows, guided, scaled, sorted, softmax,
                                                cumulative sum and the sampling noise, alive during a step
               + K · steps · 8                  the slot's codes (int64)

The batch's buffers are rectangular (every slot sized for the longest ``steps`` and ``text``), so a batch of
``slots`` costs ``slots · slot_bytes(longest steps, longest text)``. A request is admitted when the bytes the
batch would grow by fit in ``HEADROOM`` of the memory free now (``engine.memory.free_bytes``) and a slot is
free under the batch-size cap; otherwise it waits. For musicgen-small (L=24, d=1024) at 30 s (1,503 steps)
in bf16 that is ~296 MB per slot; in fp32 ~592 MB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LOGIT_BUFFERS = 8
HEADROOM = 0.9  # of the free memory; the rest absorbs activations and allocator fragmentation


@dataclass(frozen=True)
class SlotGeometry:
    """The model dimensions the formula needs."""

    layers: int
    hidden: int
    codebooks: int
    vocab: int
    element_size: int

    @classmethod
    def of(cls, model: Any) -> SlotGeometry:
        config = model.decoder.config
        return cls(
            layers=int(config.num_hidden_layers),
            hidden=int(config.hidden_size),
            codebooks=int(model.decoder.num_codebooks),
            vocab=int(config.vocab_size),
            element_size=model.decoder.dtype.itemsize,
        )

    def slot_bytes(self, steps: int, text: int) -> int:
        self_kv = 2 * self.layers * 2 * self.hidden * steps * self.element_size
        cross_kv = self.layers * 2 * self.hidden * text * self.element_size
        logits = LOGIT_BUFFERS * self.codebooks * self.vocab * 4
        return self_kv + cross_kv + text + logits + self.codebooks * steps * 8

    def batch_bytes(self, slots: int, steps: int, text: int) -> int:
        return slots * self.slot_bytes(steps, text)
