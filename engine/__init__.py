"""engine: MusicGen checkpoints loaded once, generation with progress and cancellation, post-processed audio.

``MusicEngine`` and ``GenerationResult`` are imported on first use: they pull in torch and transformers, which
take seconds, while requests, errors and model names are cheap to import (CLI start-up, argument checks).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from engine.errors import EngineError, ModelNotAvailableError
from engine.models import resolve_model_id
from engine.request import GenerationRequest

if TYPE_CHECKING:
    from engine.engine import GenerationResult, MusicEngine

__all__ = [
    "EngineError",
    "GenerationRequest",
    "GenerationResult",
    "ModelNotAvailableError",
    "MusicEngine",
    "resolve_model_id",
]


def __getattr__(name: str) -> Any:
    if name in ("MusicEngine", "GenerationResult"):
        return getattr(importlib.import_module("engine.engine"), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
