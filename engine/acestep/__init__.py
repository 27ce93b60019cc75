"""engine.acestep: ACE-Step 1.5 songs (lyrics, 48 kHz stereo, section edits) behind the engine's ``Backend``.

Names, aliases and licences (``models``) and request validation (``request``) are cheap to import; the
backend, loading and checkpoint builder pull in torch and diffusers and are imported on first use.

    backend = AceStepBackend.load("ace-step", device="cuda", dtype=torch.bfloat16, local_files_only=True)
    request = backend.validate("generate", {"prompt": "...", "lyrics": "[verse]\\n...", "duration": 60})
    # then the scheduler's can_admit / admit / step loop, or engine.backend.run_to_completion
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from engine.acestep.models import (
    ALIASES,
    BASE,
    PUBLISHED,
    TURBO,
    Licence,
    licence_of,
    pull_command,
    resolve_model_id,
)

if TYPE_CHECKING:
    from engine.acestep.backend import AceStepBackend
    from engine.acestep.checkpoints import build_random_checkpoint

__all__ = [
    "ALIASES",
    "BASE",
    "PUBLISHED",
    "TURBO",
    "AceStepBackend",
    "Licence",
    "build_random_checkpoint",
    "licence_of",
    "pull_command",
    "resolve_model_id",
]

_LAZY = {"AceStepBackend": "engine.acestep.backend", "build_random_checkpoint": "engine.acestep.checkpoints"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'engine.acestep' has no attribute {name!r}")
