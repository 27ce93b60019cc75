"""Load a MusicGen checkpoint (text-conditioned or melody) onto a device, in a dtype, in eval mode."""

from __future__ import annotations

import json
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine import loading
from engine.backend import Capabilities
from engine.errors import EngineError
from engine.models import looks_like_path
from engine.musicgen import packed_linear
from engine.request import BOUNDS, request_parameters


@dataclass(frozen=True)
class LoadedModel:
    model_id: str
    model: Any  # MusicgenForConditionalGeneration or MusicgenMelodyForConditionalGeneration
    processor: Any
    device: torch.device
    dtype: torch.dtype
    load_seconds: float
    memory_bytes: int


# transformers builds models under process-wide state (a meta-device context while weights load): two loads
# at once in one process corrupt each other, so they take turns.
_ONE_LOAD_AT_A_TIME = threading.Lock()


def load(
    model_id: str,
    device: torch.device,
    dtype: torch.dtype,
    local_files_only: bool | None = None,
    kernel_cache: Path | None = None,
) -> LoadedModel:
    """Load the checkpoint's model class and processor onto ``device`` in ``dtype``, in eval mode.

    ``local_files_only`` keeps the hub out of it (without it, transformers retries an unreachable hub for
    tens of seconds before failing); None = as HF_HUB_OFFLINE says. ``kernel_cache``: where the fp32 CPU
    decoder's small-row kernel is built once and kept (``packed_linear``; None: this process builds it).
    """
    with _ONE_LOAD_AT_A_TIME:
        offline = loading.offline() if local_files_only is None else local_files_only
        return _load(model_id, device, dtype, offline, kernel_cache)


def _load(
    model_id: str, device: torch.device, dtype: torch.dtype, local_files_only: bool, kernel_cache: Path | None
) -> LoadedModel:
    from transformers import (
        AutoConfig,
        MusicgenForConditionalGeneration,
        MusicgenMelodyForConditionalGeneration,
    )

    if dtype == torch.qint8 and device.type != "cpu":
        raise EngineError("dtype 'int8' is for CPUs (fbgemm kernels); on a GPU use bfloat16 or float32")
    loading.quiet_libraries()
    if looks_like_path(model_id) and not (Path(model_id).expanduser() / "config.json").is_file():
        raise loading.not_available(model_id, "config.json missing")
    source = str(Path(model_id).expanduser()) if looks_like_path(model_id) else model_id
    options = {"local_files_only": local_files_only}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    memory_before = loading.memory_now(device)
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
        if isinstance(error, ValueError) and not loading.is_hub_error(error):
            raise
        raise loading.not_available(model_id, loading.first_line(error)) from error
    keep_codec_fp32(model)
    if dtype == torch.qint8:
        quantize_decoder_int8(model)
    model.to(device).eval()
    if packed_linear.available(device, dtype):
        packed_linear.pack_decoder_linears(model, packed_linear.kernel(kernel_cache))
    return LoadedModel(
        model_id=model_id,
        model=model,
        processor=processor,
        device=device,
        dtype=dtype,
        load_seconds=time.perf_counter() - started,
        # An fp32 load memory-maps model.safetensors, and those pages only become resident as generation
        # touches them: the RSS growth alone would under-report, so count at least the weights themselves.
        memory_bytes=max(loading.memory_now(device) - memory_before, loading.tensor_bytes(model)),
    )


def conditions_on_melody(model_id: str) -> bool:
    """Whether ``model_id`` is a MusicGen-Melody checkpoint, known without loading it (so a ``melody_from``
    request for another model is refused before it is queued): a local directory by its config.json's
    ``model_type``, a hub id by its name (every published melody checkpoint has "melody" in it)."""
    if looks_like_path(model_id):
        try:
            config = json.loads((Path(model_id).expanduser() / "config.json").read_text())
        except (OSError, ValueError):
            return False
        return isinstance(config, dict) and config.get("model_type") == "musicgen_melody"
    return "melody" in model_id.rsplit("/", 1)[-1].lower()


def _load_processor(source: str, melody: bool, options: dict[str, Any]) -> Any:
    """The checkpoint's processor; for melody checkpoints its tokenizer.

    The melody processor's feature extractor (chroma of a reference tune) requires torchaudio, whose builds
    lag torch's; the engine computes the chroma itself (``engine.musicgen.chroma``), and the tokenizer alone
    handles the text with the same ``processor(text=[...], padding=True, return_tensors="pt")`` call.
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


def capabilities(
    loaded: LoadedModel,
    max_batch: int,
    *,
    max_duration_s: float = BOUNDS["duration"].high,
    operations: frozenset[str] = frozenset({"generate"}),
) -> Capabilities:
    """What a loaded MusicGen checkpoint offers a scheduler, batching up to ``max_batch`` requests."""
    config = loaded.model.config
    return Capabilities(
        family="musicgen",
        model_id=loaded.model_id,
        operations=operations,
        parameters=request_parameters(),
        max_duration_s=max_duration_s,
        sample_rate=int(config.audio_encoder.sampling_rate),
        channels=int(config.decoder.audio_channels),
        max_batch=max_batch,
    )
