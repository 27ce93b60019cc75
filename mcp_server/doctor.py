"""`dgx-music doctor`: prove this machine can serve music, one pass/fail line per thing that can block it.

The checks run in the order a first-day DGX Spark install fails: the torch build, the GPU it sees, numerics on
that GPU, the weights, a real generation, then the data directory and database, and last Ardour (its
command-line tools load a session this check writes; without them sessions are still written, unverified).
A failed check names itself and what to do; later checks that depend on it are skipped rather than failing
with a confusing second error.

``full`` (``just test-model``) also generates 16 s of audio and reports latency and peak memory against the
project's targets; ``gpu_only`` (``just validate-gpu``) runs the device checks and requires CUDA.
Run as a module: ``python -m mcp_server.doctor [--full] [--gpu] [--duration S ...]``.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import psutil
import soundfile as sf
import torch
import typer
from rich.console import Console
from rich.markup import escape

from ardour_templates import ArdourExportError, Clip, export_session
from ardour_templates.verify import find_tool, inspect_session
from engine import EngineError, GenerationRequest, MusicEngine, resolve_model_id
from engine.loading import cpu_has_native_bf16
from engine.models import looks_like_path
from mcp_server import families
from mcp_server.config import ConfigError, Settings
from mcp_server.pull import cached_snapshot, weight_files

Status = Literal["pass", "warn", "fail", "skip"]
STYLE: dict[Status, str] = {"pass": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}

# The seed's first-day targets for 16 s of audio on DGX Spark.
TARGET_DURATION_S = 16.0
TARGET_LATENCY_S = 30.0
PRODUCTION_LATENCY_S = 18.0
TARGET_MEMORY_BYTES = 30 * 10**9
GB = 1e9


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str


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


def _line(console: Console, check: Check) -> None:
    label = f"[{STYLE[check.status]}]{check.status.upper():<4}[/]"
    console.print(f"{label} {check.name:<16} {escape(check.detail)}", soft_wrap=True, highlight=False)


def _size(count: float) -> str:
    return f"{count / GB:.2f} GB" if count >= 0.1 * GB else f"{count / 1e6:.1f} MB"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:300]


def _nvidia_driver_present() -> bool:
    return shutil.which("nvidia-smi") is not None or Path("/proc/driver/nvidia/version").exists()


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def kernels_for(major: int, minor: int, arch_list: Sequence[str]) -> bool:
    """Whether a torch build for ``arch_list`` (``torch.cuda.get_arch_list()``) runs on capability X.Y.

    A cubin for sm_XY runs on X.Z for Z >= Y (sm_120 kernels run on the GB10's 12.1); PTX (compute_XY) is
    JIT-compiled for any newer capability.
    """
    for arch in arch_list:
        match = re.fullmatch(r"(sm|compute)_(\d+)(\d)[af]?", arch)
        if not match:
            continue
        kind, arch_major, arch_minor = match.group(1), int(match.group(2)), int(match.group(3))
        if kind == "sm" and arch_major == major and arch_minor <= minor:
            return True
        if kind == "compute" and (arch_major, arch_minor) <= (major, minor):
            return True
    return False


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


class Doctor:
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

    def _wants_cuda(self) -> bool:
        return self.require_cuda or (self.settings.device or "").startswith("cuda")

    def check_torch_build(self) -> Check:
        cuda = torch.version.cuda
        detail = (
            f"torch {torch.__version__} ({f'CUDA {cuda}' if cuda else 'CPU'} build), "
            f"Python {platform.python_version()}, {platform.machine()}"
        )
        if cuda is None and (self._wants_cuda() or _nvidia_driver_present()):
            status: Status = "fail" if self._wants_cuda() else "warn"
            return Check(
                "torch build",
                status,
                f"{detail}: this build cannot use the NVIDIA GPU; install the CUDA build with "
                "`deploy/torch.sh install .venv/bin/python` (CUDA 13 wheels on DGX Spark)",
            )
        return Check("torch build", "pass", detail)

    def check_cuda(self) -> Check:
        if torch.cuda.is_available():
            count = torch.cuda.device_count()
            return Check("CUDA available", "pass", f"{count} device(s), CUDA runtime {torch.version.cuda}")
        if torch.version.cuda is None:
            reason = "this is a CPU build of torch"
        elif not _nvidia_driver_present():
            reason = "no NVIDIA driver found (nvidia-smi, /proc/driver/nvidia)"
        else:
            reason = "the driver is too old for this torch build, or the GPU is not visible to this user"
        if self._wants_cuda():
            return Check("CUDA available", "fail", f"no: {reason}; fix that, or set DGX_MUSIC_DEVICE=cpu")
        return Check("CUDA available", "warn", f"no ({reason}): generation runs on the CPU, far slower")

    def check_device(self) -> Check:
        name = self.settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(name)
        except RuntimeError:
            return Check(
                "device", "fail", f"DGX_MUSIC_DEVICE={name!r} is not a device: use cpu, cuda or cuda:N"
            )
        if device.type == "cpu":
            self.device = device
            memory = psutil.virtual_memory()
            return Check(
                "device",
                "pass",
                f"cpu: {_cpu_name()}, {os.cpu_count()} cores, {memory.total / GB:.0f} GB RAM "
                f"({memory.available / GB:.0f} GB free)",
            )
        if device.type != "cuda" or not torch.cuda.is_available():
            return Check("device", "fail", f"device {name!r} is not usable here: use cpu, cuda or cuda:N")
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            return Check("device", "fail", f"{name}: only {torch.cuda.device_count()} CUDA device(s) exist")
        device = torch.device("cuda", index)
        props = torch.cuda.get_device_properties(device)
        free, total = torch.cuda.mem_get_info(device)
        detail = (
            f"{device}: {props.name}, compute capability {props.major}.{props.minor}, "
            f"{total / GB:.0f} GB ({free / GB:.0f} GB free)"
        )
        if not kernels_for(props.major, props.minor, torch.cuda.get_arch_list()):
            return Check(
                "device",
                "fail",
                f"{detail}; torch {torch.__version__} has no kernels for sm_{props.major}{props.minor} "
                f"(built for {' '.join(torch.cuda.get_arch_list())}): install a newer CUDA build "
                "(deploy/torch.sh install)",
            )
        self.device = device
        return Check("device", "pass", detail)

    def check_bf16(self) -> Check:
        if self.device is None:
            return Check("bf16", "skip", "needs a usable device")
        a, b = torch.randn(256, 256), torch.randn(256, 256)
        reference = a.double() @ b.double()
        result = (a.to(self.device, torch.bfloat16) @ b.to(self.device, torch.bfloat16)).double().cpu()
        error = float((result - reference).abs().max() / reference.abs().max())
        native = torch.cuda.is_bf16_supported() if self.device.type == "cuda" else cpu_has_native_bf16()
        detail = f"bf16 matmul max rel. error {error:.1e}; native bf16: {'yes' if native else 'no'}"
        if error > 2e-2:
            return Check(
                "bf16", "fail", f"{detail}: wrong results; set DGX_MUSIC_DTYPE=float32 and report it"
            )
        if self.settings.dtype == "bfloat16" and not native:
            return Check(
                "bf16", "warn", f"{detail}: DGX_MUSIC_DTYPE=bfloat16 is emulated here, float32 is faster"
            )
        return Check("bf16", "pass", detail)

    def check_matmul(self) -> Check:
        if self.device is None:
            return Check("matmul", "skip", "needs a usable device")
        cuda = self.device.type == "cuda"
        size, repeats = (4096, 20) if cuda else (512, 5)
        a = torch.randn(size, size, device=self.device)
        b = torch.randn(size, size, device=self.device)
        (a @ b).sum().item()  # warm-up: kernel selection and lazy CUDA context set-up are not timed
        started = time.perf_counter()
        for _ in range(repeats):
            result = a @ b
        if cuda:
            torch.cuda.synchronize(self.device)
        seconds = (time.perf_counter() - started) / repeats
        rows = slice(0, 8)
        reference = a[rows].double().cpu() @ b.double().cpu()
        error = float((result[rows].double().cpu() - reference).abs().max() / reference.abs().max())
        flops = 2 * size**3 / seconds
        rate = f"{flops / 1e12:.1f} TFLOP/s" if flops >= 1e12 else f"{flops / 1e9:.1f} GFLOP/s"
        detail = f"{size}x{size} fp32 on {self.device}: {rate}, rel. error {error:.1e}"
        # TF32, if someone enables it, keeps ~1e-3; anything worse is a broken kernel or driver.
        if error > 5e-3:
            return Check(
                "matmul", "fail", f"{detail}: results differ from the CPU; update the driver and torch"
            )
        return Check("matmul", "pass", detail)

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

    def check_data_dir(self) -> Check:
        home = self.settings.home
        try:
            home.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=home, prefix=".doctor-"):
                pass
        except OSError as error:
            return Check(
                "data dir",
                "fail",
                f"{home} is not writable ({_first_line(error)}): give the server's user write access "
                "or point DGX_MUSIC_HOME elsewhere",
            )
        free = shutil.disk_usage(home).free
        if free < GB:
            return Check(
                "data dir", "warn", f"{home}: only {free / GB:.2f} GB free; each minute of audio is ~10 MB"
            )
        return Check("data dir", "pass", f"{home} is writable, {free / GB:.0f} GB free")

    def check_database(self) -> Check:
        from sqlalchemy.engine import make_url

        from storage.db import current_revision, database_url, head_revision, make_engine

        url = database_url(self.settings.home, self.settings.database_url)
        parsed = make_url(url)
        shown = parsed.render_as_string(hide_password=True)
        if parsed.get_backend_name() == "sqlite" and parsed.database and not Path(parsed.database).exists():
            return Check(
                "database",
                "warn",
                f"{parsed.database} does not exist yet: the server creates it when it starts, "
                "or run `dgx-music db upgrade`",
            )
        engine = make_engine(url)
        try:
            current = current_revision(engine)
        finally:
            engine.dispose()
        head = head_revision()
        if current == head:
            return Check("database", "pass", f"{shown} is migrated (revision {head})")
        return Check(
            "database",
            "fail",
            f"{shown} is at revision {current or 'none'} but this version needs {head}: run "
            "`dgx-music db upgrade` (or upgrade dgx-music if the database was made by a newer one)",
        )

    def check_ardour(self) -> Check:
        """ardourN-lua and ardourN-export present, and Ardour loads a session written the way export_to_ardour
        writes one (a 1 s tone on one track)."""
        try:
            tools = [find_tool("lua"), find_tool("export")]
        except ArdourExportError as error:
            return Check(
                "ardour",
                "warn",
                f"{error}; export_to_ardour still writes sessions, but nothing here can open or check them",
            )
        with tempfile.TemporaryDirectory(prefix="dgx-music-doctor-") as scratch:
            root = Path(scratch)
            tone = root / "tone.wav"
            seconds = np.arange(32_000) / 32_000
            sf.write(tone, (0.25 * np.sin(2 * np.pi * 440 * seconds)).astype(np.float32), 32_000)
            try:
                manifest = export_session(
                    [Clip(path=tone, name="doctor tone")], "doctor-check", root, allowed_root=root
                )
                view = inspect_session(manifest.ardour_file)
            except ArdourExportError as error:
                return Check("ardour", "fail", f"{' and '.join(tools)} present, but: {_first_line(error)}")
        names = [track.name for track in view.tracks]
        if names != ["doctor tone"]:
            return Check("ardour", "fail", f"Ardour loaded the test session with tracks {names}, not one")
        return Check(
            "ardour",
            "pass",
            f"{' and '.join(Path(tool).name for tool in tools)} load a session written here "
            f"(1 track, {view.sample_rate} Hz)",
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
