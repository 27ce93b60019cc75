"""The published separators and how a `model` argument names one (cheap to import: no torch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.demucs.errors import UnknownSeparatorError

DEFAULT_SEPARATOR = "htdemucs"
LICENSE = "MIT"  # Demucs code and weights


@dataclass(frozen=True)
class PublishedSeparator:
    name: str
    repo_id: str  # the Hugging Face repository demucs 4.1 loads it from
    sources: tuple[str, ...]
    description: str


FOUR_STEMS = ("drums", "bass", "other", "vocals")
SIX_STEMS = ("drums", "bass", "other", "vocals", "guitar", "piano")

PUBLISHED: dict[str, PublishedSeparator] = {
    s.name: s
    for s in (
        PublishedSeparator(
            "htdemucs", "adefossez/HTDemucs", FOUR_STEMS, "Hybrid Transformer Demucs, 4 stems"
        ),
        PublishedSeparator("htdemucs_6s", "adefossez/HTDemucs-6s", SIX_STEMS, "6 stems (+ guitar, piano)"),
        PublishedSeparator(
            "htdemucs_ft",
            "adefossez/HTDemucs-ft",
            FOUR_STEMS,
            "4 fine-tuned models, one per stem: best, 4x slower",
        ),
    )
}


@dataclass(frozen=True)
class SeparatorLocation:
    """Where a separator's files are: a published name (Hugging Face cache) or a local directory."""

    name: str  # the published name, or the directory's bag name
    published: PublishedSeparator | None
    directory: Path | None


def resolve_separator(model: str | Path) -> SeparatorLocation:
    """A published name (case-insensitive) or a directory holding `<name>.yaml` and `<sig>.safetensors`."""
    text = str(model).strip()
    if (found := PUBLISHED.get(text.lower())) is not None:
        return SeparatorLocation(found.name, found, None)
    path = Path(text).expanduser()
    if path.is_dir():
        return SeparatorLocation(path.name, None, path)
    names = ", ".join(PUBLISHED)
    raise UnknownSeparatorError(
        f"model={text!r} is not a separator: use one of {names}, or a local directory holding a demucs "
        "model (<name>.yaml listing the models and one <sig>.safetensors per model)"
    )
