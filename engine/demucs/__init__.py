"""engine.demucs: stems with Demucs v4 (HTDemucs), driven step by step like the generation families.

Names and errors are cheap to import; the separator itself (torch, demucs) loads on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from engine.demucs.errors import SeparationInputError, SeparatorError, UnknownSeparatorError
from engine.demucs.names import DEFAULT_SEPARATOR, LICENSE, PUBLISHED, resolve_separator

if TYPE_CHECKING:
    from engine.demucs.loading import load_separator
    from engine.demucs.separator import (
        DemucsSeparator,
        SeparationRequest,
        SeparationResult,
        SeparatorCapabilities,
    )

_LAZY = {
    "load_separator": "engine.demucs.loading",
    "DemucsSeparator": "engine.demucs.separator",
    "SeparationRequest": "engine.demucs.separator",
    "SeparationResult": "engine.demucs.separator",
    "SeparatorCapabilities": "engine.demucs.separator",
}

__all__ = [
    "DEFAULT_SEPARATOR",
    "LICENSE",
    "PUBLISHED",
    "DemucsSeparator",
    "SeparationInputError",
    "SeparationRequest",
    "SeparationResult",
    "SeparatorCapabilities",
    "SeparatorError",
    "UnknownSeparatorError",
    "load_separator",
    "resolve_separator",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'engine.demucs' has no attribute {name!r}")
