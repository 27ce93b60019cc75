"""Cost per generated second of one long piece (windowed continuation) against independent 30 s pieces.

One process, one checkpoint, one after the other: a ``--seconds`` piece (default 120: six windows with the
default 10 s context, 30 + 4 x 20 + 10 s new) decoded by ``MusicgenBackend`` alone in its slot, then
``--seconds / 30`` independent 30 s pieces, each alone too. Both include text encoding, every window's prefill
and EnCodec decoding (chunked for the long piece). Printed per scenario: wall seconds and CPU seconds (this
process, steadier on a shared machine) per second of audio, decode steps, and the long piece's cost relative
to the short ones (the issue's target: within ±15 %).

```sh
python -m bench.long_piece                    # musicgen-small architecture, random weights (slow on a CPU)
python -m bench.long_piece --dtype int8 --threads 1   # on a busy shared CPU (what bench/README.md ran)
python -m bench.long_piece --quick            # tiny checkpoint, a 60 s piece vs two 30 s pieces: a minute
python -m bench.long_piece --checkpoint DIR --json out.json
```

The musicgen-small checkpoint is reused from ``bench.benchmark``'s places when a complete one is there,
else built (about a minute, 2.3 GB) where ``bench.benchmark`` keeps its own, so later runs reuse it.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bench.benchmark import small_checkpoint
from engine import loading
from engine.backend import run_to_completion
from engine.musicgen import loading as musicgen_loading
from engine.musicgen.backend import MusicgenBackend
from engine.musicgen.checkpoints import build_random_checkpoint
from engine.musicgen.windows import WINDOW_SECONDS
from engine.request import GenerationRequest


def _checkpoint(args: argparse.Namespace, scratch: Path) -> Path:
    if args.checkpoint is not None:
        return Path(args.checkpoint)
    if args.quick:
        return build_random_checkpoint(scratch / "musicgen-tiny")
    return small_checkpoint()


def _scenario(
    backend: MusicgenBackend, name: str, requests: list[GenerationRequest]
) -> dict[str, float | int | str]:
    """Each request alone, one after another; wall and CPU seconds per generated second."""
    wall = cpu = 0.0
    steps = 0
    audio = 0.0
    for index, request in enumerate(requests):
        started, started_cpu = time.perf_counter(), time.process_time()
        [outcome] = run_to_completion(backend, [(f"{name}-{index}", request)]).values()
        wall += time.perf_counter() - started
        cpu += time.process_time() - started_cpu
        assert outcome.result is not None, outcome.error
        steps += outcome.result.steps
        audio += outcome.result.duration_s
    return {
        "scenario": name,
        "audio_seconds": audio,
        "decode_steps": steps,
        "wall_per_audio_second": wall / audio,
        "cpu_per_audio_second": cpu / audio,
    }


def run(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    device = loading.select_device(args.device)
    loaded = musicgen_loading.load(
        str(_checkpoint(args, scratch)), device, loading.select_dtype(device, args.dtype), None
    )
    backend = MusicgenBackend(loaded, max_batch=1)
    common: dict[str, Any] = {"prompt": "an evolving orchestral piece with strings and brass", "seed": 0}
    pieces = max(1, round(args.seconds / WINDOW_SECONDS))
    run_to_completion(backend, [("warm-up", GenerationRequest(duration=1, **common))])
    long = _scenario(
        backend,
        f"one {args.seconds:g} s piece",
        [GenerationRequest(duration=args.seconds, context_seconds=args.context, **common)],
    )
    short = _scenario(
        backend,
        f"{pieces} x {WINDOW_SECONDS:g} s pieces",
        [GenerationRequest(duration=WINDOW_SECONDS, **common) for _ in range(pieces)],
    )
    return {
        "device": str(device),
        "dtype": str(loaded.dtype),
        "torch_threads": torch.get_num_threads(),
        "checkpoint": str(loaded.model.name_or_path),
        "context_seconds": args.context,
        "scenarios": [long, short],
        "wall_ratio": float(long["wall_per_audio_second"]) / float(short["wall_per_audio_second"]),
        "cpu_ratio": float(long["cpu_per_audio_second"]) / float(short["cpu_per_audio_second"]),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--checkpoint", type=Path, help="a MusicGen checkpoint directory (hub layout)")
    parser.add_argument("--quick", action="store_true", help="tiny checkpoint, 60 s vs 2 x 30 s")
    parser.add_argument("--seconds", type=float, help="length of the long piece (default 120; --quick 60)")
    parser.add_argument("--context", type=float, default=10.0, help="context_seconds (default 10)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: the engine's choice)")
    parser.add_argument("--dtype", help="float32, bfloat16, float16 (default: the engine's choice)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's; 1 on a busy CPU)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results to PATH as JSON")
    args = parser.parse_args(argv)
    if args.seconds is None:
        args.seconds = 60.0 if args.quick else 120.0
    return args


def _loads(loads: tuple[float, float, float]) -> str:
    return " ".join(f"{load:.2f}" for load in loads)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="dgx-long-piece-") as scratch:
        result = run(args, Path(scratch))
    result["load_average"] = {"start": load_before, "end": os.getloadavg()}
    print(
        f"{result['checkpoint']} on {result['device']} ({result['dtype']}, {result['torch_threads']} torch "
        f"threads), context {args.context:g} s; load average at start {_loads(load_before)}, at end "
        f"{_loads(result['load_average']['end'])} ({os.cpu_count()} CPUs)"
    )
    print(f"{'scenario':<24} {'audio s':>8} {'steps':>7} {'wall s/s':>9} {'cpu s/s':>8}")
    for row in result["scenarios"]:
        print(
            f"{row['scenario']:<24} {row['audio_seconds']:>8.2f} {row['decode_steps']:>7} "
            f"{row['wall_per_audio_second']:>9.3f} {row['cpu_per_audio_second']:>8.3f}"
        )
    print(
        f"long piece / short pieces, per generated second: wall {result['wall_ratio']:.3f}, "
        f"cpu {result['cpu_ratio']:.3f} (target 0.85-1.15)"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
