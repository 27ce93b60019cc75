"""ACE-Step backend: seconds per denoising step for 30 s of audio, 1 song against 2, and the Spark's bound.

    python -m bench.acestep                 # turbo DiT, 4 of its 24 layers, random weights, fp32 on this CPU
    python -m bench.acestep --layers 24 --dtype bfloat16 --device cuda   # the whole DiT on a GPU
    python -m bench.acestep --json out.json

The DiT has the published ACE-Step 1.5 turbo architecture (hidden 2048, intermediate 6144, 16 heads, 8 KV
heads, head_dim 128, sliding window 128) with random weights, built on disk in the diffusers layout and
loaded through ``AceStepBackend.load`` like a real checkpoint; random weights run at the speed of real ones.
By default only 4 of its 24 layers are built, to fit a 24 GB machine shared with others; per-step time is
then also scaled linearly to 24 layers, an upper bound (the work outside the blocks does not grow with
depth), and the output says which figures are scaled. Each scenario admits its songs, times three
``step()`` calls (each a DiT forward over all songs' rows and a scheduler step per song) and cancels them, so
the tiny VAE, whose decode says nothing about the real one, is never timed.

It then works out, from the model's parameter count, what one step costs on an NVIDIA DGX Spark (GB10):
reading the weights once per step from 273 GB/s LPDDR5X, against the matrix products at the bf16 tensor
rate (derived from NVIDIA's 1 PFLOPS FP4-with-sparsity figure; see bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from engine.acestep import conditioning
from engine.acestep.backend import AceStepBackend
from engine.acestep.checkpoints import SAMPLE_LYRICS, build_random_checkpoint, dit
from engine.acestep.request import SongRequest

FULL_LAYERS = 24
SECONDS = 30.0
TIMED_STEPS = 3
SPARK_BANDWIDTH = 273e9  # bytes/s, LPDDR5X (NVIDIA's DGX Spark specification)
SPARK_BF16_PEAK = 125e12  # FLOP/s dense bf16: 1 PFLOPS FP4 with 2:4 sparsity → 500 dense FP4 → 250 FP8 → 125
SPARK_BF16_MEASURED = 94e12  # half of the 188 TFLOPS FP8 GEMM a CUTLASS user measured on GB10
PROMPT = "dreamy synth pop with airy female vocals, warm pads, punchy drums"
LYRICS = "\n".join(SAMPLE_LYRICS * 4)


@dataclass(frozen=True)
class Scenario:
    songs: int
    rows: int
    condition_tokens: int
    seconds_per_step: float  # median over the timed steps
    seconds_per_step_full_depth: float  # scaled to 24 layers when fewer were built


def _time_steps(backend: AceStepBackend, songs: int, layers: int) -> Scenario:
    params = {"prompt": PROMPT, "lyrics": LYRICS, "duration": SECONDS, "steps": 8, "seed": 1}
    request = backend.validate("generate", params)
    for index in range(songs):
        backend.admit(f"song-{index}", request)
    backend.step()  # warm-up: first-call allocations
    times = []
    for _ in range(TIMED_STEPS):
        started = time.perf_counter()
        backend.step()
        times.append(time.perf_counter() - started)
    for index in range(songs):
        backend.cancel(f"song-{index}")
    backend.step()
    median = statistics.median(times)
    return Scenario(songs, songs, _condition_tokens(backend, request), median, median * FULL_LAYERS / layers)


def _condition_tokens(backend: AceStepBackend, request: SongRequest) -> int:
    """Length of the song's packed condition sequence (lyrics, timbre, text), which cross-attention reads."""
    with torch.no_grad():
        prepared = conditioning.prepare(backend.pipeline, request, torch.Generator().manual_seed(0), False)
    return int(prepared.encoder_states.shape[1])


def dit_parameters(layers: int) -> tuple[int, int]:
    """(parameters of the turbo DiT with a 2048-wide condition input, of one block), counted on the meta
    device (no memory)."""
    with torch.device("meta"):
        model = dit("turbo", layers=layers, encoder_width=2048)
    return sum(p.numel() for p in model.parameters()), sum(p.numel() for p in model.layers[0].parameters())


