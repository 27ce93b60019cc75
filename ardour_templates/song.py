"""The "song" arrangement: a song, its stems, its edits and its variations, aligned on one timeline.

Stems and variations start at 0 with the song; the song itself (role "mix") is muted while stems play it,
or left out. An edit (a generation that regenerated one section of the song, keeping its timing) becomes a
region of just that section, at the section's place, with markers at its bounds. Variations share a route
group, so one click mutes or solos them all.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import InvalidArgumentError
from .models import Clip
from .session_xml import clean_text

ROLE = re.compile(r"mix|edit|variation|stem:[a-z0-9][a-z0-9_-]{0,31}")
ROLE_HELP = "use 'mix', 'stem:NAME' (e.g. 'stem:drums'), 'edit' or 'variation'"
_ORDER = {"mix": 0, "stem": 1, "edit": 2, "variation": 3}
DEFAULT_VARIATION_GROUP = "Variations"


@dataclass(frozen=True)
class Placement:
    """Where a clip's region goes, in session samples."""

    start: int
    source_offset: int
    length: int
    muted: bool = False
    group: str | None = None


def kind(role: str) -> str:
    return role.split(":", 1)[0]


def check_roles(clips: Sequence[Clip]) -> None:
    """Any arrangement: roles are well-formed; a section belongs to an edit."""
    for clip in clips:
        if clip.role is not None and not ROLE.fullmatch(clip.role):
            raise InvalidArgumentError(f"clip {clip.name!r}: role {clip.role!r} is not a role; {ROLE_HELP}")
        if clip.section is not None:
            if clip.role != "edit":
                raise InvalidArgumentError(
                    f"clip {clip.name!r}: section is for role 'edit' only (role is {clip.role!r})"
                )
            start, end = clip.section
            if not (math.isfinite(start) and math.isfinite(end) and 0.0 <= start < end <= 86_400.0):
                raise InvalidArgumentError(
                    f"clip {clip.name!r}: section must be (start_s, end_s) with 0 <= start_s < end_s "
                    f"(got {clip.section})"
                )


def check_group_name(name: str) -> str:
    cleaned = clean_text(name).strip()[:64]
    if not cleaned:
        raise InvalidArgumentError("variation_group must be a non-empty name, e.g. 'Variations'")
    return cleaned


def select_clips(clips: Sequence[Clip], include_mix: bool) -> list[Clip]:
    """The clips that become tracks, in track order: the mix, stems, edits, variations (each as given)."""
    unnamed = [clip.name for clip in clips if clip.role is None]
    if unnamed:
        raise InvalidArgumentError(
            f"arrangement 'song' needs a role on every clip; missing on {unnamed}: {ROLE_HELP}"
        )
    roles = [clip.role or "" for clip in clips]
    if roles.count("mix") > 1:
        raise InvalidArgumentError(
            "arrangement 'song' takes one clip with role 'mix' (the song), not several"
        )
    stems = [role for role in roles if kind(role) == "stem"]
    if duplicated := sorted({role for role in stems if stems.count(role) > 1}):
        raise InvalidArgumentError(f"arrangement 'song': each stem once; {duplicated} appear more than once")
    if "mix" not in roles and not stems:
        raise InvalidArgumentError(
            "arrangement 'song' needs the song: a clip with role 'mix', or its stems ('stem:NAME')"
        )
    if not include_mix and not stems:
        raise InvalidArgumentError("include_mix=False leaves the song out, so it needs stems ('stem:NAME')")
    for clip in clips:
        if clip.role == "edit" and clip.section is None:
            raise InvalidArgumentError(
                f"clip {clip.name!r}: role 'edit' needs section=(start_s, end_s), the regenerated part"
            )
    kept = [clip for clip in clips if include_mix or clip.role != "mix"]
    return sorted(kept, key=lambda clip: _ORDER[kind(clip.role or "")])


def layout(
    clips: Sequence[Clip], frames: Sequence[int], names: Sequence[str], rate: int, variation_group: str
) -> tuple[list[Placement], list[tuple[str, int]]]:
    """Each clip's placement and the markers at the edits' section bounds."""
    has_stems = any(kind(clip.role or "") == "stem" for clip in clips)
    placements, markers = [], []
    for clip, length, name in zip(clips, frames, names, strict=True):
        if clip.role == "mix":
            placements.append(Placement(0, 0, length, muted=has_stems))  # the stems play the song
        elif clip.role == "variation":
            placements.append(Placement(0, 0, length, group=variation_group))
        elif clip.role == "edit" and clip.section is not None:
            start, end = round(clip.section[0] * rate), round(clip.section[1] * rate)
            if end > length + 1:  # one sample of rounding slack
                raise InvalidArgumentError(
                    f"clip {clip.name!r}: its section ends at {clip.section[1]:g} s but the clip lasts "
                    f"{length / rate:.3f} s; pass the section in the clip's own time"
                )
            end = min(end, length)
            placements.append(Placement(start, start, end - start))
            markers += [(f"{name} start", start), (f"{name} end", end)]
        else:
            placements.append(Placement(0, 0, length))
    return placements, markers
