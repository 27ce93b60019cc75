"""Attention keys and values for a decode batch, allocated once at their final size.

transformers' DynamicCache concatenates every layer's keys and values at every step (a copy that grows with
the sequence); here each step writes one position in place. Fixed addresses are also what a captured CUDA
graph needs: replaying it reads and writes the same memory every time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class KVShape:
    layers: int
    rows: int
    heads: int
    length: int
    head_dim: int


class StaticKVCache:
    """Self-attention keys and values of every layer: (layers, rows, heads, length, head_dim) each."""

    def __init__(self, shape: KVShape, dtype: torch.dtype, device: torch.device) -> None:
        size = (shape.layers, shape.rows, shape.heads, shape.length, shape.head_dim)
        self.keys = torch.zeros(size, dtype=dtype, device=device)
        self.values = torch.zeros(size, dtype=dtype, device=device)

    def update(
        self, layer: int, position: torch.Tensor, key: torch.Tensor, value: torch.Tensor, length: int | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store one step's ``key``/``value`` (rows, heads, 1, head_dim) at ``position`` (a 1-element tensor).

        Returns the layer's keys and values for attention: the first ``length`` positions when the caller
        knows the length on the host (eager decoding, which then needs no mask), else the whole buffer, to be
        masked by position (graph replay, where shapes cannot change).
        """
        keys, values = self.keys[layer], self.values[layer]
        keys.index_copy_(2, position, key)
        values.index_copy_(2, position, value)
        if length is None:
            return keys, values
        return keys[:, :, :length], values[:, :, :length]

    @property
    def nbytes(self) -> int:
        return 2 * self.keys.numel() * self.keys.element_size()


class CrossKV:
    """Cross-attention keys and values, computed once per request from its text, padded to the longest."""

    def __init__(self, shape: KVShape, dtype: torch.dtype, device: torch.device) -> None:
        size = (shape.layers, shape.rows, shape.heads, shape.length, shape.head_dim)
        self.keys = torch.zeros(size, dtype=dtype, device=device)
        self.values = torch.zeros(size, dtype=dtype, device=device)
        # Padding positions are masked out; each row sees only its own text.
        self.mask = torch.zeros((shape.rows, 1, 1, shape.length), dtype=torch.bool, device=device)

    def fill(self, layer: int, row: int, key: torch.Tensor, value: torch.Tensor) -> None:
        """Store one request's keys/values (1, heads, tokens, head_dim) for ``layer``."""
        tokens = key.shape[2]
        self.keys[layer, row, :, :tokens] = key[0]
        self.values[layer, row, :, :tokens] = value[0]
        self.mask[row, ..., :tokens] = True
