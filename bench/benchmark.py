"""Side by side, in one process: transformers' ``generate`` (the baseline) against the batching decode loop.

    python -m bench.benchmark                      # musicgen-small architecture, random weights
    python -m bench.benchmark --checkpoint DIR     # any MusicGen checkpoint in the hub layout
    python -m bench.benchmark --tiny               # CI smoke: a tiny checkpoint, seconds
    python -m bench.benchmark --json out.json      # also write the results as JSON

Scenarios: (1) the baseline, ``generate`` once per request, one request after another, with the model as
transformers loads it by default (fp32); (2) the engine on one request; (3) the engine on N concurrent
requests (4 and 8 by default), all of ``--duration`` seconds. Each reports ms per decode step (the median
interval between steps), seconds of wall time per second of audio (text encoding and EnCodec included),
throughput relative to the baseline, and the peak resident memory of the process during the scenario (on
CUDA also the peak allocated GPU memory).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
import transformers

from engine import loading
from engine.backend import run_to_completion
from engine.musicgen import loading as musicgen_loading
from engine.musicgen import reference
from engine.musicgen.backend import MusicgenBackend
from engine.musicgen.checkpoints import SAMPLE_PROMPTS as PROMPTS
from engine.musicgen.checkpoints import build_random_checkpoint
from engine.request import GenerationRequest

SHARED_SMALL = Path("/tmp/musicgen-small-random")  # reused when a complete copy is already there
OWN_SMALL = Path(tempfile.gettempdir()) / "dgx-music-bench" / "musicgen-small-random"
CHECKPOINT_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json")

GenerateBatch = Callable[..., list[np.ndarray | None]]


@dataclass(frozen=True)
class Result:
    scenario: str
    requests: int
    dtype: str
    audio_seconds: float
    wall_seconds: float
    decode_steps: int
    ms_per_step: float
    seconds_per_audio_second: float
    throughput_vs_baseline: float
    step_throughput_vs_baseline: float
    peak_rss_mb: float
    cuda_max_allocated_mb: float | None


def is_complete(directory: Path) -> bool:
    """Every file a hub checkpoint needs is there, and model.safetensors is as long as its header says."""
    if not all((directory / name).is_file() for name in CHECKPOINT_FILES):
        return False
    weights = directory / "model.safetensors"
    try:
        with weights.open("rb") as file:
            header_length = int.from_bytes(file.read(8), "little")
            header = json.loads(file.read(header_length))
        end = max(entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__")
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return bool(weights.stat().st_size == 8 + header_length + end)


def resolve_checkpoint(args: argparse.Namespace, scratch: Path) -> Path:
    if args.checkpoint is not None:
        if not is_complete(args.checkpoint):
            sys.exit(
                f"--checkpoint {args.checkpoint} is not a complete MusicGen checkpoint (needs "
                f"{', '.join(CHECKPOINT_FILES)}); pass another directory or use --build-small DIR"
            )
        return Path(args.checkpoint)
    if args.tiny:
        return build_random_checkpoint(scratch / "musicgen-tiny")
    if args.build_small is None:
        return small_checkpoint()
    directory = Path(args.build_small)
    if not is_complete(directory):
        print(f"building a random musicgen-small checkpoint in {directory} ...", flush=True)
        build_random_checkpoint(directory, size="small")
    return directory


def small_checkpoint() -> Path:
    """The random musicgen-small checkpoint: the shared copy or the bench's own when complete, else the
    bench's own, built (about a minute, 2.3 GB) so that later runs reuse it."""
    for directory in (SHARED_SMALL, OWN_SMALL):
        if is_complete(directory):
            return directory
    print(f"building a random musicgen-small checkpoint in {OWN_SMALL} ...", flush=True)
    return build_random_checkpoint(OWN_SMALL, size="small")


@contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, float | None]]:
    """Peak RSS of this process (sampled every 5 ms) and, on CUDA, peak allocated GPU memory, in MB."""
    process = psutil.Process()
    peak = {"rss": float(process.memory_info().rss)}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak["rss"] = max(peak["rss"], float(process.memory_info().rss))

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    report: dict[str, float | None] = {}
    try:
        yield report
    finally:
        done.set()
        sampler.join()
        report["rss_mb"] = max(peak["rss"], float(process.memory_info().rss)) / 2**20
        report["cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def measure(
    scenario: str,
    generate_batch: GenerateBatch,
    loaded: tuple[Any, Any],
    requests: Sequence[GenerationRequest],
    device: torch.device,
    baseline: Result | None,
    dtype: torch.dtype,
) -> Result:
    model, processor = loaded
    stamps: list[float] = []

    def on_step(step: int, totals: list[int]) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # time the GPU's steps, not how fast the host queues them
        stamps.append(time.perf_counter())

    seeds = list(range(len(requests)))
    with peak_memory(device) as memory:
        started = time.perf_counter()
        audio = generate_batch(model, processor, requests, seeds, device, on_step, None)
        wall = time.perf_counter() - started
    if any(samples is None for samples in audio):
        raise RuntimeError(f"{scenario}: a request returned no audio")
    audio_seconds = sum(request.duration for request in requests)
    ms_per_step = 1000 * statistics.median(np.diff(stamps))
    # Relative throughput two ways: by wall time (what a user waits), and by the median decode step, which
    # is what the decode loop changes and which load spikes from other processes on a shared machine barely
    # move. Both compare audio seconds produced per second.
    wall_ratio = step_ratio = 1.0
    if baseline is not None:
        wall_ratio = baseline.seconds_per_audio_second / (wall / audio_seconds)
        step_ratio = len(requests) * baseline.ms_per_step / ms_per_step
    return Result(
        scenario=scenario,
        requests=len(requests),
        dtype=loading.dtype_name(dtype),
        audio_seconds=audio_seconds,
        wall_seconds=round(wall, 3),
        decode_steps=len(stamps),
        ms_per_step=round(ms_per_step, 2),
        seconds_per_audio_second=round(wall / audio_seconds, 3),
        throughput_vs_baseline=round(wall_ratio, 2),
        step_throughput_vs_baseline=round(step_ratio, 2),
        peak_rss_mb=round(float(memory["rss_mb"] or 0), 1),
        cuda_max_allocated_mb=None if memory["cuda_mb"] is None else round(memory["cuda_mb"], 1),
    )


def batching_backend(loaded: musicgen_loading.LoadedModel) -> GenerateBatch:
    """The engine's batching backend in ``generate_batch``'s shape: all requests admitted at once (audio is
    post-processed, which the baseline's is not: the engine is timed doing slightly more)."""

    def generate(
        model: Any,
        processor: Any,
        requests: Sequence[GenerationRequest],
        seeds: Sequence[int],
        device: torch.device,
        on_step: Callable[[int, list[int]], None],
        is_cancelled: None,
    ) -> list[np.ndarray | None]:
        backend = MusicgenBackend(loaded, max_batch=len(requests))
        seeded = [
            (str(index), request.model_copy(update={"seed": seed}))
            for index, (request, seed) in enumerate(zip(requests, seeds, strict=True))
        ]
        outcomes = run_to_completion(backend, seeded, lambda report: on_step(0, []))
        results = [outcomes[str(index)].result for index in range(len(requests))]
        return [None if result is None else result.audio for result in results]

    return generate


def warm_up(model: Any, processor: Any, device: torch.device) -> None:
    """A few steps of ``generate`` before timing: faults memory-mapped weights in and initialises kernels, so
    neither side pays one-time costs inside its measurement."""
    inputs = processor(text=[PROMPTS[0]], padding=True, return_tensors="pt").to(device)
    model.generate(**inputs, max_new_tokens=4, do_sample=False)


def requests_of(count: int, duration: float) -> list[GenerationRequest]:
    return [GenerationRequest(prompt=PROMPTS[i % len(PROMPTS)], duration=duration) for i in range(count)]


