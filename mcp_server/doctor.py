"""`dgx-music doctor`: prove this machine can serve music, one pass/fail line per thing that can block it.

The checks run in the order a first-day DGX Spark install fails: the torch build, the GPU it sees, numerics on
that GPU, the weights, a real generation, then the data directory and database, and last Ardour (its
command-line tools load a session this check writes; without them sessions are still written, unverified).
A failed check names itself and what to do; later checks that depend on it are skipped rather than failing
with a confusing second error.

``full`` (``just test-model``) also generates 16 s of audio and reports latency and peak memory against the
project's targets; ``gpu_only`` (``just validate-gpu``) runs the device checks and requires CUDA.
Run as a module: ``python -m mcp_server.doctor [--full] [--gpu] [--duration S ...]``.

This module runs the checks and prints the verdict; they live in ``doctor_device``, ``doctor_model`` and
``doctor_host``, ``--full``'s measurement in ``doctor_measure``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import typer
from rich.console import Console
from rich.markup import escape

from engine import MusicEngine
from mcp_server.config import ConfigError, Settings
from mcp_server.doctor_device import DeviceChecks, kernels_for
from mcp_server.doctor_host import HostChecks
from mcp_server.doctor_measure import TARGET_DURATION_S, Measurement, PeakRss, measure
from mcp_server.doctor_model import ModelChecks
from mcp_server.doctor_report import Check, _first_line, _line

# Re-exported: tests and callers import these from here, where they were defined before the split.
__all__ = ["Check", "Doctor", "Measurement", "PeakRss", "kernels_for", "main", "measure", "run_doctor"]


class Doctor(DeviceChecks, ModelChecks, HostChecks):
    """Runs the checks in order; each ``check_*`` returns its line and may record what later checks need."""

    def __init__(
        self, settings: Settings, console: Console, *, require_cuda: bool, durations: Sequence[float] = ()
    ) -> None:
        self.settings = settings
        self.console = console
        self.require_cuda = require_cuda
        self.durations = durations
        self.checks: list[Check] = []
        self.device: torch.device | None = None
        self.weights_found = False
        self.engine: MusicEngine | None = None

    def run(self, steps: Sequence[Callable[[], Check | list[Check]]]) -> None:
        for step in steps:
            try:
                outcome = step()
            except Exception as error:  # a diagnostic tool reports a crash as a failed line, not a traceback
                name = step.__name__.removeprefix("check_").replace("_", " ")
                outcome = Check(name, "fail", f"{type(error).__name__}: {_first_line(error)}")
            for check in outcome if isinstance(outcome, list) else [outcome]:
                self.checks.append(check)
                _line(self.console, check)

    @property
    def blockers(self) -> list[Check]:
        return [check for check in self.checks if check.status == "fail"]


def run_doctor(
    settings: Settings,
    console: Console,
    *,
    full: bool = False,
    gpu_only: bool = False,
    durations: Sequence[float] = (TARGET_DURATION_S,),
) -> int:
    """Print one line per check; return 0 when nothing blocks serving music, else 1 (blockers named last)."""
    doctor = Doctor(settings, console, require_cuda=gpu_only, durations=durations)
    steps = [
        doctor.check_torch_build,
        doctor.check_cuda,
        doctor.check_device,
        doctor.check_bf16,
        doctor.check_matmul,
    ]
    if not gpu_only:
        steps += [
            doctor.check_cpu_kernel,
            doctor.check_weights,
            doctor.check_licences,
            doctor.check_generation,
            doctor.check_data_dir,
            doctor.check_database,
            doctor.check_ardour,
        ]
    doctor.run(steps)
    if full and not doctor.blockers:
        doctor.run([doctor.check_performance])
    if doctor.blockers:
        names = ", ".join(check.name for check in doctor.blockers)
        console.print(
            f"[bold red]Blocked by: {names}[/] (see the FAIL lines above)", highlight=False, soft_wrap=True
        )
        return 1
    warnings = sum(check.status == "warn" for check in doctor.checks)
    console.print(f"[green]Ready[/]{f' with {warnings} warning(s)' if warnings else ''}.", highlight=False)
    return 0


def main(
    full: bool = typer.Option(False, "--full", help="Also generate 16 s and report latency and peak memory."),
    gpu: bool = typer.Option(False, "--gpu", help="Only the GPU checks; fail without CUDA."),
    duration: list[float] = typer.Option(  # noqa: B008 - typer's documented way to declare options
        [TARGET_DURATION_S], "--duration", help="Seconds of audio to measure with --full (repeatable)."
    ),
) -> None:
    console = Console()
    try:
        settings = Settings.load()
    except ConfigError as error:
        console.print(f"[red]error:[/] {escape(str(error))}")
        raise typer.Exit(2) from None
    raise typer.Exit(run_doctor(settings, console, full=full, gpu_only=gpu, durations=duration))


if __name__ == "__main__":
    typer.run(main)
