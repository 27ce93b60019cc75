"""The fp32 CPU decoder's packed linear layers (engine.musicgen.packed_linear): our small-row kernel, built
from source by the system's compiler, and oneDNN's, each the same product as ``nn.Linear`` to fp32 rounding
with every row independent of the others in the call, swapped in by the loader for the decoder only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from engine.musicgen import loading, packed_linear, row_kernel
from engine.musicgen.packed_linear import OneDNNLinear, PackedLinear, RowsLinear

CPU = torch.device("cpu")

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.skipif(
        not packed_linear.available(CPU, torch.float32), reason="needs an x86 CPU and torch with oneDNN"
    ),
]
needs_avx512 = pytest.mark.skipif(not row_kernel.supported(), reason="the small-row kernel needs AVX-512")


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> row_kernel.Op:
    """The kernel as the server gets it: built into a cache directory (or, when this process already
    loaded it, the loaded op)."""
    return row_kernel.load(tmp_path_factory.mktemp("kernels"))


@pytest.mark.parametrize("kind", ["rows", "onednn"])
@pytest.mark.parametrize(("features", "bias"), [((256, 384), True), ((70, 100), True), ((1024, 2048), False)])
def test_packed_linear_computes_what_linear_does_and_rows_stay_independent(
    request: pytest.FixtureRequest, kind: str, features: tuple[int, int], bias: bool
) -> None:
    """Widths that are not whole 16-column blocks, no bias (the LM heads), 3-D inputs, and row counts on
    both sides of a 16-row panel: a row's result is bit-for-bit the same whatever shares the call."""
    if kind == "rows" and not row_kernel.supported():
        pytest.skip("the small-row kernel needs AVX-512")
    torch.manual_seed(0)
    linear = nn.Linear(*features, bias=bias)
    expected_weight = linear.weight.detach().clone()
    expected_bias = linear.bias.detach().clone() if bias else None
    packed: PackedLinear = (
        RowsLinear(linear, request.getfixturevalue("kernel")) if kind == "rows" else OneDNNLinear(linear)
    )
    rows = torch.randn(40, 1, features[0])
    with torch.inference_mode():
        together = packed(rows)
        expected = torch.nn.functional.linear(rows, expected_weight, expected_bias)
        assert together.shape == (40, 1, features[1])
        torch.testing.assert_close(together, expected, rtol=1e-5, atol=1e-5)
        for count in (1, 2, 3, 5, 8, 15, 16, 17, 33):
            assert torch.equal(packed(rows[:count]), together[:count]), count
        # The same rows in another order: each row still gets exactly its own result.
        order = torch.randperm(40)
        assert torch.equal(packed(rows[order]), together[order])
    assert packed.in_features == features[0] and packed.out_features == features[1]


@needs_avx512
def test_the_kernel_is_built_once_into_the_cache_and_refused_without_a_compiler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    library = row_kernel._built(tmp_path / "kernels")
    assert library.parent == tmp_path / "kernels" and library.suffix == ".so"
    built_at = library.stat().st_mtime_ns
    assert row_kernel._built(tmp_path / "kernels") == library and library.stat().st_mtime_ns == built_at
    assert [path.name for path in (tmp_path / "kernels").iterdir()] == [library.name]  # no scratch left

    monkeypatch.setattr(row_kernel.shutil, "which", lambda name: None)
    with pytest.raises(row_kernel.Unavailable, match=r"no C\+\+ compiler.*apt-get install g\+\+"):
        row_kernel._built(tmp_path / "elsewhere")
    assert row_kernel._built(tmp_path / "kernels") == library  # a finished build needs no compiler


def test_the_loader_packs_the_fp32_decoder_only(tiny_checkpoint: Path, tmp_path: Path) -> None:
    model = loading.load(str(tiny_checkpoint), CPU, torch.float32, kernel_cache=tmp_path).model
    decoder = [m for m in model.decoder.modules() if isinstance(m, nn.Linear | OneDNNLinear | RowsLinear)]
    expected = RowsLinear if row_kernel.supported() else OneDNNLinear
    assert decoder and all(isinstance(m, expected) for m in decoder)
    assert not any(isinstance(m, OneDNNLinear | RowsLinear) for m in model.text_encoder.modules())
    assert not any(isinstance(m, OneDNNLinear | RowsLinear) for m in model.audio_encoder.modules())
    bf16 = loading.load(str(tiny_checkpoint), CPU, torch.bfloat16).model
    assert not any(isinstance(m, OneDNNLinear | RowsLinear) for m in bf16.modules())