def run(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    checkpoint = resolve_checkpoint(args, scratch)
    device = loading.select_device(args.device)
    # Each --dtype is measured in turn against the same baseline; none given = the engine's own choice.
    engine_dtypes = [loading.select_dtype(device, name) for name in args.dtype or [None]]
    meta = {
        "checkpoint": str(checkpoint),
        "device": str(device),
        "baseline_dtype": "float32",
        "engine_dtypes": [loading.dtype_name(dtype) for dtype in engine_dtypes],
        "duration_s": args.duration,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
    }
    if device.type == "cuda":
        meta["gpu"] = torch.cuda.get_device_name(device)
    print(" ".join(f"{key}={value}" for key, value in meta.items()), flush=True)

    # (1) The baseline: the model exactly as transformers loads it, one generate call per request.
    model: Any = transformers.MusicgenForConditionalGeneration.from_pretrained(checkpoint)
    model.to(device).eval()
    processor = transformers.AutoProcessor.from_pretrained(checkpoint)
    warm_up(model, processor, device)
    baseline = measure(
        "baseline generate",
        reference.generate_batch,
        (model, processor),
        requests_of(args.baseline_requests, args.duration),
        device,
        None,
        torch.float32,
    )
    results = [baseline]
    print_row(baseline, header=True)
    del model, processor
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()

    # (2) and (3): the engine's own loader, the batching decode loop, in each dtype asked for.
    for engine_dtype in engine_dtypes:
        loaded = musicgen_loading.load(str(checkpoint), device, engine_dtype)
        warm_up(loaded.model, loaded.processor, device)
        for count in [1, *args.batches]:
            name = "engine 1 request" if count == 1 else f"engine {count} concurrent"
            result = measure(
                name,
                batching_backend(loaded),
                (loaded.model, loaded.processor),
                requests_of(count, args.duration),
                device,
                baseline,
                engine_dtype,
            )
            results.append(result)
            print_row(result)
        del loaded
        gc.collect()
    meta["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]
    return {"meta": meta, "results": [asdict(result) for result in results]}


COLUMNS = (
    ("scenario", 22, "{}"),
    ("requests", 8, "{}"),
    ("dtype", 8, "{}"),
    ("wall_seconds", 8, "{:.2f}"),
    ("decode_steps", 6, "{}"),
    ("ms_per_step", 9, "{:.1f}"),
    ("seconds_per_audio_second", 9, "{:.2f}"),
    ("throughput_vs_baseline", 12, "{:.2f}x"),
    ("step_throughput_vs_baseline", 12, "{:.2f}x"),
    ("peak_rss_mb", 9, "{:.0f}"),
    ("cuda_max_allocated_mb", 9, "{}"),
)
HEADERS = (
    "scenario",
    "requests",
    "dtype",
    "wall s",
    "steps",
    "ms/step",
    "s/audio s",
    "vs base/wall",
    "vs base/step",
    "RSS MB",
    "CUDA MB",
)


def print_row(result: Result, header: bool = False) -> None:
    if header:
        print("  ".join(title.ljust(width) for title, (_, width, _) in zip(HEADERS, COLUMNS, strict=True)))
    values = asdict(result)
    cells = []
    for key, width, template in COLUMNS:
        value = values[key]
        cells.append(("-" if value is None else template.format(value)).ljust(width))
    print("  ".join(cells), flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", type=Path, help="a MusicGen checkpoint directory (hub layout)")
    source.add_argument(
        "--build-small",
        type=Path,
        metavar="DIR",
        help=f"build (or reuse) a random musicgen-small checkpoint in DIR; default: reuse {SHARED_SMALL} "
        f"when complete, else build in {OWN_SMALL}",
    )
    parser.add_argument(
        "--tiny", action="store_true", help="CI smoke: tiny checkpoint, 1 s requests, batch of 2"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results to PATH as JSON")
    parser.add_argument("--duration", type=float, help="seconds of audio per request (default 2; --tiny: 1)")
    parser.add_argument(
        "--batches",
        type=lambda text: [int(n) for n in text.split(",")],
        help="concurrent request counts, comma-separated (default 4,8; --tiny: 2)",
    )
    parser.add_argument(
        "--baseline-requests", type=int, help="requests the baseline runs in turn (default 2)"
    )
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: the engine's choice)")
    parser.add_argument(
        "--dtype",
        action="append",
        choices=sorted(loading.DTYPES),
        help="the engine's dtype; repeat to measure several side by side (default: the engine's choice)",
    )
    args = parser.parse_args(argv)
    args.duration = args.duration or (1.0 if args.tiny else 2.0)
    args.batches = args.batches or ([2] if args.tiny else [4, 8])
    args.baseline_requests = args.baseline_requests or (1 if args.tiny else 2)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dgx-music-bench-") as scratch:
        report = run(args, Path(scratch))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
