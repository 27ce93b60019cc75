"""History queries: filters, FTS5 ranking, hostile search input, cursor pagination stable under inserts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage import Status, Store

MODEL = "facebook/musicgen-small"


@pytest.fixture
def store(data_home: Path) -> Store:
    return Store(data_home)


def test_full_text_search_ranks_the_best_match_first(store: Store) -> None:
    for prompt in [
        "aggressive techno with a distorted kick",
        "solo piano ballad, slow and sad",
        "lofi hip hop beat with vinyl crackle",
        "lofi piano loop, mellow lofi piano chords",
        "orchestral film score with brass",
    ]:
        store.create(prompt, MODEL, {})
    ranked = [g.prompt for g in store.history(query="lofi piano").items]
    assert ranked[0] == "lofi piano loop, mellow lofi piano chords"
    assert set(ranked[1:]) == {"solo piano ballad, slow and sad", "lofi hip hop beat with vinyl crackle"}
    assert store.history(query="Pianos").items[0].prompt.startswith("lofi piano")  # stemmed
    assert store.history(query="bagpipes").items == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=st.text(max_size=30), after=st.text(max_size=30), with_word=st.booleans())
def test_any_search_text_is_safe(store: Store, before: str, after: str, with_word: bool) -> None:
    if store.count() == 0:
        store.create("lofi piano", MODEL, {})
    found = store.history(query=f"{before} {'piano' if with_word else ''} {after}", limit=5).items
    if with_word:
        assert [g.prompt for g in found] == ["lofi piano"]


@pytest.mark.parametrize(
    ("query", "matches"),
    [('"unterminated', 0), ("piano AND", 1), ("NEAR(piano", 1), ("prompt:piano", 1), ("*", 0), ("-x OR", 1)],
)
def test_fts_syntax_in_a_query_is_plain_text(store: Store, query: str, matches: int) -> None:
    store.create("piano with an x", MODEL, {})
    assert len(store.history(query=query).items) == matches


def test_filters_combine(store: Store) -> None:
    a = store.create("one", "model-a", {})
    b = store.create("two", "model-b", {})
    store.claim("model-b", 1)
    store.fail(b.id, "boom")
    assert [g.id for g in store.history(status="failed").items] == [b.id]
    assert [g.id for g in store.history(model="model-a").items] == [a.id]
    assert store.history(status=Status.FAILED, model="model-a").items == []
    assert [g.id for g in store.history(since=b.created_at).items] == [b.id]
    assert [g.id for g in store.history(until=b.created_at).items] == [a.id]
    later = datetime.now(UTC) + timedelta(hours=1)
    assert store.history(since=later).items == []
    with pytest.raises(ValueError, match="no time zone"):
        store.history(since=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="limit must be 1-500"):
        store.history(limit=0)


def page_through(store: Store, per_page: int, insert_between: int = 0, **filters: object) -> list[str]:
    """Collect every id page by page, inserting `insert_between` new rows after each page."""
    seen: list[str] = []
    cursor = None
    while True:
        page = store.history(limit=per_page, cursor=cursor, **filters)  # type: ignore[arg-type]
        seen += [g.id for g in page.items]
        for _ in range(insert_between):
            store.create("lofi piano inserted while paging", MODEL, {})
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor


def test_listing_pages_are_stable_while_rows_are_inserted(store: Store) -> None:
    before = [store.create(f"lofi piano take {i}", MODEL, {}).id for i in range(23)]
    seen = page_through(store, per_page=5, insert_between=3)
    assert seen == before[::-1]  # newest first, each exactly once, none of the later inserts


def test_search_pages_are_stable_while_rows_are_inserted(store: Store) -> None:
    for i in range(17):
        store.create(f"lofi piano take {i}" + " piano" * (i % 4), MODEL, {})
        store.create(f"unrelated drum solo {i}", MODEL, {})
    unpaged = [g.id for g in store.history(query="lofi piano", limit=500).items]
    assert len(unpaged) == 17
    assert page_through(store, per_page=4, insert_between=2, query="lofi piano") == unpaged


def test_a_cursor_only_fits_its_own_query(store: Store) -> None:
    for i in range(3):
        store.create(f"piano {i}", MODEL, {})
    cursor = store.history(limit=1).next_cursor
    assert cursor is not None
    with pytest.raises(ValueError, match="different filters"):
        store.history(limit=1, cursor=cursor, model="other")
    with pytest.raises(ValueError, match="not one this server issued"):
        store.history(cursor="garbage!")
