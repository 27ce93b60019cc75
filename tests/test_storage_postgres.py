"""The same Store on PostgreSQL (DGX_MUSIC_DATABASE_URL): portable SQL, LIKE search, SKIP LOCKED claims.

Runs a throw-away PostgreSQL server from the local binaries; skipped where there are none or no psycopg.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, text

from storage import IllegalTransition, Status, Store, db
from storage.models import Base, include_object

pytest.importorskip("psycopg")
MODEL = "facebook/musicgen-small"


@pytest.fixture
def store(server: str, data_home: Path, request: pytest.FixtureRequest) -> Iterator[Store]:
    name = "t_" + request.node.name.lower().replace("[", "_").replace("]", "")[:50]
    admin = create_engine(server.format(db="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    store = Store(data_home, server.format(db=name))
    yield store
    store.close()
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE "{name}"'))
    admin.dispose()


def test_migrations_reach_head_and_agree_with_the_models(store: Store) -> None:
    assert db.current_revision(store.engine) == db.head_revision()
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"include_object": include_object})
        assert compare_metadata(context, Base.metadata) == []
    assert not (store.home / db.DATABASE_FILE).exists()


def test_a_job_lifecycle(store: Store) -> None:
    job = store.create("lofi piano at night", MODEL, {"duration": 1.0, "seed": 2**32 - 1})
    other = store.create("drum solo", MODEL, {})
    assert [store.queue_position(job.id), store.queue_position(other.id)] == [1, 2]
    [claimed] = store.claim(None, 1)
    assert claimed.id == job.id and claimed.params["seed"] == 2**32 - 1
    with pytest.raises(IllegalTransition):
        store.requeue(other.id)
    done = store.complete(
        job.id,
        np.zeros((1, 3200), np.float32),
        32000,
        loudness_lufs=None,
        peak_dbfs=None,
        generation_seconds=0.2,
        device="cpu",
        seed=5,
    )
    assert store.open_audio(done.id)[:4] == b"RIFF"
    assert [g.id for g in store.history(status=Status.COMPLETED).items] == [job.id]
    assert store.history(query="LoFi  piano_").items[0].prompt == "lofi piano at night"
    assert store.history(query="piano", model="other").items == []
    report = store.recover()
    assert report.pending == [other.id] and report.quarantined == []
    store.delete(job.id)
    assert store.count() == 1


def test_pages_and_search_rank(store: Store) -> None:
    ids = [store.create(f"take {i} piano" + (" lofi" if i % 3 == 0 else ""), MODEL, {}).id for i in range(11)]
    seen, cursor = [], None
    while True:
        page = store.history(limit=4, cursor=cursor)
        seen += [g.id for g in page.items]
        store.create("inserted while paging", MODEL, {})
        if not (cursor := page.next_cursor):
            break
    assert seen == ids[::-1]
    ranked = store.history(query="lofi piano", limit=20).items
    assert [g.id for g in ranked[:4]] == [ids[9], ids[6], ids[3], ids[0]]  # both words, newest first
    assert len(ranked) == 11


def test_claims_are_exclusive_between_threads(store: Store) -> None:
    created = {store.create(f"job {i}", MODEL, {}).id for i in range(60)}
    claimed: Counter[str] = Counter()
    lock = threading.Lock()

    def worker() -> None:
        while jobs := store.claim(MODEL, 2):
            with lock:
                claimed.update(job.id for job in jobs)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(claimed) == created and max(claimed.values()) == 1
