"""Attention keys and values for a running batch of slots, each slot at its own position.

transformers' DynamicCache concatenates every layer's keys and values at every step (a copy that grows with
the sequence); here each step writes one position per row in place. Fixed addresses are also what a captured
CUDA graph needs: replaying it reads and writes the same memory every time.

Slot ``i`` owns self-attention rows ``2i`` (conditional) and ``2i + 1`` (unconditional, for classifier-free
guidance), so the first ``b`` slots are the contiguous rows ``[0, 2b)``: a batch-size bucket reads only its
prefix. Cross-attention keys and values exist for the conditional row only (the unconditional text states
are zeros, so cross-attention adds nothing there).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True)
class CacheShape:
    layers: int
    slots: int
    heads: int
    head_dim: int
    length: int  # decode positions per row
    text_length: int  # text tokens per slot


class SlotCache:
    """Self-attention K/V (layers, 2·slots, heads, length, head_dim) and cross-attention K/V
    (layers, slots, heads, text_length, head_dim) with its padding mask (slots, 1, 1, text_length)."""

    def __init__(self, shape: CacheShape, dtype: torch.dtype, device: torch.device) -> None:
        self.shape = shape
        self.dtype = dtype
        rows = (shape.layers, 2 * shape.slots, shape.heads, shape.length, shape.head_dim)
        text = (shape.layers, shape.slots, shape.heads, shape.text_length, shape.head_dim)
        # On a CPU attention reads exactly the positions a slot has written (``DecodeStep.exact``), so the
        # cache is not zeroed: a page costs nothing until a step writes it. Zeroing the 0.8 GB of a batch of
        # eight 2 s requests stalled every running row for ~0.3 s each time the batch grew. The masked
        # attention of CUDA reads whole buckets: there every position must hold a finite number.
        allocate = torch.empty if device.type == "cpu" else torch.zeros
        self.keys = allocate(rows, dtype=dtype, device=device)
        self.values = allocate(rows, dtype=dtype, device=device)
        self.cross_keys = allocate(text, dtype=dtype, device=device)
        self.cross_values = allocate(text, dtype=dtype, device=device)
        self.cross_mask = torch.zeros((shape.slots, 1, 1, shape.text_length), dtype=torch.bool, device=device)
        self.text_tokens = [0] * shape.slots  # each slot's own text length, on the host
        self._row_index = torch.arange(2 * shape.slots, device=device)

    def grown(self, slots: int, length: int, text_length: int, written: int) -> SlotCache:
        """A larger cache holding this one's contents in its prefix (an admission needed more room); only
        positions below ``written`` hold anything yet, so only they are copied."""
        shape = replace(
            self.shape,
            slots=max(slots, self.shape.slots),
            length=max(length, self.shape.length),
            text_length=max(text_length, self.shape.text_length),
        )
        if shape == self.shape:
            return self
        bigger = SlotCache(shape, self.dtype, self.keys.device)
        old = self.shape
        for mine, theirs in ((self.keys, bigger.keys), (self.values, bigger.values)):
            theirs[:, : 2 * old.slots, :, :written].copy_(mine[..., :written, :])
        for mine, theirs in ((self.cross_keys, bigger.cross_keys), (self.cross_values, bigger.cross_values)):
            theirs[:, : old.slots, :, : old.text_length].copy_(mine)
        bigger.cross_mask[: old.slots, ..., : old.text_length] = self.cross_mask
        bigger.text_tokens[: old.slots] = self.text_tokens
        return bigger

    def write(
        self, layer: int, positions: torch.Tensor, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store one step's ``key``/``value`` (rows, heads, 1, head_dim) of the first ``rows`` rows, row r at
        ``positions[r]``; return the layer's keys and values of those rows (all positions)."""
        rows = key.shape[0]
        index = self._row_index[:rows]
        keys, values = self.keys[layer, :rows], self.values[layer, :rows]
        keys[index, :, positions] = key[:, :, 0]  # an index_put: no host round-trip, graph-capturable
        values[index, :, positions] = value[:, :, 0]
        return keys, values

    def fill_text(self, slot: int, layer: int, key: torch.Tensor, value: torch.Tensor) -> None:
        """Store one request's cross-attention keys/values (1, heads, tokens, head_dim) for ``layer``."""
        tokens = key.shape[2]
        self.cross_keys[layer, slot, :, :tokens] = key[0]
        self.cross_values[layer, slot, :, :tokens] = value[0]
        self.cross_keys[layer, slot, :, tokens:] = 0
        self.cross_values[layer, slot, :, tokens:] = 0
        self.cross_mask[slot] = False
        self.cross_mask[slot, ..., :tokens] = True
        self.text_tokens[slot] = tokens
