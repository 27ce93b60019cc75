"""The device checks of `dgx-music doctor` (all that ``--gpu`` runs): the torch build, CUDA, the device and
its kernels, then bf16 and fp32 matmul numerics on it, each checked against the CPU.

``check_device`` records the usable device for the checks that follow (``Doctor.device``).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import psutil
import torch
from torch import nn

from engine.loading import cpu_has_native_bf16, select_dtype
from engine.musicgen import packed_linear, row_kernel
from mcp_server.config import Settings
from mcp_server.doctor_report import GB, Check, Status


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


class DeviceChecks:
    """The device checks as ``Doctor`` methods: they read the settings, and set ``device`` when usable."""

    settings: Settings
    require_cuda: bool
    device: torch.device | None

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

    def check_cpu_kernel(self) -> Check:
        """The fp32 CPU decoder's small-row kernel: built (or found in the cache) and computing what
        ``nn.Linear`` does, else why not and what that costs."""
        if self.device is None or self.device.type != "cpu":
            return Check("cpu decode kernel", "skip", "decoding runs on the GPU")
        if select_dtype(self.device, self.settings.dtype) != torch.float32:
            return Check("cpu decode kernel", "skip", "only fp32 CPU decoding uses it (DGX_MUSIC_DTYPE)")
        if not packed_linear.available(self.device, torch.float32) or not row_kernel.supported():
            return Check("cpu decode kernel", "skip", "not an x86 CPU with AVX-512: oneDNN's kernels decode")
        started = time.perf_counter()
        try:
            op = row_kernel.load(self.settings.kernel_cache_dir)
        except row_kernel.Unavailable as reason:
            return Check(
                "cpu decode kernel",
                "warn",
                f"{reason}; fp32 decoding uses oneDNN's kernels, which gain less from batching",
            )
        linear = nn.Linear(1024, 1000)
        rows = torch.randn(16, 1024)
        with torch.inference_mode():
            error = float((packed_linear.RowsLinear(linear, op)(rows) - linear(rows)).abs().max())
        seconds = time.perf_counter() - started
        detail = f"small-row kernel in {self.settings.kernel_cache_dir} ({seconds:.1f} s)"
        if error > 1e-4:
            return Check("cpu decode kernel", "fail", f"{detail}: max error {error:.1e} against nn.Linear")
        return Check("cpu decode kernel", "pass", f"{detail}, max error {error:.1e} against nn.Linear")
