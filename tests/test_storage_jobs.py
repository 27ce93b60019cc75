"""The job state machine, the queue, and row lifecycle on a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from storage import AmbiguousId, Generation, IllegalTransition, NotFound, Status, Store
from storage.models import GenerationRow

PARAMS = {
    "duration": 2.0,
    "seed": None,
    "temperature": 1.0,
    "top_k": 250,
    "top_p": 0.0,
    "guidance_scale": 3.0,
}
MODEL = "facebook/musicgen-small"


@pytest.fixture
def store(data_home: Path) -> Store:
    return Store(data_home)


def tone(seconds: float = 0.25, rate: int = 32000, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return np.tile(0.5 * np.sin(2 * np.pi * 440 * t), (channels, 1)).astype(np.float32)


def finish(store: Store, job: Generation) -> Generation:
    return store.complete(
        job.id,
        tone(),
        32000,
        loudness_lufs=-14.0,
        peak_dbfs=-6.0,
        generation_seconds=0.5,
        device="cpu",
        seed=7,
    )


def test_create_records_a_pending_job_with_its_params(store: Store) -> None:
    job = store.create("warm lofi piano", MODEL, PARAMS | {"loudness_lufs": -14.0}, {"client": "test"})
    assert job.status is Status.PENDING
    assert job.params == PARAMS | {"loudness_lufs": -14.0}
    assert job.metadata == {"client": "test"}
    assert (job.file_path, job.attempts, job.started_at) == (None, 0, None)
    assert store.get(job.id) == job


@pytest.mark.parametrize(
    ("prompt", "model", "params", "message"),
    [
        ("  ", MODEL, {}, "prompt"),
        ("ok", "", {}, "model_name"),
        ("ok", MODEL, {"steps": 3}, "unknown params ['steps']"),
    ],
)
def test_create_rejects_bad_input_naming_the_argument(
    store: Store, prompt: str, model: str, params: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        store.create(prompt, model, params)


def test_the_happy_path_fills_results_and_timings(store: Store) -> None:
    job = store.create("warm lofi piano", MODEL, PARAMS)
    [claimed] = store.claim(MODEL, 4)
    assert (claimed.status, claimed.attempts) == (Status.PROCESSING, 1)
    assert claimed.started_at is not None
    done = finish(store, job)
    assert done.status is Status.COMPLETED
    assert done.params["seed"] == 7  # the seed used replaces the requested None
    assert (done.sample_rate, done.channels, done.duration_s, done.device) == (32000, 1, 0.25, "cpu")
    assert done.file_path == store.home / "outputs" / done.created_at.strftime("%Y/%m/%d") / f"{job.id}.wav"
    assert done.file_path.stat().st_size == done.file_size
    assert done.completed_at is not None and done.completed_at >= claimed.started_at


def test_legal_transitions(store: Store) -> None:
    cancelled_pending = store.create("a", MODEL, {})
    assert store.cancel(cancelled_pending.id).status is Status.CANCELLED

    for action, expected in [
        (lambda gid: store.fail(gid, "out of memory"), Status.FAILED),
        (store.cancel, Status.CANCELLED),
        (store.requeue, Status.PENDING),
    ]:
        job = store.create("b", MODEL, {})
        store.claim(MODEL, 1)
        after = action(job.id)
        assert after.status is expected

    failed = store.history(status="failed").items[0]
    assert failed.error == "out of memory"
    requeued = store.history(status=Status.PENDING).items[0]
    assert (requeued.attempts, requeued.started_at) == (1, None)  # requeue increments nothing
    assert store.claim(MODEL, 1)[0].attempts == 2


# The contract in docs/ARCHITECTURE.md, written out independently of storage.models.
LEGAL = {
    ("pending", "processing"),
    ("pending", "cancelled"),
    ("processing", "completed"),
    ("processing", "failed"),
    ("processing", "cancelled"),
    ("processing", "pending"),
}


def drive(store: Store, job: Generation, target: str) -> None:
    """Ask for `target` the way the service does."""
    if target == "processing":
        assert [g.id for g in store.claim(MODEL, 1)] == [job.id]
        return
    {
        "completed": lambda: finish(store, job),
        "failed": lambda: store.fail(job.id, "boom"),
        "cancelled": lambda: store.cancel(job.id),
        "pending": lambda: store.requeue(job.id),
    }[target]()


@pytest.mark.parametrize("source", [s.value for s in Status])
@pytest.mark.parametrize("target", [s.value for s in Status])
def test_each_transition_is_legal_exactly_as_the_contract_says(
    store: Store, source: str, target: str
) -> None:
    job = store.create("c", MODEL, {})
    path = {"pending": [], "processing": ["processing"], "cancelled": ["cancelled"]}.get(
        source, ["processing", source]
    )
    for step in path:
        drive(store, job, step)
    before = store.get(job.id)
    assert before.status == source
    if (source, target) in LEGAL:
        drive(store, job, target)
        assert store.get(job.id).status == target
        return
    if target == "processing":
        assert store.claim(MODEL, 1) == []  # claim() only ever takes pending jobs
    else:
        with pytest.raises(IllegalTransition, match=f"is {source}; it cannot become {target}"):
            drive(store, job, target)
    assert store.get(job.id) == before
    wavs = list((store.home / "outputs").rglob("*.wav"))
    assert wavs == ([before.file_path] if before.file_path else [])
    assert not (store.home / "quarantine").exists()


def test_unknown_ids_raise_not_found(store: Store) -> None:
    for call in (
        store.get,
        store.cancel,
        store.requeue,
        store.delete,
        store.queue_position,
        store.open_audio,
    ):
        with pytest.raises(NotFound, match="no generation with id 'nope'"):
            call("nope")


def test_get_accepts_a_unique_prefix_of_eight_or_more_characters(store: Store) -> None:
    job = store.create("prefix", MODEL, {})
    assert store.get(job.id[:8]).id == job.id and store.get(job.id).id == job.id
    with pytest.raises(NotFound, match="8\\+ characters"):
        store.get(job.id[:7])
    # Another id sharing the first 8 characters: that prefix names both, a longer one still one.
    twin = store.create("twin", MODEL, {})
    with store.engine.begin() as connection:
        new_id = job.id[:8] + ("0" if job.id[8] != "0" else "1") + twin.id[9:]
        connection.execute(update(GenerationRow).where(GenerationRow.id == twin.id).values(id=new_id))
    with pytest.raises(AmbiguousId) as ambiguous:
        store.get(job.id[:8])
    assert sorted(ambiguous.value.matches) == sorted([job.id, new_id])
    assert "more characters" in str(ambiguous.value)
    assert store.get(job.id[:9]).id == job.id


def test_claim_takes_the_oldest_jobs_of_one_model(store: Store) -> None:
    a1 = store.create("1", "model-a", {})
    b1 = store.create("2", "model-b", {})
    a2 = store.create("3", "model-a", {})
    a3 = store.create("4", "model-a", {})
    assert [store.queue_position(g.id) for g in (a1, b1, a2, a3)] == [1, 2, 3, 4]

    assert [g.id for g in store.claim(None, 2)] == [a1.id, a2.id]  # the oldest job's model
    assert [store.queue_position(g.id) for g in (a1, b1, a3)] == [None, 1, 2]
    assert [g.id for g in store.claim("model-b", 5)] == [b1.id]
    assert store.claim("model-b", 5) == []
    assert [g.id for g in store.claim(None, 5)] == [a3.id]
    assert store.claim(None, 1) == []
    assert store.count(Status.PROCESSING) == 4 and store.count() == 4 and store.count("pending") == 0
    with pytest.raises(ValueError, match="limit must be >= 1"):
        store.claim(None, 0)
    with pytest.raises(ValueError, match="'done' is not a status"):
        store.count("done")


def test_with_status_picks_the_ids_in_that_state_in_one_query(store: Store) -> None:
    running = [store.create(str(i), MODEL, {}) for i in range(3)]
    store.claim(MODEL, 3)
    store.cancel(running[1].id)
    ids = [job.id for job in running]
    assert store.with_status(ids, "cancelled") == {running[1].id}
    assert store.with_status(ids, Status.PROCESSING) == {running[0].id, running[2].id}
    assert store.with_status([], "cancelled") == set() and store.with_status(["nope"], "cancelled") == set()
    with pytest.raises(ValueError, match="'gone' is not a status"):
        store.with_status(ids, "gone")


def test_pending_models_lists_the_longest_waiting_model_first(store: Store) -> None:
    assert store.pending_models() == []
    b1 = store.create("1", "model-b", {})
    store.create("2", "model-a", {})
    store.create("3", "model-b", {})
    models = store.pending_models()
    assert [(model, count) for model, _, count in models] == [("model-b", 2), ("model-a", 1)]
    assert models[0][1] == b1.created_at and models[0][1].tzinfo is not None
    store.claim("model-b", 2)
    assert [model for model, _, _ in store.pending_models()] == ["model-a"]


def test_delete_removes_row_and_file(store: Store) -> None:
    job = store.create("to delete", MODEL, {})
    store.claim(MODEL, 1)
    path = finish(store, job).file_path
    assert path is not None and path.exists()
    store.delete(job.id)
    assert not path.exists()
    with pytest.raises(NotFound):
        store.get(job.id)


def test_completing_a_deleted_job_writes_nothing(store: Store) -> None:
    job = store.create("deleted while generating", MODEL, {})
    store.claim(MODEL, 1)
    store.delete(job.id)
    with pytest.raises(NotFound):
        finish(store, job)
    assert not (store.home / "outputs").exists()


def test_a_file_whose_row_cannot_be_committed_goes_to_quarantine(store: Store) -> None:
    job = store.create("the database refuses the final update", MODEL, {})
    store.claim(MODEL, 1)
    with store.engine.begin() as connection:  # a real SQLite failure at the last step, e.g. a full disk
        connection.exec_driver_sql(
            "CREATE TRIGGER refuse BEFORE UPDATE OF status ON generations WHEN new.status = 'completed' "
            "BEGIN SELECT RAISE(ABORT, 'simulated failure'); END"
        )
    with pytest.raises(IntegrityError, match="simulated failure"):
        finish(store, job)
    assert list((store.home / "outputs").rglob("*.wav")) == []
    assert [p.name for p in (store.home / "quarantine").rglob("*.wav")] == [f"{job.id}.wav"]
    assert store.get(job.id).status is Status.PROCESSING


def test_create_many_is_all_or_nothing_and_keeps_the_queue_bound_under_concurrency(store: Store) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from storage import QueueFull

    limit = 10

    def add(size: int) -> int:
        try:
            return len(
                store.create_many(MODEL, [(f"take {i}", PARAMS) for i in range(size)], max_pending=limit)
            )
        except QueueFull:
            return 0

    # Every caller sees room before the others commit; only the write lock keeps the bound.
    with ThreadPoolExecutor(max_workers=8) as pool:
        added = list(pool.map(add, [3, 2, 3, 1, 3, 2, 3, 1] * 3))
    assert store.count("pending") == sum(added) <= limit
    assert sum(added) >= limit - 2  # refusals only once it was (nearly) full
    with pytest.raises(QueueFull, match=f"limit {limit}"):
        store.create_many(MODEL, [("one more", PARAMS)] * 3, max_pending=limit)
    assert store.count("pending") == sum(added)  # a refused batch stores none of its jobs
