"""The model checks of `dgx-music doctor`: the weights on disk, the licences that apply, a real one-second
generation, and (``--full``) the latency and peak memory of each measured duration against the targets.

``check_weights`` and ``check_generation`` record what the later checks need (``weights_found``, ``engine``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from engine import EngineError, MusicEngine, resolve_model_id
from engine.models import looks_like_path
from mcp_server import families
from mcp_server.config import Settings
from mcp_server.doctor_measure import (
    PRODUCTION_LATENCY_S,
    TARGET_DURATION_S,
    TARGET_LATENCY_S,
    TARGET_MEMORY_BYTES,
    measure,
)
from mcp_server.doctor_report import GB, Check, _size
from mcp_server.pull import cached_snapshot, weight_files


class ModelChecks:
    """The model checks as ``Doctor`` methods; generation needs a usable ``device`` and the weights."""

    settings: Settings
    durations: Sequence[float]
    device: torch.device | None
    weights_found: bool
    engine: MusicEngine | None

    def check_weights(self) -> Check:
        model_id = resolve_model_id(self.settings.model)
        if looks_like_path(model_id):
            directory = Path(model_id).expanduser().resolve()
            fetch = "point DGX_MUSIC_MODEL at a directory with config.json and model.safetensors"
        else:
            from huggingface_hub import constants

            snapshot = cached_snapshot(model_id)
            if snapshot is None:
                return Check(
                    "model weights",
                    "fail",
                    f"{model_id} is not in the Hugging Face cache {constants.HF_HUB_CACHE}: run "
                    f"`dgx-music pull {model_id}` on a connected machine, or set HF_HOME to a cache with it",
                )
            directory = snapshot
            fetch = f"run `dgx-music pull {model_id}` again to complete it"
        weights = weight_files(directory) if directory.is_dir() else []
        if not (directory / "config.json").is_file() or not weights:
            return Check(
                "model weights", "fail", f"no complete checkpoint for {model_id} at {directory}: {fetch}"
            )
        self.weights_found = True
        size = sum(path.stat().st_size for path in weights)
        return Check(
            "model weights", "pass", f"{model_id}: {len(weights)} file(s), {_size(size)} at {directory}"
        )

    def check_licences(self) -> Check:
        """Which licence applies to each model this server uses (MusicGen's weights are non-commercial)."""
        settings = self.settings
        named = {"model": settings.model, "edit model": settings.edit_model, "separator": settings.separator}
        parts = []
        for role, name in named.items():
            model_id = families.resolve_name(name)  # the published model's terms, even when mapped to a dir
            parts.append(f"{role} {name}: {families.licence_of(model_id)}")
        return Check("licences", "pass", "; ".join(parts))

    def check_generation(self) -> Check:
        if self.device is None or not self.weights_found:
            return Check("generation", "skip", "needs a usable device and the model weights")
        try:
            engine = MusicEngine.load(  # the weights check found them on disk: no hub round trips
                self.settings.model, device=str(self.device), dtype=self.settings.dtype, local_files_only=True
            )
            measurement = measure(engine, duration_s=1.0, prompt="doctor check: a short drum loop")
        except EngineError as error:
            return Check("generation", "fail", str(error))
        self.engine = engine
        return Check(
            "generation",
            "pass",
            f"{engine.model_id} on {engine.device} in {engine.dtype}: loaded in {engine.load_seconds:.1f} s "
            f"({_size(engine.memory_bytes)}); 1 s of audio in {measurement.latency_s:.2f} s "
            f"(~{1000 * measurement.latency_s / measurement.steps:.0f} ms/step, {measurement.steps} steps)",
        )

    def check_performance(self) -> list[Check]:
        """Generate each duration once with the loaded engine; the 16 s run is held to the targets."""
        if self.engine is None:
            return [Check("performance", "skip", "needs a passing generation check")]
        checks = []
        for duration in self.durations:
            measurement = measure(self.engine, duration)
            latency = f"{measurement.latency_s:.1f} s for {duration:g} s of audio"
            memory = (
                f"peak {measurement.peak_bytes / GB:.1f} GB (RSS {measurement.rss_peak_bytes / GB:.1f} GB + "
                f"CUDA reserved {measurement.cuda_reserved_peak_bytes / GB:.1f} GB, "
                f"allocated {measurement.cuda_allocated_peak_bytes / GB:.1f} GB)"
            )
            if duration != TARGET_DURATION_S:
                checks.append(Check(f"{duration:g} s audio", "pass", f"{latency}; {memory}"))
                continue
            production = "meets" if measurement.latency_s < PRODUCTION_LATENCY_S else "misses"
            checks += [
                Check(
                    "latency 16 s",
                    "pass" if measurement.latency_s < TARGET_LATENCY_S else "fail",
                    f"{latency} (target < {TARGET_LATENCY_S:g} s; {production} production < "
                    f"{PRODUCTION_LATENCY_S:g} s)",
                ),
                Check(
                    "memory 16 s",
                    "pass" if measurement.peak_bytes < TARGET_MEMORY_BYTES else "fail",
                    f"{memory} (target < {TARGET_MEMORY_BYTES / GB:g} GB)",
                ),
            ]
        return checks
