"""Opaque pagination cursors.

A listing pages by keyset (created_at, id): new rows sort before the first page and never shift later ones.
A search pages by offset in rank order over a snapshot: rows created after its first page are left out, so
inserts cannot shift it either (bm25 scores drift as the corpus grows, so a keyset on them would not be
stable).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Cursor:
    filters: str  # digest of the filters the cursor belongs to
    created_at: datetime | None = None  # listing: the last row's key
    id: str | None = None
    offset: int | None = None  # search: rows already returned
    snapshot: datetime | None = None  # search: newest created_at visible when the first page was read


def filters_digest(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def encode(cursor: Cursor) -> str:
    fields = {
        "f": cursor.filters,
        "c": cursor.created_at.isoformat() if cursor.created_at else None,
        "i": cursor.id,
        "o": cursor.offset,
        "s": cursor.snapshot.isoformat() if cursor.snapshot else None,
    }
    raw = json.dumps({k: v for k, v in fields.items() if v is not None}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode(token: str, filters: str) -> Cursor:
    """Parse a cursor made by `encode` for the same filters; anything else is an actionable ValueError."""
    try:
        fields = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        cursor = Cursor(
            filters=fields["f"],
            created_at=datetime.fromisoformat(fields["c"]) if "c" in fields else None,
            id=fields.get("i"),
            offset=fields.get("o"),
            snapshot=datetime.fromisoformat(fields["s"]) if "s" in fields else None,
        )
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(
            f"cursor {token[:40]!r} is not one this server issued: pass next_cursor from a previous page"
        ) from error
    if cursor.filters != filters:
        raise ValueError(
            "cursor belongs to a query with different filters: repeat that query's filters, or start again "
            "without a cursor"
        )
    return cursor
