"""Stem separation speed: seconds of wall time per second of audio, for the real htdemucs architecture.

    python -m bench.separation                       # htdemucs architecture, random weights, 30 s of audio
    python -m bench.separation --seconds 60 --source-rate 44100 --channels 2
    python -m bench.separation --architecture tiny   # the tests' tiny model (smoke run)
    python -m bench.separation --json out.json

The model (~42 M parameters, htdemucs' published init arguments) is written with random weights in demucs'
safetensors layout and loaded back through engine.demucs.load_separator, the path a real checkpoint takes;
random weights cost exactly what real ones do. The input is noise at the source rate (MusicGen's 32 kHz
mono by default), so the figure includes resampling to 44.1 kHz and back.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from engine.demucs import load_separator
from engine.demucs.checkpoints import build_random_separator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--architecture", choices=("htdemucs", "tiny"), default="htdemucs")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the audio to separate")
    parser.add_argument("--source-rate", type=int, default=32000)
    parser.add_argument("--channels", type=int, choices=(1, 2), default=1)
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="dgx-demucs-") as tmp:
        directory = build_random_separator(Path(tmp) / args.architecture, architecture=args.architecture)
        started = time.perf_counter()
        separator = load_separator(directory, device=args.device)
        load_seconds = time.perf_counter() - started
    parameters = sum(p.numel() for p in separator.bag.parameters())
    audio = 0.1 * np.random.default_rng(0).standard_normal(
        (args.channels, round(args.seconds * args.source_rate))
    )
    audio = audio.astype(np.float32)

    step_times: list[float] = []
    last = time.perf_counter()

    def on_step(done: int, total: int) -> None:
        nonlocal last
        now = time.perf_counter()
        step_times.append(now - last)
        last = now

    rss_before = psutil.Process().memory_info().rss
    cpu_started = time.process_time()
    started = last = time.perf_counter()
    result = separator.separate(audio, args.source_rate, on_step=on_step)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    assert result is not None
    figures = {
        "architecture": args.architecture,
        "parameters": parameters,
        "device": str(separator.device),
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg()[0],
        "audio_seconds": args.seconds,
        "source": f"{args.source_rate} Hz, {args.channels} ch",
        "steps": result.steps,
        "segment_seconds": separator.capabilities.segment_seconds,
        "median_step_seconds": statistics.median(step_times),
        "wall_seconds": wall,
        "seconds_per_audio_second": wall / args.seconds,
        # CPU time of this process: less sensitive than wall time to other processes on a shared machine.
        "cpu_seconds_per_audio_second": cpu / args.seconds,
        "load_seconds": load_seconds,
        "rss_growth_mb": (psutil.Process().memory_info().rss - rss_before) / 2**20,
    }
    width = max(map(len, figures))
    for key, value in figures.items():
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        print(f"{key:<{width}}  {shown}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
