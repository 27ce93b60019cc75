"""Workers and their leases on claimed jobs: registration, heartbeats, lease renewal and expiry.

Why claims on the history table rather than a queue library (procrastinate, pgqueuer): a job *is* a row of
``generations``; its status there is what clients read, what history lists and what recovery repairs. A
queue library keeps its own jobs table, so every job would live twice (its row and the library's task) and
the two would have to be kept in step across crashes, which is the double bookkeeping this design avoids.
Both libraries are PostgreSQL-only, while SQLite stays the embedded default, so a second, home-made path
would remain anyway; and neither admits work at a decode-step boundary into a running batch, which is how
our scheduler claims. What they would bring, we get from PostgreSQL directly in a few statements:
``FOR UPDATE SKIP LOCKED`` claims (``Store.claim``), leases renewed by heartbeat and fenced by the claim
token (worker id, attempt), ``LISTEN/NOTIFY`` wake-ups (``storage.db.announce``), and an advisory lock for
the queue bound (``storage.db.lock_queue_bound``).

The fencing token of a claim is (worker_id, attempts): each claim increments attempts, so a worker whose
lease lapsed can neither renew nor complete the job once it was re-queued or claimed again, even by a later
run of the same worker id.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.orm import Session

from storage.core import Generation
from storage.db import db_now, run_transaction
from storage.jobs import release
from storage.models import GenerationRow, Status, WorkerRow
from storage.store import Store

ANY_MODEL = "*"


@dataclass(frozen=True)
class WorkerInfo:
    id: str
    host: str
    pid: int
    models: list[str]  # ["*"]: any model
    state: str
    started_at: datetime
    heartbeat_at: datetime

    def serves(self, model_id: str) -> bool:
        return ANY_MODEL in self.models or model_id in self.models


class Leases:
    """The lease side of the queue for one store; thread-safe like the store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def register(self, worker_id: str, models: Sequence[str], state: str) -> None:
        """Insert or refresh this worker's row (a restart under the same id takes the row over)."""

        def work(session: Session) -> None:
            now = db_now(session)
            row = session.get(WorkerRow, worker_id)
            if row is None:
                row = WorkerRow(id=worker_id)
                session.add(row)
            row.host, row.pid, row.models, row.state = socket.gethostname(), os.getpid(), list(models), state
            row.started_at = row.heartbeat_at = now

        run_transaction(self.store.engine, work, write=True)

    def unregister(self, worker_id: str) -> None:
        run_transaction(
            self.store.engine,
            lambda session: session.execute(delete(WorkerRow).where(WorkerRow.id == worker_id)),
            write=True,
        )

    def heartbeat(self, worker_id: str, state: str, claims: Sequence[Generation], lease_s: float) -> set[str]:
        """Renew the worker's heartbeat and the lease of every claim it still holds; returns the ids of the
        claims that are still its own (the others lapsed: their results must be discarded)."""

        def work(session: Session) -> set[str]:
            now = db_now(session)
            session.execute(
                update(WorkerRow).where(WorkerRow.id == worker_id).values(heartbeat_at=now, state=state)
            )
            if not claims:
                return set()
            held = or_(
                *(
                    and_(GenerationRow.id == claim.id, GenerationRow.attempts == claim.attempts)
                    for claim in claims
                )
            )
            kept = session.scalars(
                update(GenerationRow)
                .where(
                    held,
                    GenerationRow.status == Status.PROCESSING.value,
                    GenerationRow.worker_id == worker_id,
                )
                .values(lease_expires_at=now + timedelta(seconds=lease_s))
                .returning(GenerationRow.id)
            )
            return set(kept)

        return run_transaction(self.store.engine, work, write=True)

    def expire(self, max_attempts: int) -> tuple[list[str], list[str]]:
        """Jobs whose lease lapsed go back to pending (or fail after `max_attempts`): (re-queued, failed).

        Any worker may run this. Rows locked by a worker that is publishing its result right now are
        skipped (SKIP LOCKED), so expiry never waits on, or races, a completion in progress.
        """

        def work(session: Session) -> tuple[list[str], list[str]]:
            lapsed = session.scalars(
                select(GenerationRow)
                .where(
                    GenerationRow.status == Status.PROCESSING.value,
                    GenerationRow.lease_expires_at < db_now(session),
                )
                .with_for_update(skip_locked=True)
            )
            return release(session, list(lapsed), max_attempts, "its worker stopped renewing the lease")

        return run_transaction(self.store.engine, work, write=True)

    def live_workers(self, within_s: float) -> list[WorkerInfo]:
        """Workers whose heartbeat is at most `within_s` seconds old."""

        def work(session: Session) -> list[WorkerInfo]:
            rows = session.scalars(
                select(WorkerRow)
                .where(WorkerRow.heartbeat_at >= db_now(session) - timedelta(seconds=within_s))
                .order_by(WorkerRow.id)
            )
            return [
                WorkerInfo(r.id, r.host, r.pid, list(r.models), r.state, r.started_at, r.heartbeat_at)
                for r in rows
            ]

        return run_transaction(self.store.engine, work, write=False)
