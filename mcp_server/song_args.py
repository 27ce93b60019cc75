"""Tool arguments of ACE-Step songs, section edits, remixes, stems and families (MCP and REST share them).

The bounds restate ``engine.acestep.request`` (which checks again, per checkpoint); which family each
generation parameter belongs to is said in its description, and ``mcp_server.derive`` refuses a parameter
of the other family by name.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from engine.acestep.request import (
    KEYS,
    MAX_CROSSFADE_S,
    MAX_LYRICS_CHARS,
    MAX_PROMPT_CHARS,
    VOCAL_LANGUAGES,
)

ACESTEP_ONLY = frozenset({"lyrics", "bpm", "key", "time_signature", "vocal_language", "steps"})

Lyrics = Annotated[
    str | None,
    Field(
        max_length=MAX_LYRICS_CHARS,
        description="ACE-Step only. Lyrics (up to 4,000 characters) with section tags on their own lines "
        "([verse], [chorus], [bridge], ...); empty = instrumental. MusicGen models refuse it.",
    ),
]
SongBpm = Annotated[
    int | None,
    Field(ge=30, le=300, description="ACE-Step only. Tempo, 30-300 bpm; null = the model's choice."),
]
Key = Annotated[
    Literal[KEYS] | None,  # type: ignore[valid-type]  # the closed list of keys, e.g. "A minor"
    Field(description="ACE-Step only. Key and mode, e.g. 'C major', 'F# minor'; null = the model's choice."),
]
TimeSignature = Annotated[
    Literal[2, 3, 4, 6] | None, Field(description="ACE-Step only. Beats per bar: 2, 3, 4 or 6.")
]
VocalLanguage = Annotated[
    Literal[VOCAL_LANGUAGES] | None,  # type: ignore[valid-type]
    Field(description="ACE-Step only. Language of the lyrics (default en)."),
]
Steps = Annotated[
    int | None,
    Field(ge=1, le=100, description="ACE-Step only. Denoising steps, 1-100; null = the checkpoint's."),
]
SectionStart = Annotated[float, Field(ge=0, description="Start of the section to regenerate, in seconds.")]
SectionEnd = Annotated[float, Field(gt=0, description="End of the section to regenerate, in seconds.")]
Crossfade = Annotated[
    float | None,
    Field(
        ge=0,
        le=MAX_CROSSFADE_S,
        description="Cross-fade outside each edge of the section (0-2 s; default 0.1).",
    ),
]
EditPrompt = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=MAX_PROMPT_CHARS,
        description="Style for the new section; null = the source's prompt.",
    ),
]
RemixPrompt = Annotated[
    str, Field(min_length=1, max_length=MAX_PROMPT_CHARS, pattern=r"\S", description="Style of the remix.")
]
Strength = Annotated[
    float,
    Field(
        ge=0,
        le=1,
        description="How closely the remix follows the source's structure (1) or the prompt (towards 0).",
    ),
]
AceStepModel = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=500,
        description="The ACE-Step model that edits (ace-step, ace-step-base, or a hub id); null = the "
        "server's DGX_MUSIC_EDIT_MODEL (default ace-step).",
    ),
]
SeparatorName = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=500,
        description="Demucs separator: htdemucs (drums, bass, other, vocals), htdemucs_6s (+ guitar, "
        "piano) or htdemucs_ft (4 stems, best, 4x slower); null = DGX_MUSIC_SEPARATOR (htdemucs).",
    ),
]
FamilyOf = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=64,
        description="A job_id: list that piece with its whole family (its root and every stem, edit, remix "
        "and continuation derived from it), parents first; the other filters are ignored.",
    ),
]
IncludeMix = Annotated[
    bool,
    Field(description="song arrangement: include the mix track (muted under its stems) or leave it out."),
]
DeleteFamily = Annotated[
    bool,
    Field(
        description="Also delete every generation derived from this one (stems, edits, ...); without it a "
        "generation with children is refused."
    ),
]
