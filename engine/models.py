"""Short names for the published MusicGen checkpoints, and the rule that tells hub ids from local paths."""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL = "facebook/musicgen-small"

_PUBLISHED = (
    "small",
    "medium",
    "large",
    "melody",
    "melody-large",
    "stereo-small",
    "stereo-medium",
    "stereo-large",
    "stereo-melody",
    "stereo-melody-large",
)

# "small" and "musicgen-small" both name facebook/musicgen-small.
ALIASES: dict[str, str] = {
    **{name: f"facebook/musicgen-{name}" for name in _PUBLISHED},
    **{f"musicgen-{name}": f"facebook/musicgen-{name}" for name in _PUBLISHED},
}


def resolve_model_id(name: str) -> str:
    """Map an alias to its hub id; hub ids and paths pass through unchanged (aliases are case-insensitive)."""
    stripped = name.strip()
    return ALIASES.get(stripped.lower(), stripped)


def looks_like_path(model_id: str) -> bool:
    """True for anything meant as a directory: it exists, or is written as a path (``/``, ``./``, ``~``).

    A hub id ``owner/name`` also contains a slash, so a relative ``a/b`` that does not exist is a hub id.
    """
    return Path(model_id).expanduser().exists() or model_id.startswith(("/", ".", "~"))
