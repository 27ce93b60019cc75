"""Loading helpers every family shares: device and dtype choice, a clear error when weights are missing,
memory accounting, quiet libraries. The families' own loaders (``engine.musicgen.loading``) build on these.

Nothing here reads the environment: the device and dtype come in as arguments (``mcp_server.config`` reads
``DGX_MUSIC_*``); whether the hub may be contacted is huggingface_hub's own setting (``HF_HUB_OFFLINE``).
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import psutil
import torch

from engine.errors import EngineError, ModelNotAvailableError
from engine.models import looks_like_path

DTYPES = {
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float32": torch.float32,
    # CPU only, opt-in: the decoder's linear layers as int8 weights (per output channel) with dynamically
    # quantised activations (fbgemm); everything else fp32. See ``quantize_decoder_int8``.
    "int8": torch.qint8,
}


def cpu_has_native_bf16() -> bool:
    """Whether the CPU computes bf16 in hardware; without it bf16 matmuls are emulated, slower than fp32."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = {
        word
        for line in cpuinfo.splitlines()
        if line.startswith(("flags", "Features"))
        for word in line.split()
    }
    if platform.machine() in ("aarch64", "arm64"):
        return "bf16" in flags
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def select_device(requested: str | None = None) -> torch.device:
    """The argument, else CUDA when available, else the CPU."""
    name = requested or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise EngineError(f"device {name!r} is not a torch device; use 'cpu', 'cuda' or 'cuda:N'") from None
    if device.type not in ("cpu", "cuda"):
        raise EngineError(f"device {name!r} is not supported; use 'cpu', 'cuda' or 'cuda:N'")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EngineError(
            f"device {name!r} was asked for but this torch build sees no CUDA GPU "
            f"(torch {torch.__version__}); install a CUDA build of torch or use device 'cpu'"
        )
    return device


def select_dtype(device: torch.device, requested: str | None = None) -> torch.dtype:
    """The argument, else bf16 where the hardware computes it natively, or fp32."""
    name = requested
    if name:
        if name not in DTYPES:
            raise EngineError(f"dtype {name!r} is not supported; use one of {', '.join(DTYPES)}")
        return DTYPES[name]
    native_bf16 = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_native_bf16()
    return torch.bfloat16 if native_bf16 else torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    return next(name for name, value in DTYPES.items() if value == dtype)


def not_available(model_id: str, reason: str) -> ModelNotAvailableError:
    if looks_like_path(model_id):
        where = f"no MusicGen checkpoint at {Path(model_id).expanduser().resolve()} ({reason})"
        fetch = "point --model / DGX_MUSIC_MODEL at a directory with config.json and model.safetensors"
    else:
        from huggingface_hub import constants

        offline_note = " with HF_HUB_OFFLINE set" if offline() else ""
        where = f"not found in the Hugging Face cache {constants.HF_HUB_CACHE}{offline_note} ({reason})"
        fetch = (
            f"run `dgx-music pull {model_id}` on a connected machine, or set HF_HOME to a cache that has it"
        )
    return ModelNotAvailableError(f"model {model_id!r} is not available: {where}; {fetch}")


def offline() -> bool:
    """huggingface_hub's own offline switch, as that library parsed it."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def quiet_libraries() -> None:
    """stdio MCP owns stdout: no progress bars, and library chatter only through logging at error level."""
    import huggingface_hub.utils
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()


def memory_now(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(psutil.Process().memory_info().rss)


def tensor_bytes(model: Any) -> int:
    tensors = [*model.parameters(), *model.buffers()]
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


def is_hub_error(error: Exception) -> bool:
    from huggingface_hub.errors import HfHubHTTPError

    return isinstance(error, HfHubHTTPError)


def first_line(error: Exception) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:200]


def checkpoint_bytes(model_id: str) -> int | None:
    """Bytes of a checkpoint's weight files (a local directory, or the hub cache); None when unknown."""
    if looks_like_path(model_id):
        directory = Path(model_id).expanduser()
    else:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model_id, "config.json")
        if not isinstance(cached, str):
            return None
        directory = Path(cached).parent
    sizes = [path.stat().st_size for path in directory.glob("*.safetensors")]
    return sum(sizes) or None


def release_memory(device: str) -> None:
    """Hand memory freed by an unloaded model back (Python's garbage, torch's CUDA cache)."""
    import gc

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
