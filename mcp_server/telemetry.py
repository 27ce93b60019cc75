"""What the worker of this process has done, as Prometheus metrics (``/metrics``) and facts for ``/health``.

The worker thread reports events (a model loaded, a step of a running batch, a job completed); prometheus
metric objects are thread-safe, so readers on the event loop need no lock. Job counts by status come from
the database at scrape time instead, because jobs queued and run by other processes count too.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

if TYPE_CHECKING:
    from mcp_server.families import LoadedModel as ResidentModel

# Generation seconds for one job: tiny CPU checkpoints take well under a second, 30 s of MusicGen large
# on a slow CPU several minutes.
GENERATION_BUCKETS = (0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
# One step: a tiny CPU checkpoint's takes milliseconds, musicgen-small's on a 2-core CPU 0.15-0.3 s.
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5, 1, 2.5)
STEP_RATE_SMOOTHING = 0.05  # weight of the newest step in the steps-per-second gauge


@dataclass(frozen=True)
class LoadedModel:
    model: str
    device: str
    dtype: str
    load_seconds: float


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.loaded: LoadedModel | None = None
        self.ever_loaded: set[str] = set()  # models this worker has loaded at least once
        self._steps_per_second: float | None = None
        r = self.registry
        self.jobs = Gauge("dgx_music_jobs", "Jobs in the history by status.", ["status"], registry=r)
        self.queue_depth = Gauge("dgx_music_queue_depth", "Pending jobs waiting for the worker.", registry=r)
        self.batch_size = Gauge(
            "dgx_music_batch_size", "Jobs in the running batch at the last step (0 when idle).", registry=r
        )
        self.batch_sizes = Histogram(
            "dgx_music_batch_jobs", "Jobs carried by each step.", buckets=BATCH_BUCKETS, registry=r
        )
        self.decode_steps = Counter("dgx_music_decode_steps", "Steps run by this worker.", registry=r)
        self.step_seconds = Histogram(
            "dgx_music_step_seconds",
            "Wall time of each step, by the number of jobs it carried: what batching costs per step.",
            ["jobs"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.steps_per_second = Gauge(
            "dgx_music_decode_steps_per_second",
            "Steps per second, smoothed over the last few dozen steps.",
            registry=r,
        )
        self.generation_seconds = Histogram(
            "dgx_music_generation_seconds",
            "Wall time of each completed job's generation.",
            buckets=GENERATION_BUCKETS,
            registry=r,
        )
        self.load_seconds = Gauge(
            "dgx_music_model_load_seconds", "Seconds the resident model took to load.", ["model"], registry=r
        )
        self.gpu_memory = Gauge(
            "dgx_music_gpu_memory_bytes",
            "CUDA memory allocated by this process (only where a GPU is in use).",
            ["device"],
            registry=r,
        )

    # --- events from the worker thread -------------------------------------------------------------------

    def model_loaded(self, engine: ResidentModel) -> None:
        self.load_seconds.clear()
        self.load_seconds.labels(engine.model_id).set(engine.load_seconds)
        self.loaded = LoadedModel(engine.model_id, engine.device, engine.dtype, engine.load_seconds)
        self.ever_loaded.add(engine.model_id)

    def step_done(self, jobs: int, seconds: float) -> None:
        """One step of a running batch carrying ``jobs`` requests took ``seconds``."""
        self.batch_size.set(jobs)
        self.batch_sizes.observe(jobs)
        self.decode_steps.inc()
        self.step_seconds.labels(str(jobs)).observe(seconds)
        if seconds > 0:  # exponential smoothing: one slow step (a graph capture, a load) does not dominate
            rate = 1.0 / seconds
            self._steps_per_second = (
                rate
                if self._steps_per_second is None
                else (STEP_RATE_SMOOTHING * rate + (1 - STEP_RATE_SMOOTHING) * self._steps_per_second)
            )
            self.steps_per_second.set(self._steps_per_second)

    def idle(self) -> None:
        self.batch_size.set(0)

    def job_completed(self, generation_seconds: float) -> None:
        self.generation_seconds.observe(generation_seconds)

    # --- readers ------------------------------------------------------------------------------------------

    def step_totals(self) -> dict[int, tuple[int, float]]:
        """Steps so far and their seconds, by the number of jobs they carried."""
        totals: dict[int, list[float]] = {}
        for metric in self.step_seconds.collect():
            for sample in metric.samples:
                jobs = int(sample.labels["jobs"])
                if sample.name.endswith("_count"):
                    totals.setdefault(jobs, [0.0, 0.0])[0] = sample.value
                elif sample.name.endswith("_sum"):
                    totals.setdefault(jobs, [0.0, 0.0])[1] = sample.value
        return {jobs: (int(count), seconds) for jobs, (count, seconds) in totals.items()}

    def exposition(self, counts: dict[str, int]) -> bytes:
        """The Prometheus text format, with job counts (by status, from the database) filled in first."""
        for status, count in counts.items():
            self.jobs.labels(status).set(count)
        self.queue_depth.set(counts.get("pending", 0))
        self._read_gpu_memory()
        return generate_latest(self.registry)

    def _read_gpu_memory(self) -> None:
        # Only when the worker already imported torch: a scrape must never pay for importing it.
        torch = sys.modules.get("torch")
        if self.loaded is None or torch is None or not self.loaded.device.startswith("cuda"):
            return
        self.gpu_memory.labels(self.loaded.device).set(torch.cuda.memory_allocated(self.loaded.device))
