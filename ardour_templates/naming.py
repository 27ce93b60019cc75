"""Names Ardour and the file system can both live with, still readable by the person who chose them."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from .errors import InvalidNameError

# Session names become directory and file names: no path separators, nothing Windows reserves, and no
# ':' / ';' which Ardour rejects in session names.
_PATH_FORBIDDEN = re.compile(r'[/\\:;*?"<>|]')
# Track names become port names ("Track/audio_out 1", "client:port"): keep ':' and slashes out of them.
_PORT_FORBIDDEN = re.compile(r"[/\\:]")
_DOTS = re.compile(r"\.{2,}")
_SPACES = re.compile(r"\s+")
_EDGE_JUNK = " .-_"
# Bidirectional overrides can make a name display differently from what is on disk.
_BIDI = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F)}

SESSION_NAME_MAX_BYTES = 120
TRACK_NAME_MAX_CHARS = 64
RESERVED_ROUTE_NAMES = frozenset({"master", "monitor", "click", "auditioner"})


def _clean(name: str, forbidden: re.Pattern[str]) -> str:
    text = unicodedata.normalize("NFC", name)
    text = "".join(" " if unicodedata.category(ch) == "Cc" or ch in _BIDI else ch for ch in text)
    text = forbidden.sub("-", text)
    text = _DOTS.sub(".", text)
    return _SPACES.sub(" ", text).strip(_EDGE_JUNK)


def _truncate_utf8(text: str, max_bytes: int) -> str:
    return text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore").rstrip(_EDGE_JUNK)


def sanitize_session_name(name: str) -> str:
    """One path component: no separators, no '..', no control characters, no leading dot, <= 120 bytes."""
    cleaned = _truncate_utf8(_clean(name, _PATH_FORBIDDEN), SESSION_NAME_MAX_BYTES)
    if not cleaned:
        raise InvalidNameError(
            f"session_name {name!r} has no usable characters once path separators, dots and control "
            "characters are removed; pass a name with letters or digits, e.g. 'my song'"
        )
    return cleaned


def numbered(name: str, n: int) -> str:
    """The n-th alternative of a name, in the style file managers use: 'NAME (2)'."""
    return name if n == 1 else f"{name} ({n})"


def _dedupe(names: Iterable[str], taken: set[str]) -> list[str]:
    """Each name, numbered 'NAME (2)' where needed so none repeats (case-insensitively) or hits `taken`."""
    result: list[str] = []
    for base in names:
        n = 1
        while numbered(base, n).casefold() in taken:
            n += 1
        result.append(numbered(base, n))
        taken.add(result[-1].casefold())
    return result


def unique_track_names(names: Iterable[str]) -> list[str]:
    """Sanitised, unique route names; Ardour refuses two routes with one name (and 'Master' is taken)."""
    cleaned = [
        _clean(raw, _PORT_FORBIDDEN)[:TRACK_NAME_MAX_CHARS].rstrip(_EDGE_JUNK) or f"Track {index}"
        for index, raw in enumerate(names, start=1)
    ]
    return _dedupe(cleaned, set(RESERVED_ROUTE_NAMES))


def audio_file_names(track_names: Iterable[str]) -> list[str]:
    """Unique, conservative WAV names (letters, digits, space, '-', '_', '(', ')') for the tracks' audio."""
    stems = ["".join(ch if ch.isalnum() or ch in " -_()" else "_" for ch in name) for name in track_names]
    return [f"{stem}.wav" for stem in _dedupe(stems, set())]
