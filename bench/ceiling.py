"""How much continuous batching can pay on this machine: the ceiling under the staggered-arrival targets.

    python -m bench.ceiling                 # musicgen-small architecture, random weights, fp32
    python -m bench.ceiling --threads 1 --clock cpu   # on a shared machine: CPU seconds, one thread

``bench.staggered`` measures what the job service achieves; this script measures what no scheduler can beat
with the engine's kernels on this machine, and why. In one process run it prints:

1. the machine's roofline: memory bandwidth (summing a 1.2 GB tensor) and fp32 matmul peak (2048^3);
2. the decoder's linear layers alone, as the engine runs them (the modules of the loaded model: the small-row
   kernel on x86 with AVX-512, else oneDNN-packed), at 2 rows per request for 1 / 4 / 8 requests: time, the
   bytes they read against the bandwidth floor, the FLOP/s they reach, and oneDNN on the same weights beside;
3. a whole decode step (``MusicgenBackend.step``) with 1 / 4 / 8 requests in the batch, and the fixed costs
   of one request: admission (text encoder, cross-attention keys and values) and EnCodec decoding;
4. the ceiling for N requests of ``--duration`` s that all arrive at once (no stagger, no storage, no
   post-processing): N x (admission + steps x step(1) + EnCodec) over N x admission + steps x step(N) +
   EnCodec (the audio of all but the last decodes on its own thread while the batch steps), and the latency
   of the last one against a solo request. Staggered arrivals only lower these.
   Then the same bound if the linears of every step ran at the bandwidth floor (a kernel that only streams
   the weights, whatever the rows): how much of the gap is the matmul kernel.

Issue 11's targets on this CPU (fp32): 4 requests >= 3x, 8 >= 5x, every latency <= 1.6x solo. If the ceiling
here is below a target, the target cannot be met with these kernels by scheduling alone.

On a machine shared with other jobs, wall times swing with their load; ``--clock cpu`` times everything in
this process's CPU seconds instead (meaningful with ``--threads 1``: OpenMP's spinning threads would
otherwise count), which counts the work done rather than the waiting.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.benchmark import requests_of, small_checkpoint
from engine.musicgen import loading as musicgen_loading
from engine.musicgen import packed_linear
from engine.musicgen.backend import MusicgenBackend
from engine.musicgen.decode import decode_audio

COUNTS = (1, 4, 8)
TARGETS = {4: 3.0, 8: 5.0}
LATENCY_TARGET = 1.6


CLOCK: Callable[[], float] = time.perf_counter  # --clock cpu: time.process_time


def best_of(repeats: int, action: Callable[[], object]) -> float:
    """The fastest of ``repeats`` timed runs of ``action`` (after one untimed warm-up), in seconds."""
    action()
    best = float("inf")
    for _ in range(repeats):
        start = CLOCK()
        action()
        best = min(best, CLOCK() - start)
    return best


def roofline() -> dict[str, float]:
    big = torch.randn(300_000_000)  # 1.2 GB: far past any cache
    bandwidth = big.numel() * big.element_size() / best_of(5, big.sum)
    del big
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    peak = 2 * 2048**3 / best_of(5, lambda: a @ b)
    return {"bandwidth_gb_s": bandwidth / 1e9, "fp32_matmul_gflop_s": peak / 1e9}


def decoder_linears(model: Any) -> list[tuple[nn.Module, int, int, bool]]:
    """(module, in, out, conditional-rows-only) for every linear a decode step runs: cross-attention's
    query and output projections see only the conditional row of each request; its keys and values are
    computed once at admission."""
    found = []
    for name, module in model.decoder.named_modules():
        precomputed = name.endswith(("encoder_attn.k_proj", "encoder_attn.v_proj"))
        if precomputed or not hasattr(module, "in_features"):
            continue
        if not list(module.children()):
            found.append((module, int(module.in_features), int(module.out_features), "encoder_attn" in name))
    return found


def onednn_twins(linears: list[tuple[nn.Module, int, int, bool]]) -> list[tuple[nn.Module, int, int, bool]]:
    """The same weights as oneDNN-packed modules (the engine's fallback), to time beside the small-row
    kernel's; empty when the engine's linears are not the kernel's."""
    twins = []
    for module, width, out, half in linears:
        if not isinstance(module, packed_linear.RowsLinear):
            return []
        plain = nn.Linear(width, out, bias=module.bias is not None)
        with torch.no_grad():
            plain.weight.copy_(module.packed.transpose(1, 2).reshape(-1, width)[:out])
            if module.bias is not None:
                plain.bias.copy_(module.bias[:out])
        twins.append((packed_linear.OneDNNLinear(plain), width, out, half))
    return twins


def linears_at(linears: list[tuple[nn.Module, int, int, bool]], requests: int) -> dict[str, float]:
    rows = 2 * requests
    inputs = {(width, half): torch.randn(rows // 2 if half else rows, width) for _, width, _, half in linears}

    def run() -> None:
        for module, width, _, half in linears:
            module(inputs[(width, half)])

    seconds = best_of(3, run)
    weight_bytes = sum(4 * width * out for _, width, out, _ in linears)
    flops = sum(2 * (rows // 2 if half else rows) * width * out for _, width, out, half in linears)
    return {"ms": seconds * 1e3, "weight_mb": weight_bytes / 1e6, "gflop_s": flops / seconds / 1e9}


def step_ms(loaded: Any, count: int, duration: float) -> float:
    """Median wall ms of a decode step with ``count`` requests decoding (timed after 5 warm-up steps)."""
    backend = MusicgenBackend(loaded, max_batch=max(COUNTS))
    for index, request in enumerate(requests_of(count, duration)):
        backend.admit(str(index), request)
    times = []
    for number in range(20):
        start = CLOCK()
        backend.step()
        if number >= 5:
            times.append(CLOCK() - start)
    return statistics.median(times) * 1e3


def admission_ms(loaded: Any, duration: float) -> float:
    """Median wall ms to admit a request into a batch that already has room for it: the fourth request of a
    batch whose buffers were sized for four by the third (buffer growth is not counted: a ceiling)."""
    times = []
    for _ in range(5):
        backend = MusicgenBackend(loaded, max_batch=max(COUNTS))
        batch = requests_of(4, duration)
        for index, request in enumerate(batch[:3]):
            backend.admit(str(index), request)
        start = CLOCK()
        backend.admit("timed", batch[3])
        times.append(CLOCK() - start)
    return statistics.median(times) * 1e3


def ceiling(
    steps: int, step: dict[int, float], admit_ms: float, encodec_ms: float, count: int
) -> tuple[float, float]:
    # EnCodec decodes on its own thread while the batch steps on (engine.musicgen.audio_out): of N requests
    # arriving together only the last one's decode is not hidden behind decode steps.
    solo = admit_ms + steps * step[1] + encodec_ms
    together = count * admit_ms + steps * step[count] + encodec_ms
    return count * solo / together, together / solo


def verdict(met: bool) -> str:
    return "reachable" if met else "NOT reachable"


def run(args: argparse.Namespace) -> dict[str, Any]:
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    checkpoint = args.checkpoint or small_checkpoint()
    result: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "threads": args.threads,
        "clock": args.clock,
        "duration_s": args.duration,
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
    }
    result["roofline"] = roofline()
    print(
        f"threads {args.threads}, {args.clock} clock, load average {result['load_average_at_start']}: memory "
        f"{result['roofline']['bandwidth_gb_s']:.1f} GB/s, fp32 matmul peak "
        f"{result['roofline']['fp32_matmul_gflop_s']:.0f} GFLOP/s",
        flush=True,
    )
    loaded = musicgen_loading.load(str(checkpoint), torch.device("cpu"), torch.float32, local_files_only=True)
    with torch.inference_mode():
        linears = decoder_linears(loaded.model)
        twins = onednn_twins(linears)
        result["linears"] = {count: linears_at(linears, count) for count in COUNTS}
        result["linears_onednn"] = {count: linears_at(twins, count) for count in COUNTS} if twins else {}
        for count, figures in result["linears"].items():
            floor = figures["weight_mb"] / 1e3 / result["roofline"]["bandwidth_gb_s"] * 1e3
            other = result["linears_onednn"].get(count)
            print(
                f"decoder linears, {count} request(s) ({2 * count} rows): {figures['ms']:6.1f} ms "
                f"(reading {figures['weight_mb']:.0f} MB: bandwidth floor {floor:.1f} ms), "
                f"{figures['gflop_s']:5.0f} GFLOP/s"
                + (f"; oneDNN on the same weights {other['ms']:.1f} ms" if other else ""),
                flush=True,
            )
        del twins
        result["step_ms"] = {count: step_ms(loaded, count, args.duration) for count in COUNTS}
        result["admission_ms"] = admission_ms(loaded, args.duration)
        steps = MusicgenBackend(loaded, max_batch=1).steps_for(args.duration)
        frames = steps - int(loaded.model.decoder.num_codebooks) + 1
        codes = [torch.randint(0, 2048, (int(loaded.model.decoder.num_codebooks), frames))]
        result["encodec_ms"] = best_of(3, lambda: decode_audio(loaded.model, codes)) * 1e3
    result["steps"] = steps
    print(
        "decode step: "
        + ", ".join(f"{count} request(s) {ms:.1f} ms" for count, ms in result["step_ms"].items())
        + f"; per request: admission {result['admission_ms']:.0f} ms, EnCodec {result['encodec_ms']:.0f} ms, "
        f"{steps} steps for {args.duration:g} s"
    )
    # The same with every step's linears at the bandwidth floor: what a kernel that only streams the weights
    # (however many rows it multiplies) would allow, the rest of the step and the per-request costs unchanged.
    # (One request's linears are memory-bound: when they beat the summing benchmark's floor, they are it.)
    floor_ms = min(
        result["linears"][1]["weight_mb"] / result["roofline"]["bandwidth_gb_s"], result["linears"][1]["ms"]
    )
    at_floor = {
        count: ms - result["linears"][count]["ms"] + floor_ms for count, ms in result["step_ms"].items()
    }
    result["ceiling"], result["ceiling_with_linears_at_the_floor"] = {}, {}
    for count in COUNTS[1:]:
        for key, steps_ms, label in (
            ("ceiling", result["step_ms"], "ceiling"),
            ("ceiling_with_linears_at_the_floor", at_floor, "with the linears at the bandwidth floor"),
        ):
            per_request = result["admission_ms"], result["encodec_ms"]
            throughput, latency = ceiling(steps, steps_ms, *per_request, count)
            result[key][count] = {"throughput": throughput, "last_latency_vs_solo": latency}
            print(
                f"{label}, {count} requests arriving at once: throughput {throughput:.2f}x "
                f"(target {TARGETS[count]:g}x: {verdict(throughput >= TARGETS[count])}), "
                f"last latency {latency:.2f}x solo (target <= {LATENCY_TARGET:g}x: "
                f"{verdict(latency <= LATENCY_TARGET)})"
            )
    return result


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--checkpoint", type=Path, help="a MusicGen checkpoint directory (hub layout)")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per request (2)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    parser.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall", help="wall seconds, or this process's CPU seconds"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results to PATH as JSON")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    result = run(args)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
