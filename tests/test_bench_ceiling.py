"""bench.ceiling: the bound it prints follows from the costs it measured, and the script runs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import ceiling
from engine.musicgen import row_kernel


def test_the_ceiling_of_n_requests_arriving_at_once() -> None:
    # One request: 100 ms admission + 100 steps x 10 ms + 400 ms EnCodec = 1.5 s alone. Four together: four
    # admissions (0.4 s), 100 steps of the batch of four at 16 ms (1.6 s) and the last one's EnCodec (0.4 s;
    # the others' decode on the audio thread meanwhile): 2.4 s for 6 s of solo.
    throughput, latency = ceiling.ceiling(100, {1: 10.0, 4: 16.0}, 100.0, 400.0, 4)
    assert throughput == pytest.approx(6.0 / 2.4)
    assert latency == pytest.approx(2.4 / 1.5)


@pytest.mark.slow  # keeps the default suite near 10 min; .ci/run runs it
def test_the_script_measures_a_real_checkpoint(tiny_checkpoint: Path, tmp_path: Path) -> None:
    output = tmp_path / "ceiling.json"
    ceiling.main(
        ["--checkpoint", str(tiny_checkpoint), "--duration", "1", "--threads", "1", "--json", str(output)]
    )
    result = json.loads(output.read_text())
    assert result["roofline"]["bandwidth_gb_s"] > 0 and result["roofline"]["fp32_matmul_gflop_s"] > 0
    assert set(result["step_ms"]) == {"1", "4", "8"} and all(ms > 0 for ms in result["step_ms"].values())
    assert result["steps"] > 0 and result["admission_ms"] > 0 and result["encodec_ms"] > 0
    linears = result["linears"]["8"]
    assert linears["weight_mb"] > 0 and linears["ms"] > 0
    if row_kernel.supported():  # the small-row kernel's linears, with oneDNN on the same weights beside
        assert result["linears_onednn"]["8"]["weight_mb"] == linears["weight_mb"]
    assert set(result["ceiling"]) == set(result["ceiling_with_linears_at_the_floor"]) == {"4", "8"}
