"""``row_kernel.cpp`` built once per machine and torch version with the system's C++ compiler, then loaded as
the op ``torch.ops.dgx_music.linear_rows``.

The build takes ~10 s and is cached in the directory the caller names (the server: ``DGX_MUSIC_KERNEL_CACHE``,
by default ``~/.cache/dgx-music/kernels``), keyed by the source, the flags and torch's version, so a server,
its worker processes and every later start share one build. Several processes may build at once: each
compiles into a temporary file and renames it into place. Without a compiler, or where the build fails,
``load`` says why and the caller keeps the oneDNN kernels.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("row_kernel.cpp")
FLAGS = ("-O3", "-std=c++20", "-fPIC", "-shared", "-mavx512f", "-mfma", "-ffp-contract=fast", "-fopenmp")
BUILD_TIMEOUT_S = 300

Op = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, int], torch.Tensor]


class Unavailable(Exception):
    """The kernel cannot be built or loaded here; the message says why and what to do."""


_lock = threading.Lock()
_loaded: Op | None = None
_failure: str | None = None


def supported() -> bool:
    """An x86 CPU with AVX-512, which the kernel is written for (``torch`` detects it the same way)."""
    return torch.backends.cpu.get_cpu_capability() in ("AVX512", "AVX512_BF16", "AMX")


def load(cache: Path | None) -> Op:
    """The op, building it first when ``cache`` has no build for this source and torch (None: this process
    builds it in a temporary directory, removed once loaded). Raises ``Unavailable``; a failure is
    remembered for the process."""
    global _loaded, _failure
    with _lock:
        if _loaded is not None:
            return _loaded
        if _failure is not None:
            raise Unavailable(_failure)
        try:
            if cache is not None:
                torch.ops.load_library(str(_built(cache)))
            else:
                with tempfile.TemporaryDirectory(prefix="dgx-music-kernels-") as scratch:
                    torch.ops.load_library(str(_built(Path(scratch))))
        except Unavailable as error:
            _failure = str(error)
            raise
        except OSError as error:
            _failure = f"the small-row kernel could not be loaded: {error}"
            raise Unavailable(_failure) from None
        _loaded = torch.ops.dgx_music.linear_rows
        return _loaded


def _built(cache: Path) -> Path:
    from torch.utils import cpp_extension

    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + repr((FLAGS, torch.__version__)).encode()).hexdigest()[:16]
    library = cache / f"row_kernel-{key}.so"
    if library.is_file():
        return library
    compiler = shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        raise Unavailable("no C++ compiler for the small-row kernel: install one (apt-get install g++)")
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache, prefix=".build-") as scratch:
            output = Path(scratch) / library.name
            torch_lib = cpp_extension.library_paths()[0]
            command = [
                compiler,
                *FLAGS,
                *(f"-I{path}" for path in cpp_extension.include_paths()),
                str(SOURCE),
                "-o",
                str(output),
                f"-L{torch_lib}",
                f"-Wl,-rpath,{torch_lib}",
                "-lc10",
                "-ltorch_cpu",
            ]
            result = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
            if result.returncode != 0:
                last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
                raise Unavailable(f"the small-row kernel did not compile with {compiler}: {last}")
            os.replace(output, library)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise Unavailable(f"the small-row kernel could not be built in {cache}: {error}") from None
    log.info("built the small-row decode kernel into %s", library)
    return library
