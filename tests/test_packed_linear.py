"""The fp32 CPU decoder's oneDNN-packed linear layers (engine.musicgen.packed_linear): the same product as
``nn.Linear`` to fp32 rounding, each row independent of the others in the call, swapped in by the loader
for the decoder only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from engine.musicgen import loading, packed_linear
from engine.musicgen.packed_linear import PackedLinear

CPU = torch.device("cpu")

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.skipif(
        not packed_linear.available(CPU, torch.float32), reason="needs an x86 CPU and torch with oneDNN"
    ),
]


def test_packed_linear_computes_what_linear_does_and_rows_stay_independent() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(256, 384)
    expected_weight, expected_bias = linear.weight.detach().clone(), linear.bias.detach().clone()
    packed = PackedLinear(linear)
    rows = torch.randn(16, 1, 256)
    with torch.inference_mode():
        together = packed(rows)
        expected = torch.nn.functional.linear(rows, expected_weight, expected_bias)
        torch.testing.assert_close(together, expected, rtol=1e-5, atol=1e-5)
        # A row's result does not depend on how many rows share the call (batch-mate independence).
        for count in (1, 2, 3, 5, 8):
            assert torch.equal(packed(rows[:count]), together[:count]), count
    assert packed.in_features == 256 and packed.out_features == 384


def test_the_loader_packs_the_fp32_decoder_only(tiny_checkpoint: Path) -> None:
    model = loading.load(str(tiny_checkpoint), CPU, torch.float32).model
    decoder = [m for m in model.decoder.modules() if isinstance(m, nn.Linear | PackedLinear)]
    assert decoder and all(isinstance(m, PackedLinear) for m in decoder)
    assert not any(isinstance(m, PackedLinear) for m in model.text_encoder.modules())
    assert not any(isinstance(m, PackedLinear) for m in model.audio_encoder.modules())
    bf16 = loading.load(str(tiny_checkpoint), CPU, torch.bfloat16).model
    assert not any(isinstance(m, PackedLinear) for m in bf16.modules())
