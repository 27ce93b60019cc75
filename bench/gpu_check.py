"""The GPU check (``just gpu-check``): CUDA graphs against eager decoding, and speed on the real architecture.

    python -m bench.gpu_check                      # musicgen-small architecture, random weights, bf16
    python -m bench.gpu_check --checkpoint DIR     # any MusicGen checkpoint in the hub layout

Prints one table, in under 5 minutes on a CUDA machine:

- **graph vs eager**: the same greedy requests (different durations, admitted at different steps) decoded
  with the step captured as CUDA graphs and without; the codes must be equal;
- **bf16 ms/step** at batch 1, 4 and 8 (median of the device-timed steps, CUDA events), and the graphs
  captured for them (one per batch-size and length bucket, reused);
- **peak GPU memory** (allocated) over the run;
- **16 s of audio**: wall time from admission to post-processed audio for one 16 s request.

On a machine without CUDA it refuses with exit status 2 and says why.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from bench.benchmark import resolve_checkpoint
from engine.backend import Decision, run_to_completion
from engine.musicgen import loading
from engine.musicgen.backend import MusicgenBackend
from engine.musicgen.checkpoints import SAMPLE_PROMPTS
from engine.request import GenerationRequest


def requests(count: int, duration: float, **params: float) -> list[tuple[str, GenerationRequest]]:
    return [
        (
            f"r{i}",
            GenerationRequest(
                prompt=SAMPLE_PROMPTS[i % len(SAMPLE_PROMPTS)], duration=duration, seed=i, **params
            ),
        )
        for i in range(count)
    ]


def graph_matches_eager(loaded: loading.LoadedModel) -> tuple[bool, int]:
    """Greedy codes with and without CUDA graphs, requests joining at steps 0, 3 and 7."""
    greedy = [
        GenerationRequest(prompt=p, duration=d, top_k=1)
        for p, d in zip(SAMPLE_PROMPTS[:3], (1.0, 2.5, 1.5), strict=True)
    ]
    codes: dict[bool, dict[str, torch.Tensor]] = {}
    captures = 0
    for graphs in (True, False):
        recorded: dict[str, torch.Tensor] = {}
        backend = MusicgenBackend(loaded, max_batch=4, cuda_graphs=graphs, record_codes=recorded)
        joins = {0: 0, 3: 1, 7: 2}
        step = 0
        while step <= max(joins) or backend.has_work:
            if step in joins:
                index = joins[step]
                assert backend.can_admit(greedy[index]).decision is Decision.NOW
                backend.admit(str(index), greedy[index])
            backend.step()
            step += 1
        codes[graphs] = recorded
        captures = max(captures, backend.graph_captures)
    equal = all(torch.equal(codes[True][key], codes[False][key]) for key in codes[False])
    return equal and codes[True].keys() == codes[False].keys(), captures


def ms_per_step(loaded: loading.LoadedModel, batch: int, steps: int) -> tuple[float, int]:
    """Median device time of a decode step with ``batch`` requests, and the graphs the backend captured."""
    backend = MusicgenBackend(loaded, max_batch=8)
    for request_id, request in requests(batch, 30.0):
        backend.admit(request_id, request)
    for _ in range(5):  # capture and warm up
        backend.step()
    torch.cuda.synchronize()
    timings = []
    for _ in range(steps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        backend.step()
        end.record()
        end.synchronize()
        timings.append(start.elapsed_time(end))
    for request_id, _ in requests(batch, 30.0):
        backend.cancel(request_id)
    backend.step()
    return statistics.median(timings), backend.graph_captures


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--checkpoint", type=Path, help="a MusicGen checkpoint directory (hub layout)")
    parser.add_argument(
        "--build-small", type=Path, metavar="DIR", help="build (or reuse) the random small model"
    )
    parser.add_argument("--steps", type=int, default=50, help="decode steps timed per batch size (50)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(
            f"gpu-check needs a CUDA GPU, and this torch ({torch.__version__}) sees none: run it on the DGX "
            "Spark or another CUDA machine with a CUDA build of torch (see deploy/torch.sh)",
            file=sys.stderr,
        )
        sys.exit(2)
    args.tiny = False
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dgx-music-gpu-check-") as scratch:
        checkpoint = resolve_checkpoint(args, Path(scratch))
        device = torch.device("cuda")
        loaded = loading.load(str(checkpoint), device, torch.bfloat16)
        torch.cuda.reset_peak_memory_stats(device)
        rows: list[tuple[str, str]] = [
            ("GPU", torch.cuda.get_device_name(device)),
            ("torch", torch.__version__),
        ]
        equal, captures = graph_matches_eager(loaded)
        rows.append(
            ("graph vs eager (greedy codes)", f"{'equal' if equal else 'DIFFERENT'} ({captures} graphs)")
        )
        for batch in (1, 4, 8):
            median, graphs = ms_per_step(loaded, batch, args.steps)
            rows.append((f"bf16 ms/step, batch {batch}", f"{median:.2f} ms ({graphs} graphs captured)"))
        backend = MusicgenBackend(loaded, max_batch=8)
        started = time.monotonic()
        [outcome] = run_to_completion(backend, requests(1, 16.0)).values()
        rows.append(("16 s of audio, 1 request", f"{time.monotonic() - started:.2f} s ({outcome.status})"))
        rows.append(
            ("peak GPU memory (allocated)", f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
        )
    rows.append(("gpu-check wall time", f"{time.monotonic() - began:.0f} s"))
    width = max(len(name) for name, _ in rows)
    print(f"| {'check'.ljust(width)} | result |\n|{'-' * (width + 2)}|--------|")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")
    if not equal:
        sys.exit(1)


if __name__ == "__main__":
    main()
