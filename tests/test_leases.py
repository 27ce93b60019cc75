"""Claims with leases on both databases: heartbeats renew, lapsed leases re-queue (then fail), a stale claim
is fenced off (its result discarded, the new owner's file untouched), live workers and the models they
serve, and the queue bound held exactly by 8 concurrent submitters."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from storage import LeaseLost, QueueFull, Status, Store
from storage.leases import Leases

MODEL = "facebook/musicgen-small"
LEASE = 0.3


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, data_home: Path) -> str | None:
    """None = SQLite in the data directory; else a fresh database on the throw-away PostgreSQL."""
    if request.param == "sqlite":
        return None
    pytest.importorskip("psycopg")
    from pg_testing import fresh_database

    server = request.getfixturevalue("server")
    return fresh_database(server, "t_" + request.node.name.lower().replace("[", "_").replace("]", "")[:50])


@pytest.fixture
def store(data_home: Path, database_url: str | None) -> Iterator[Store]:
    store = Store(data_home, database_url)
    yield store
    store.close()


def finish(store: Store, claim: object, seed: int) -> object:
    return store.complete(
        claim.id,  # type: ignore[attr-defined]
        np.full((1, 3200), seed / 100, np.float32),
        32000,
        loudness_lufs=None,
        peak_dbfs=None,
        generation_seconds=0.1,
        device="cpu",
        seed=seed,
        claim=claim,  # type: ignore[arg-type]
    )


def test_a_lapsed_claim_cannot_complete_over_the_new_owner(store: Store) -> None:
    leases = Leases(store)
    job = store.create("fenced", MODEL, {"duration": 1.0})
    [stale] = store.claim(MODEL, 1, worker_id="a", lease_s=LEASE)
    assert stale.worker_id == "a" and stale.attempts == 1 and stale.lease_expires_at is not None
    time.sleep(LEASE + 0.2)
    assert leases.expire(max_attempts=3) == ([job.id], [])
    assert store.get(job.id).status is Status.PENDING and store.get(job.id).worker_id is None
    [fresh] = store.claim(MODEL, 1, worker_id="b", lease_s=30)
    assert fresh.attempts == 2

    assert leases.heartbeat("a", "ready", [stale], 30) == set()  # a cannot renew what it lost
    with pytest.raises(LeaseLost, match="discarded"):
        finish(store, stale, seed=1)
    assert list(store.outputs.rglob("*.wav")) == []  # nothing published under the job's name
    done = finish(store, fresh, seed=2)
    assert done.status is Status.COMPLETED  # type: ignore[attr-defined]
    with pytest.raises(LeaseLost):  # ... nor after the new owner completed
        finish(store, stale, seed=1)
    assert store.open_audio(job.id)  # the file is the owner's: its sha256 still matches
    with pytest.raises(LeaseLost):
        store.fail(job.id, "late failure", claim=stale)


def test_a_restarted_worker_with_the_same_id_is_fenced_by_its_attempt(store: Store) -> None:
    store.create("same worker, two claims", MODEL, {})
    [first] = store.claim(MODEL, 1, worker_id="a", lease_s=LEASE)
    time.sleep(LEASE + 0.2)
    Leases(store).expire(max_attempts=3)
    assert store.claim(MODEL, 1, worker_id="a", lease_s=30, exclude={first.id}) == []  # still dropping it
    [second] = store.claim(MODEL, 1, worker_id="a", lease_s=30)
    with pytest.raises(LeaseLost):
        finish(store, first, seed=1)
    assert finish(store, second, seed=2).status is Status.COMPLETED  # type: ignore[attr-defined]


def test_heartbeats_keep_a_claim_and_lapsed_ones_fail_after_the_attempt_limit(store: Store) -> None:
    leases = Leases(store)
    kept = store.create("renewed", MODEL, {})
    dropped = store.create("abandoned", MODEL, {})
    claims = store.claim(MODEL, 2, worker_id="a", lease_s=LEASE)
    for _ in range(4):
        time.sleep(LEASE / 2)
        assert leases.heartbeat("a", "ready", [c for c in claims if c.id == kept.id], LEASE) == {kept.id}
        leases.expire(max_attempts=1)
    assert store.get(kept.id).status is Status.PROCESSING
    failed = store.get(dropped.id)
    assert failed.status is Status.FAILED and failed.error is not None
    assert "stopped renewing the lease" in failed.error and "attempts" in failed.error


def test_recovery_beside_live_workers_takes_back_only_what_is_not_held(store: Store) -> None:
    held, own, lapsed = (store.create(name, MODEL, {}) for name in ("held", "own", "lapsed"))
    store.claim(MODEL, 1, worker_id="b", lease_s=60)
    store.claim(MODEL, 1, worker_id="a", lease_s=60)  # a's earlier run, which crashed
    store.claim(MODEL, 1, worker_id="c", lease_s=LEASE)
    time.sleep(LEASE + 0.2)
    report = store.recover(2, shared=True, worker_id="a")
    assert sorted(report.requeued) == sorted([own.id, lapsed.id])
    assert store.get(held.id).status is Status.PROCESSING and store.get(held.id).worker_id == "b"


def test_live_workers_and_the_models_they_serve(store: Store) -> None:
    leases = Leases(store)
    leases.register("gpu-a", [MODEL], "ready")
    leases.register("gpu-b", ["*"], "loading x")
    live = {worker.id: worker for worker in leases.live_workers(within_s=5)}
    assert set(live) == {"gpu-a", "gpu-b"}
    assert live["gpu-a"].serves(MODEL) and not live["gpu-a"].serves("facebook/musicgen-medium")
    assert live["gpu-b"].serves("anything") and live["gpu-b"].state == "loading x"
    time.sleep(0.3)
    leases.heartbeat("gpu-a", "ready", [], 30)
    assert [worker.id for worker in leases.live_workers(within_s=0.25)] == ["gpu-a"]
    leases.unregister("gpu-a")
    assert leases.live_workers(within_s=5) == [live["gpu-b"]] or [
        worker.id for worker in leases.live_workers(within_s=5)
    ] == ["gpu-b"]


@pytest.mark.parametrize("batch", [1, 3])
def test_eight_concurrent_submitters_never_overshoot_the_queue_bound(
    data_home: Path, database_url: str | None, batch: int
) -> None:
    limit, submitters, tries = 20, 8, 6
    Store(data_home, database_url).close()  # migrate once, before the race
    stores = [Store(data_home, database_url) for _ in range(submitters)]
    start = threading.Barrier(submitters)
    accepted: list[int] = []
    refused: list[int] = []
    lock = threading.Lock()

    def submit(store: Store) -> None:
        start.wait()
        for i in range(tries):
            try:
                store.create_many(MODEL, [(f"take {i}", {})] * batch, max_pending=limit)
                outcome = accepted
            except QueueFull:
                outcome = refused
            with lock:
                outcome.append(batch)

    threads = [threading.Thread(target=submit, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pending = stores[0].count(Status.PENDING)
    for store in stores:
        store.close()
    assert pending == sum(accepted) <= limit
    assert pending > limit - batch  # refusals came only once the queue was (all but) full
    assert len(accepted) + len(refused) == submitters * tries
