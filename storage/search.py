"""Full-text search over prompts: SQLite FTS5 ranked by bm25, elsewhere a portable case-insensitive LIKE.

This is the only module with dialect-specific SQL.
"""

from __future__ import annotations

import re

from sqlalchemy import ColumnElement, Select, case, column, false, func, literal_column, or_, select, table

from storage.models import GenerationRow

MAX_TERMS = 16
_WORD = re.compile(r"\w+")
_fts = table("generations_fts", column("id"))


def terms(query: str) -> list[str]:
    """The words of a user's query, lower-cased and de-duplicated; FTS operators and quotes are dropped."""
    return list(dict.fromkeys(word.lower() for word in _WORD.findall(query)))[:MAX_TERMS]


def fts5_query(words: list[str]) -> str:
    # Each word is quoted, so AND/OR/NEAR/* and column filters in the user's text are plain words.
    return " OR ".join(f'"{word}"' for word in words)


def apply_search(
    statement: Select[GenerationRow], dialect: str, query: str
) -> tuple[Select[GenerationRow], ColumnElement[float]]:
    """Restrict `statement` to prompts matching `query`; return it with a rank (lower = better) to sort by."""
    words = terms(query)
    if not words:
        return statement.where(false()), literal_column("0.0")
    if dialect == "sqlite":
        hits = (
            select(_fts.c.id.label("id"), func.bm25(literal_column("generations_fts")).label("rank"))
            .select_from(_fts)
            .where(literal_column("generations_fts").op("MATCH")(fts5_query(words)))
            .subquery("hits")
        )
        return statement.join(hits, hits.c.id == GenerationRow.id), hits.c.rank
    matches = [GenerationRow.prompt.icontains(word, autoescape=True) for word in words]
    rank = -sum((case((match, 1), else_=0) for match in matches), start=literal_column("0"))
    return statement.where(or_(*matches)), rank
