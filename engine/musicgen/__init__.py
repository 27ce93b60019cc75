"""The MusicGen family: checkpoints loaded from the hub layout, decoded by our own batching step.

- ``loading``: checkpoint, processor, device, dtype (int8 decoder on CPU);
- ``decode``, ``decode_state``, ``kv_cache``, ``sampling``: one decode step over slots, each at its own
  position; ``cuda_graphs``: that step captured per batch-size and length bucket;
- ``backend``: ``MusicgenBackend``, continuous batching behind ``engine.backend.Backend``; ``requests``: what
  it takes, validated; ``admission``: buffer shapes and the memory check; ``rows``: slot bookkeeping;
- ``prefix``: MusicGen-Melody's conditioning (chroma and text) as a prefix of a slot's decoder positions;
- ``reference``: transformers' ``generate`` (the benchmarks' baseline, tests' reference, backend "reference");
- ``memory``: bytes per slot from the model's config; ``checkpoints``: random checkpoints for tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import EngineError

if TYPE_CHECKING:
    from engine.musicgen.backend import MusicgenBackend
    from engine.musicgen.reference import ReferenceBackend

BACKENDS = ("auto", "batched", "reference")


def load_backend(
    model_id: str,
    *,
    device: str | None = None,
    dtype: str | None = None,
    backend: str = "auto",
    max_batch: int = 8,
    cuda_graphs: bool = True,
    local_files_only: bool | None = None,
    kernel_cache: Path | None = None,
) -> MusicgenBackend | ReferenceBackend:
    """Load ``model_id`` and wrap it. "auto" and "batched": the batching backend (text and melody
    checkpoints); "reference": transformers' ``generate``, one text-conditioned request at a time."""
    from engine import loading
    from engine.musicgen import loading as musicgen_loading
    from engine.musicgen.backend import MusicgenBackend
    from engine.musicgen.reference import ReferenceBackend

    if backend not in BACKENDS:
        raise EngineError(f"backend {backend!r} is not supported; use one of {', '.join(BACKENDS)}")
    torch_device = loading.select_device(device)
    loaded = musicgen_loading.load(
        model_id, torch_device, loading.select_dtype(torch_device, dtype), local_files_only, kernel_cache
    )
    if backend == "reference":
        return ReferenceBackend(loaded)
    return MusicgenBackend(loaded, max_batch=max_batch, cuda_graphs=cuda_graphs)
