"""Several processes and threads on one SQLite file: no lost row, no lock error, no job claimed twice."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import event

from storage import Status, Store

MODEL = "facebook/musicgen-small"


def write_rows(home: str, worker: int, count: int) -> list[str]:
    # Every process opens a brand-new home at the same moment, so migrations race too.
    store = Store(Path(home))
    return [store.create(f"worker {worker} row {i}", MODEL, {"seed": i}).id for i in range(count)]


def claim_until_empty(home: str, batch: int) -> list[str]:
    store = Store(Path(home))
    taken: list[str] = []
    while jobs := store.claim(None, batch):
        taken += [job.id for job in jobs]
        for job in jobs:
            store.fail(job.id, "done")  # another write between claims, as a worker would make
    return taken


def test_four_processes_write_200_rows_each(data_home: Path) -> None:
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.starmap(write_rows, [(str(data_home), w, 200) for w in range(4)])
    ids = [gid for rows in results for gid in rows]
    assert len(set(ids)) == 800
    store = Store(data_home)
    assert store.count(Status.PENDING) == 800
    stored = {g.id for g in store.history(limit=500).items}
    stored |= {g.id for g in store.history(limit=500, cursor=store.history(limit=500).next_cursor).items}
    assert stored == set(ids)
    with sqlite3.connect(data_home / "dgx-music.db") as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_claim_is_exclusive_across_processes(data_home: Path) -> None:
    store = Store(data_home)
    created = {store.create(f"job {i}", MODEL, {}).id for i in range(120)}
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.starmap(claim_until_empty, [(str(data_home), 3)] * 4)
    claimed = Counter(gid for taken in results for gid in taken)
    assert set(claimed) == created
    assert max(claimed.values()) == 1
    assert sum(1 for taken in results if taken) >= 2  # the workers really overlapped


def test_threads_share_one_store(data_home: Path) -> None:
    store = Store(data_home)
    created = [store.create(f"job {i}", MODEL, {}).id for i in range(60)]
    claimed: list[str] = []
    lock = threading.Lock()

    def worker(_: int) -> None:
        while jobs := store.claim(MODEL, 2):
            with lock:
                claimed.extend(job.id for job in jobs)
            store.history(query="job", limit=5)  # readers interleave with writers

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, range(8)))
    assert sorted(claimed) == sorted(created)


def test_writes_take_the_lock_up_front_and_reads_do_not(data_home: Path) -> None:
    store = Store(data_home)
    begins: list[str] = []

    @event.listens_for(store.engine, "before_cursor_execute")
    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.startswith("BEGIN"):
            begins.append(statement)

    job = store.create("x", MODEL, {})
    store.get(job.id)
    assert begins == ["BEGIN IMMEDIATE", "BEGIN DEFERRED"]


def test_a_long_foreign_write_lock_is_waited_out(data_home: Path) -> None:
    store = Store(data_home)
    blocker = sqlite3.connect(data_home / "dgx-music.db", isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    release = threading.Timer(1.0, blocker.rollback)
    release.start()
    assert store.create("waits for the lock", MODEL, {}).status is Status.PENDING
    release.join()
    blocker.close()
