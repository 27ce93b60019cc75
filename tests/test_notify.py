"""LISTEN/NOTIFY on a real PostgreSQL: a relay hears every job change another process commits (not before
it commits) and the progress another process publishes, throttled."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from mcp_server.notify import PUBLISH_EVERY_SECONDS, Relay
from storage import Store
from storage.db import announce

pytest.importorskip("psycopg")
MODEL = "facebook/musicgen-small"


@pytest.fixture
def url(server: str) -> str:
    from pg_testing import fresh_database

    return fresh_database(server, "t_notify")


class Heard:
    def __init__(self) -> None:
        self.ids: list[str] = []
        self.progress_ids: list[str] = []
        self.changed = threading.Event()

    def __call__(self, job_ids: list[str], progress_only: bool) -> None:
        self.ids += job_ids
        if progress_only:
            self.progress_ids += job_ids
        self.changed.set()

    def wait_for(self, job_id: str, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while job_id not in self.ids and time.monotonic() < deadline:
            self.changed.wait(0.1)
            self.changed.clear()
        return job_id in self.ids


@pytest.fixture
def relay_and_heard(url: str, data_home: Path) -> Iterator[tuple[Relay, Heard, Store]]:
    listener_store = Store(data_home / "front", url)
    heard = Heard()
    relay = Relay(listener_store, heard).start()
    assert relay.listening.wait(10)
    yield relay, heard, Store(data_home / "worker", url)
    relay.stop()
    listener_store.close()


def test_changes_committed_elsewhere_are_heard_at_commit(relay_and_heard: tuple[Relay, Heard, Store]) -> None:
    _, heard, other = relay_and_heard
    job = other.create("heard across machines", MODEL, {})
    assert heard.wait_for(job.id)
    assert job.id not in heard.progress_ids  # a change of the job itself: every waiter re-reads
    heard.ids.clear()
    with Session(other.engine) as session, session.begin():
        announce(session, ["not-yet"])
        time.sleep(0.5)
        assert "not-yet" not in heard.ids  # a change is heard when it becomes visible, not before
    assert heard.wait_for("not-yet")
    heard.ids.clear()
    other.cancel(job.id)
    assert heard.wait_for(job.id)


def test_progress_published_elsewhere_is_heard_and_throttled(
    relay_and_heard: tuple[Relay, Heard, Store],
) -> None:
    relay, heard, other = relay_and_heard
    publisher = Relay(other, lambda ids, progress_only: None)
    try:
        publisher.publish("w1", {"job-a": (10, 50, "decoding")})
        publisher.publish("w1", {"job-a": (11, 50, "decoding")})  # within the throttle: not sent
        assert heard.wait_for("job-a")
        assert heard.progress_ids == ["job-a"]  # heard as progress: waiters for an end sleep on
        assert relay.progress("job-a") == (10, 50, "decoding")
        time.sleep(PUBLISH_EVERY_SECONDS)
        publisher.publish("w1", {f"job-{i}": (i, 50, "decoding") for i in range(100)})  # split in messages
        assert heard.wait_for("job-99")
        assert relay.progress("job-99") == (99, 50, "decoding")
        assert relay.progress("never-reported") is None
    finally:
        publisher.stop()
