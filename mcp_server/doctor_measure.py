"""Measuring one generation for `dgx-music doctor --full`: wall time and peak memory against the targets.

Peak memory is the process's resident set sampled in a thread plus, on CUDA, torch's peak reserved pool
(``Measurement.peak_bytes`` says why the two are added).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psutil
import torch

from engine import EngineError, GenerationRequest, MusicEngine

# The seed's first-day targets for 16 s of audio on DGX Spark.
TARGET_DURATION_S = 16.0
TARGET_LATENCY_S = 30.0
PRODUCTION_LATENCY_S = 18.0
TARGET_MEMORY_BYTES = 30 * 10**9


@dataclass(frozen=True)
class Measurement:
    duration_s: float
    latency_s: float
    steps: int
    rss_peak_bytes: int
    cuda_allocated_peak_bytes: int
    cuda_reserved_peak_bytes: int

    @property
    def peak_bytes(self) -> int:
        # On DGX Spark's unified memory the CUDA pool is carved from the same RAM as the process's RSS, so
        # the sum is what the machine must hold; on a discrete GPU it over-counts, erring on the safe side.
        return self.rss_peak_bytes + self.cuda_reserved_peak_bytes


class PeakRss:
    """Samples the process's resident set size in a thread: the peak of one measured stretch of work.

    ``ru_maxrss`` is the peak of the whole process life and cannot be reset between measurements.
    """

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self.peak = 0

    @contextmanager
    def watch(self) -> Iterator[PeakRss]:
        process = psutil.Process()
        self.peak = process.memory_info().rss
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(self.interval_s):
                self.peak = max(self.peak, process.memory_info().rss)

        thread = threading.Thread(target=sample, name="peak-rss", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()
            self.peak = max(self.peak, process.memory_info().rss)


def measure(
    engine: MusicEngine, duration_s: float, prompt: str = "lofi hip hop beat, warm piano"
) -> Measurement:
    """Generate ``duration_s`` of audio once and return its wall time and peak memory."""
    cuda = engine.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize(engine.device)
        torch.cuda.reset_peak_memory_stats(engine.device)
    request = GenerationRequest.model_validate({"prompt": prompt, "duration": duration_s, "seed": 0})
    with PeakRss().watch() as rss:
        started = time.perf_counter()
        (result,) = engine.generate([request])
        if cuda:
            torch.cuda.synchronize(engine.device)
        latency = time.perf_counter() - started
    if result is None:
        raise EngineError(
            "the measured generation was cancelled; nothing cancels it here, please report this"
        )
    return Measurement(
        duration_s=duration_s,
        latency_s=latency,
        steps=result.steps,
        rss_peak_bytes=rss.peak,
        cuda_allocated_peak_bytes=int(torch.cuda.max_memory_allocated(engine.device)) if cuda else 0,
        cuda_reserved_peak_bytes=int(torch.cuda.max_memory_reserved(engine.device)) if cuda else 0,
    )
