"""Wake-ups across machines on PostgreSQL: LISTEN/NOTIFY carries "job changed" and decode progress.

Every row change already sends the job's id on ``storage.db.JOBS_CHANNEL`` inside its own transaction (so a
listener hears of a change exactly when it becomes visible). Progress is not a row change: a worker sends
it here on ``PROGRESS_CHANNEL``, throttled to one message per worker every ``PUBLISH_EVERY_SECONDS``. Each
process (front-end, worker, all-in-one) keeps one listening connection on a thread and turns what it hears
into wake-ups of its waiters and a cache of other workers' progress. SQLite needs none of this: there every
process is on one machine and the job service's own wake-ups plus a short poll do.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from storage import Store
from storage.db import JOBS_CHANNEL

log = logging.getLogger(__name__)

PROGRESS_CHANNEL = "dgx_music_progress"
PUBLISH_EVERY_SECONDS = 0.25
PROGRESS_KEEP_SECONDS = 60.0  # a worker that stopped reporting a job's progress no longer speaks for it
RECONNECT_SECONDS = 1.0
# pg_notify payloads must stay under 8000 bytes: about 70 bytes per job, so a batch of 64 fits in two.
JOBS_PER_MESSAGE = 48

Progress = tuple[int, int, str]  # steps done, steps needed, stage


def uses_notify(store: Store) -> bool:
    return store.engine.dialect.name == "postgresql"


class Relay:
    """LISTEN on a thread (``on_change(job_ids, progress_only)`` for every change heard; ``[]`` after a
    reconnect, when anything may have changed) and NOTIFY of this process's progress."""

    def __init__(self, store: Store, on_change: Callable[[list[str], bool], None]) -> None:
        self._connect_args = dict(store.engine.dialect.create_connect_args(store.engine.url)[1])
        self._on_change = on_change
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._remote: dict[str, tuple[Progress, float]] = {}
        self._publisher: Any = None  # psycopg.Connection, opened on first publish
        self._last_publish = 0.0
        self.listening = threading.Event()

    def start(self) -> Relay:
        self._thread = threading.Thread(target=self._listen, name="dgx-music-listen", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            if self._publisher is not None:
                self._publisher.close()
                self._publisher = None

    def progress(self, job_id: str) -> Progress | None:
        """The last progress a worker reported for ``job_id`` (on any machine), unless it is stale."""
        with self._lock:
            entry = self._remote.get(job_id)
        if entry is None or time.monotonic() - entry[1] > PROGRESS_KEEP_SECONDS:
            return None
        return entry[0]

    def publish(self, worker_id: str, progress: dict[str, Progress]) -> None:
        """Send this worker's progress (throttled); a lost message only delays a progress bar."""
        now = time.monotonic()
        if not progress or now - self._last_publish < PUBLISH_EVERY_SECONDS:
            return
        self._last_publish = now
        items = list(progress.items())
        try:
            with self._lock:
                if self._publisher is None or self._publisher.closed:
                    self._publisher = self._connect()
                for start in range(0, len(items), JOBS_PER_MESSAGE):
                    payload = json.dumps({"w": worker_id, "p": dict(items[start : start + JOBS_PER_MESSAGE])})
                    self._publisher.execute("SELECT pg_notify(%s, %s)", (PROGRESS_CHANNEL, payload))
        except Exception as error:  # the database restarted: reconnect on the next publish
            log.warning("could not publish progress: %s", error)
            with self._lock:
                self._publisher = None

    def _connect(self) -> Any:
        import psycopg

        return psycopg.connect(**self._connect_args, autocommit=True)

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                with self._connect() as connection:
                    connection.execute(f"LISTEN {JOBS_CHANNEL}")
                    connection.execute(f"LISTEN {PROGRESS_CHANNEL}")
                    self.listening.set()
                    self._on_change([], False)  # (re)connected: what happened while deaf is unknown
                    while not self._stop.is_set():
                        for message in connection.notifies(timeout=1.0):
                            self._heard(message.channel, message.payload)
            except Exception as error:
                self.listening.clear()
                if self._stop.is_set():
                    return
                log.warning("LISTEN connection lost (%s); reconnecting in %.0f s", error, RECONNECT_SECONDS)
                self._stop.wait(RECONNECT_SECONDS)

    def _heard(self, channel: str, payload: str) -> None:
        if channel == PROGRESS_CHANNEL:
            try:
                entries = json.loads(payload)["p"]
            except (ValueError, KeyError, TypeError):
                return
            now = time.monotonic()
            with self._lock:
                for job_id, (done, total, stage) in entries.items():
                    self._remote[job_id] = ((int(done), int(total), str(stage)), now)
                for job_id in [
                    k for k, (_, seen) in self._remote.items() if now - seen > PROGRESS_KEEP_SECONDS
                ]:
                    del self._remote[job_id]
            self._on_change(list(entries), True)
        else:
            self._on_change([job_id for job_id in payload.split(",") if job_id], False)
