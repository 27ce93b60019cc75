"""The decoder's fp32 linear layers on x86 CPUs as oneDNN matmuls over weights packed once at load.

A decode step multiplies a handful of rows (two per request: classifier-free guidance) by every decoder
weight. For that shape MKL's sgemm, which ``nn.Linear`` calls, slows down as rows are added far faster than
the bytes it reads would explain. Measured on the project's 2-core x86 VM (AVX-512, one thread, CPU time of
fc1 + fc2 of 12 musicgen-small layers, min of 6 runs): 27 / 52 / 70 / 60 ms at 2 / 4 / 8 / 16 rows, against
28 / 31 / 37 / 46 ms for oneDNN on weights reordered once into its own blocked layout. So one request costs
the same and a batch of four about 60 % less: what continuous batching needs to pay off on a CPU.

The result is the same product to fp32 rounding (not bit-for-bit the same as sgemm's), and each row's result
does not depend on the other rows in the call, so a request's codes stay independent of its batch-mates. The
swap replaces the modules in the model itself, so everything that runs the decoder (the batching step, its
prefill, transformers' own ``generate``) computes with the same kernels. The plain weights are dropped: the
packed copy takes their place, not their memory twice.
"""

from __future__ import annotations

import platform
from typing import Any

import torch
from torch import nn


def available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the swap applies: fp32 on an x86 CPU whose torch build has oneDNN."""
    return (
        device.type == "cpu"
        and dtype == torch.float32
        and platform.machine() in ("x86_64", "AMD64")
        and torch.backends.mkldnn.is_available()
    )


class PackedLinear(nn.Module):
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


def pack_decoder_linears(model: Any) -> int:
    """Swap every ``nn.Linear`` of ``model.decoder`` for a ``PackedLinear``; how many were swapped."""
    swapped = 0
    for parent in list(model.decoder.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, PackedLinear(child))
                swapped += 1
    return swapped