def spark_bound(condition_tokens: int) -> list[str]:
    """What one denoising step of 30 s costs on a GB10, on paper, for 1 and 2 songs."""
    total, per_layer = dit_parameters(FULL_LAYERS)
    tokens = round(SECONDS * 25) // 2  # 25 latent frames per second, patch size 2
    weight_bytes = 2 * total  # bf16
    memory_s = weight_bytes / SPARK_BANDWIDTH
    # Matrix products, 2 FLOPs per weight and token: the blocks over the latent tokens, except cross-attention
    # K/V projections (2 × 2048 × 1024 weights per block) and the condition embedder, which run over the
    # condition tokens; the timestep MLPs run once per row (negligible). Attention itself: self (sliding 128
    # on half the blocks, full on the others) and cross, 4 FLOPs per query-key pair and head dimension.
    kv_weights = 2 * 2048 * 1024
    per_condition_token = FULL_LAYERS * kv_weights + 2048 * 2048
    linear = 2 * tokens * FULL_LAYERS * (per_layer - kv_weights) + 2 * condition_tokens * per_condition_token
    attention = FULL_LAYERS * 4 * 16 * 128 * tokens * ((min(257, tokens) + tokens) / 2 + condition_tokens)
    flops = linear + attention
    lines = [
        f"turbo DiT: {total / 1e9:.2f} B parameters ({per_layer / 1e6:.1f} M per block × {FULL_LAYERS}), "
        f"{weight_bytes / 1e9:.2f} GB in bf16; 30 s = {tokens} tokens after patching, {condition_tokens} "
        "condition tokens",
        f"per song and step: {flops / 1e12:.2f} TFLOP; arithmetic intensity {flops / weight_bytes:.0f} "
        f"FLOP/byte against the GB10's {SPARK_BF16_PEAK / SPARK_BANDWIDTH:.0f} (bf16 peak / bandwidth)",
    ]
    for songs in (1, 2):
        compute_peak = songs * flops / SPARK_BF16_PEAK
        compute_measured = songs * flops / SPARK_BF16_MEASURED
        bound = max(memory_s, compute_peak)
        lines.append(
            f"{songs} song(s): weights {memory_s * 1e3:.1f} ms, compute {compute_peak * 1e3:.1f} ms at the "
            f"125 TFLOPS peak ({compute_measured * 1e3:.1f} ms at ~94) → at least {bound * 1e3:.1f} ms per "
            f"step, {bound / songs * 1e3:.1f} ms per song-step; 8 steps ≥ {8 * bound * 1e3:.0f} ms"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=4, help="DiT blocks to build (the real turbo has 24)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    directory = Path(tempfile.mkdtemp(prefix="acestep-bench-")) / f"turbo-{args.layers}-layers"
    started = time.perf_counter()
    build_random_checkpoint(directory, "turbo", layers=args.layers)
    built = time.perf_counter() - started
    backend = AceStepBackend.load(str(directory), device=args.device, dtype=dtype, local_files_only=True)
    print(
        f"device={args.device} dtype={args.dtype} torch={torch.__version__} cpu={platform.machine()} "
        f"threads={torch.get_num_threads()} load_average={[round(x, 2) for x in os.getloadavg()]} "
        f"built+saved in {built:.0f} s, model {backend.memory_bytes / 1e9:.2f} GB"
    )
    scenarios = [_time_steps(backend, songs, args.layers) for songs in (1, 2)]
    scaled = args.layers != FULL_LAYERS
    print(
        f"\nturbo DiT with {args.layers} of {FULL_LAYERS} layers, random weights, {SECONDS:.0f} s of audio, "
        f"median of {TIMED_STEPS} steps after one warm-up"
    )
    print(f"{'songs':>5}  {'cond tokens':>11}  {'s/step':>8}  {'s/song-step':>11}  {'s/step @24 layers':>17}")
    for scenario in scenarios:
        full = f"{scenario.seconds_per_step_full_depth:.3f}" + (" (scaled ≤)" if scaled else "")
        print(
            f"{scenario.songs:>5}  {scenario.condition_tokens:>11}  {scenario.seconds_per_step:>8.3f}  "
            f"{scenario.seconds_per_step / scenario.songs:>11.3f}  {full:>17}"
        )
    one, two = scenarios
    print(f"batch 2 vs 2 × batch 1: {2 * one.seconds_per_step / two.seconds_per_step:.2f}× throughput")
    print("\nDGX Spark (GB10) on paper, bf16, whole 24-layer DiT:")
    bound = spark_bound(one.condition_tokens)
    for line in bound:
        print("  " + line)
    if args.json:
        args.json.write_text(
            json.dumps({"scenarios": [asdict(s) for s in scenarios], "spark": bound}, indent=2)
        )


if __name__ == "__main__":
    main()
