"""The decoder's fp32 linear layers on x86 CPUs, over weights packed once at load for a step's few rows.

A decode step multiplies a handful of rows (two per request: classifier-free guidance) by every decoder
weight, so continuous batching pays off on a CPU only if adding rows costs little more than the weights it
streams. Two kernels, best first:

- ``RowsLinear``: our small-row kernel (``row_kernel.cpp``, AVX-512, built once per machine). It reads each
  weight block once for all rows. Measured on the project's 2-core AVX-512 VM (fc1 + fc2 of 24
  musicgen-small layers, 806 MB of weights, more than the cache: ``bench/ceiling.py`` has the whole-step
  figures), 2 threads: 40 / 39 / 42 ms at 2 / 8 / 16 rows against oneDNN's 41 / 43 / 55 ms; one thread 57 / 69
  / 75 ms against 60 / 78 / 97.
- ``OneDNNLinear``: oneDNN's matmul on its own blocked layout, where the kernel cannot be built (no compiler,
  no AVX-512). Against MKL's sgemm, which ``nn.Linear`` calls, it costs the same for one request and about
  60 % less for four.

Both give the same product as ``nn.Linear`` to fp32 rounding (not bit-for-bit), and each row's result does
not depend on the other rows in the call, so a request's codes stay independent of its batch-mates. The swap
replaces the modules in the model itself, so everything that runs the decoder (the batching step, its
prefill, transformers' own ``generate``) computes with the same kernels. The plain weights are dropped: the
packed copy takes their place, not their memory twice.
"""

from __future__ import annotations

import logging
import platform
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.musicgen import row_kernel

log = logging.getLogger(__name__)
LANES = 16


def available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the swap applies: fp32 on an x86 CPU whose torch build has oneDNN."""
    return (
        device.type == "cpu"
        and dtype == torch.float32
        and platform.machine() in ("x86_64", "AMD64")
        and torch.backends.mkldnn.is_available()
    )


class OneDNNLinear(nn.Module):
    """``nn.Linear``'s forward on a oneDNN-packed copy of its weight (which is not kept)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        with torch.no_grad():
            self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach())
        self.bias = linear.bias

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(inputs, self.packed, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed=oneDNN"


class RowsLinear(nn.Module):
    """``nn.Linear``'s forward through the small-row kernel, its weight packed as [ceil(N/16), K, 16] (the
    columns padded with zeros to whole blocks, the bias likewise)."""

    def __init__(self, linear: nn.Linear, op: row_kernel.Op) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.op = op
        blocks = -(-self.out_features // LANES)
        with torch.no_grad():
            weight = torch.zeros(blocks * LANES, self.in_features)
            weight[: self.out_features] = linear.weight.detach()
            self.packed = weight.view(blocks, LANES, self.in_features).transpose(1, 2).contiguous()
            self.bias: torch.Tensor | None = None
            if linear.bias is not None:
                self.bias = torch.zeros(blocks * LANES)
                self.bias[: self.out_features] = linear.bias.detach()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.op(inputs, self.packed, self.bias, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed=rows"


PackedLinear = OneDNNLinear | RowsLinear


def kernel(kernel_cache: Path | None) -> row_kernel.Op | None:
    """The small-row kernel where this CPU runs it and it builds (else None: the oneDNN kernels, logged once
    with the reason). ``kernel_cache``: where builds are kept (None: this process builds its own)."""
    if not row_kernel.supported():
        return None
    try:
        return row_kernel.load(kernel_cache)
    except row_kernel.Unavailable as reason:
        log.warning("%s; the fp32 CPU decoder uses oneDNN's kernels (batching gains less)", reason)
        return None


def pack_decoder_linears(model: Any, op: row_kernel.Op | None) -> int:
    """Swap every ``nn.Linear`` of ``model.decoder`` for a ``RowsLinear`` (with ``op``) or, without it, a
    ``OneDNNLinear``; how many were swapped."""
    swapped = 0
    for parent in list(model.decoder.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, RowsLinear(child, op) if op is not None else OneDNNLinear(child))
                swapped += 1
    return swapped
