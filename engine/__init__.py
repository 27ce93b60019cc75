"""engine: model families behind one step-driven ``Backend`` interface (``engine.backend``), and what they
share: requests, audio post-processing, loading helpers, memory measures, errors.

Families live in sub-packages (``engine.musicgen``) and never import each other. Nothing in engine reads the
environment; settings arrive as arguments. ``MusicEngine`` and ``GenerationResult`` are imported on first
use: they pull in torch and transformers (seconds), while requests, errors and model names are cheap to
import (CLI start-up, argument checks).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from engine.errors import EngineError, ModelNotAvailableError
from engine.models import resolve_model_id
from engine.request import GenerationRequest

if TYPE_CHECKING:
    from engine.backend import GenerationResult
    from engine.engine import MusicEngine

__all__ = [
    "EngineError",
    "GenerationRequest",
    "GenerationResult",
    "ModelNotAvailableError",
    "MusicEngine",
    "resolve_model_id",
]


def __getattr__(name: str) -> Any:
    if name == "MusicEngine":
        return importlib.import_module("engine.engine").MusicEngine
    if name == "GenerationResult":
        return importlib.import_module("engine.backend").GenerationResult
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
