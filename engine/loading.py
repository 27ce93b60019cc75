"""Find, load and place a MusicGen checkpoint: device, dtype, and a clear error when weights are missing."""

from __future__ import annotations

import logging
import os
import platform
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import torch

from engine.errors import EngineError, ModelNotAvailableError
from engine.models import looks_like_path

log = logging.getLogger(__name__)

DTYPES = {
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float32": torch.float32,
    # CPU only, opt-in: the decoder's linear layers as int8 weights (per output channel) with dynamically
    # quantised activations (fbgemm); everything else fp32. See ``quantize_decoder_int8``.
    "int8": torch.qint8,
}


@dataclass(frozen=True)
class LoadedModel:
    model_id: str
    model: Any  # MusicgenForConditionalGeneration or MusicgenMelodyForConditionalGeneration
    processor: Any
    device: torch.device
    dtype: torch.dtype
    load_seconds: float
    memory_bytes: int


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
    """The argument, else ``DGX_MUSIC_DEVICE``, else CUDA when available, else the CPU."""
    name = requested or os.environ.get("DGX_MUSIC_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
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
    """The argument, else ``DGX_MUSIC_DTYPE``, else bf16 where the hardware computes it natively, or fp32."""
    name = requested or os.environ.get("DGX_MUSIC_DTYPE")
    if name:
        if name not in DTYPES:
            raise EngineError(f"dtype {name!r} is not supported; use one of {', '.join(DTYPES)}")
        return DTYPES[name]
    native_bf16 = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_native_bf16()
    return torch.bfloat16 if native_bf16 else torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    return next(name for name, value in DTYPES.items() if value == dtype)


def _not_available(model_id: str, reason: str) -> ModelNotAvailableError:
    if looks_like_path(model_id):
        where = f"no MusicGen checkpoint at {Path(model_id).expanduser().resolve()} ({reason})"
        fetch = "point --model / DGX_MUSIC_MODEL at a directory with config.json and model.safetensors"
    else:
        from huggingface_hub import constants

        offline = " with HF_HUB_OFFLINE set" if _offline() else ""
        where = f"not found in the Hugging Face cache {constants.HF_HUB_CACHE}{offline} ({reason})"
        fetch = (
            f"run `dgx-music pull {model_id}` on a connected machine, or set HF_HOME to a cache that has it"
        )
    return ModelNotAvailableError(f"model {model_id!r} is not available: {where}; {fetch}")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _quiet_libraries() -> None:
    """stdio MCP owns stdout: no progress bars, and library chatter only through logging at error level."""
    import huggingface_hub.utils
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()


def _memory_now(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(psutil.Process().memory_info().rss)


def _tensor_bytes(model: Any) -> int:
    tensors = [*model.parameters(), *model.buffers()]
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


def load(
    model_id: str, device: torch.device, dtype: torch.dtype, local_files_only: bool | None = None
) -> LoadedModel:
    """Load the checkpoint's model class and processor onto ``device`` in ``dtype``, in eval mode.

    ``local_files_only`` keeps the hub out of it (the caller knows the weights are cached, or that the hub
    cannot be reached: without it, transformers retries the network for tens of seconds before failing);
    None = as HF_HUB_OFFLINE says.
    """
    from transformers import (
        AutoConfig,
        MusicgenForConditionalGeneration,
        MusicgenMelodyForConditionalGeneration,
    )

    if dtype == torch.qint8 and device.type != "cpu":
        raise EngineError("dtype 'int8' is for CPUs (fbgemm kernels); on a GPU use bfloat16 or float32")
    _quiet_libraries()
    if looks_like_path(model_id) and not (Path(model_id).expanduser() / "config.json").is_file():
        raise _not_available(model_id, "config.json missing")
    source = str(Path(model_id).expanduser()) if looks_like_path(model_id) else model_id
    options = {"local_files_only": _offline() if local_files_only is None else local_files_only}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    memory_before = _memory_now(device)
    started = time.perf_counter()
    try:
        config = AutoConfig.from_pretrained(source, **options)
        model_class: Any = {
            "musicgen": MusicgenForConditionalGeneration,
            "musicgen_melody": MusicgenMelodyForConditionalGeneration,
        }.get(config.model_type)
        if model_class is None:
            raise EngineError(
                f"model {model_id!r} is a {config.model_type!r} checkpoint, not MusicGen; "
                "use facebook/musicgen-small or another MusicGen checkpoint"
            )
        model = model_class.from_pretrained(
            source, dtype=torch.float32 if dtype == torch.qint8 else dtype, **options
        )
        processor = _load_processor(source, model_class is MusicgenMelodyForConditionalGeneration, options)
    except (OSError, ValueError) as error:
        # transformers reports a missing file, an unknown repo and "offline, not cached" all as OSError
        # (huggingface_hub's errors subclass it); only those mean the model is not there.
        if isinstance(error, ValueError) and not _is_hub_error(error):
            raise
        raise _not_available(model_id, _first_line(error)) from error
    keep_codec_fp32(model)
    if dtype == torch.qint8:
        quantize_decoder_int8(model)
    model.to(device).eval()
    return LoadedModel(
        model_id=model_id,
        model=model,
        processor=processor,
        device=device,
        dtype=dtype,
        load_seconds=time.perf_counter() - started,
        # An fp32 load memory-maps model.safetensors, and those pages only become resident as generation
        # touches them: the RSS growth alone would under-report, so count at least the weights themselves.
        memory_bytes=max(_memory_now(device) - memory_before, _tensor_bytes(model)),
    )


def _load_processor(source: str, melody: bool, options: dict[str, Any]) -> Any:
    """The checkpoint's processor; for melody checkpoints its tokenizer.

    The melody processor's feature extractor (chroma of a reference tune) requires torchaudio, whose builds
    lag torch's; generation here is conditioned on text only, which the tokenizer alone handles with the same
    ``processor(text=[...], padding=True, return_tensors="pt")`` call.
    """
    from transformers import AutoProcessor, AutoTokenizer

    return (AutoTokenizer if melody else AutoProcessor).from_pretrained(source, **options)


def keep_codec_fp32(model: Any) -> None:
    """EnCodec decodes in fp32 whatever dtype the decoder runs in.

    Measured on the musicgen-small architecture (random weights, 2-core AMD EPYC without native bf16, 5 s of
    codes): bf16 decoding differs from fp32 by a 52 dB SNR and took 12.8 s against 3.3 s in fp32. On CPUs and
    GPUs with native bf16 it is about twice as fast, but EnCodec is 28 M parameters, a few percent of the work
    per second of audio, so the final waveform keeps full precision.
    """
    model.audio_encoder.to(torch.float32)


def quantize_decoder_int8(model: Any) -> None:
    """Swap the decoder's linear layers for int8 ones: weights quantised per output channel once, activations
    per call.

    Decoding reads every decoder weight at every step, so on a CPU the step costs what moving the weights
    costs: int8 moves a quarter of fp32's bytes, and fbgemm's kernels (unlike bf16 matmuls on CPUs without
    native bf16) keep that advantage at every batch size. It changes the numbers the model computes, so it is
    never chosen automatically; its effect on the sound of real checkpoints has not been measured here
    (no real weights can be downloaded in this project's CI).
    """
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    model.eval()
    # torch.ao's eager quantisation is deprecated in favour of torchao, but it is what ships in torch itself
    # and its fbgemm kernels are the fast CPU path; moving to torchao is a dependency decision for later.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        quantize_dynamic(
            model.decoder, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True
        )


def _is_hub_error(error: Exception) -> bool:
    from huggingface_hub.errors import HfHubHTTPError

    return isinstance(error, HfHubHTTPError)


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:200]
