"""Load an ACE-Step 1.5 checkpoint in the diffusers layout: a hub id (or alias) or a local directory.

Nothing here reads the environment: whether the hub may be contacted is the ``local_files_only`` argument
(the application passes its offline setting). A checkpoint that is not there, offline or online, raises one
``ModelNotAvailableError`` naming the model and the ``dgx-music pull`` command that fetches it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.acestep.models import pull_command, resolve_model_id
from engine.errors import EngineError, ModelNotAvailableError
from engine.models import looks_like_path

log = logging.getLogger(__name__)

PIPELINE_CLASS = "AceStepPipeline"


@dataclass(frozen=True)
class LoadedPipeline:
    model_id: str
    pipeline: Any  # diffusers.AceStepPipeline, in eval mode on ``device``
    device: torch.device
    dtype: torch.dtype
    load_seconds: float
    memory_bytes: int  # weights and buffers of every component


def _not_available(model_id: str, reason: str) -> ModelNotAvailableError:
    if looks_like_path(model_id):
        where = f"no ACE-Step checkpoint in the diffusers layout at {Path(model_id).expanduser().resolve()}"
    else:
        where = "not in the local Hugging Face cache" if "offline" in reason else "could not be fetched"
    return ModelNotAvailableError(
        f"model {model_id!r} is not available: {where} ({reason}); run `{pull_command(model_id)}` on a "
        "connected machine, or point the model setting at a local diffusers-layout directory"
    )


def _check_local(model_id: str) -> Path:
    directory = Path(model_id).expanduser()
    index = directory / "model_index.json"
    if not index.is_file():
        raise _not_available(model_id, "model_index.json missing")
    try:
        class_name = json.loads(index.read_text()).get("_class_name")
    except (OSError, ValueError) as error:
        raise _not_available(model_id, f"model_index.json unreadable: {error}") from None
    if class_name != PIPELINE_CLASS:
        raise EngineError(
            f"model {model_id!r} is a {class_name} checkpoint, not ACE-Step ({PIPELINE_CLASS}); use "
            "ace-step, ace-step-base or another ACE-Step 1.5 diffusers checkpoint"
        )
    return directory


def load(model: str, device: torch.device, dtype: torch.dtype, *, local_files_only: bool) -> LoadedPipeline:
    """Load ``model`` (alias, hub id or local directory) onto ``device`` in ``dtype``, in eval mode.

    ``local_files_only``: never contact the hub; a checkpoint missing from the cache is then an error.
    """
    from diffusers import AceStepPipeline
    from diffusers.utils import logging as diffusers_logging
    from huggingface_hub.errors import HfHubHTTPError

    model_id = resolve_model_id(model)
    source: str | Path = _check_local(model_id) if looks_like_path(model_id) else model_id
    # stdio MCP owns stdout: no progress bars, and library chatter only at error level.
    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    started = time.perf_counter()
    try:
        pipeline = AceStepPipeline.from_pretrained(source, dtype=dtype, local_files_only=local_files_only)
    except (OSError, HfHubHTTPError) as error:
        # diffusers and huggingface_hub report "not cached and offline", an unknown repo and a missing file
        # as OSError subclasses: each means the model is not there.
        reason = "offline and not cached" if local_files_only else _first_line(error)
        raise _not_available(model_id, reason) from error
    pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    modules = [module for module in pipeline.components.values() if isinstance(module, torch.nn.Module)]
    for module in modules:
        module.eval()
    memory = sum(t.numel() * t.element_size() for m in modules for t in (*m.parameters(), *m.buffers()))
    loaded = LoadedPipeline(model_id, pipeline, device, dtype, time.perf_counter() - started, memory)
    log.info(
        "loaded %s on %s in %s: %.1f s, %.2f GB", model_id, device, dtype, loaded.load_seconds, memory / 1e9
    )
    return loaded


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:200]
