"""The job queue side of Store: recording jobs, claiming them, and the state machine's transitions.

A claim's snapshot is its fencing token (worker id, attempts): `held_by` turns it into the WHERE clauses that
every change made under a claim carries, so a worker whose claim lapsed changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.core import Generation, StoreCore
from storage.db import announce, db_now, lock_queue_bound, run_transaction
from storage.errors import IllegalTransition, LeaseLost, NotFound, QueueFull
from storage.lineage import Lineage
from storage.models import ALLOWED_SOURCES, PARAM_COLUMNS, GenerationRow, Status
from storage.rows import existing_row, pending_queue, utc_now


class JobQueue(StoreCore):
    """Pending jobs and their claims; every status change is one the state machine allows
    (`storage.models.ALLOWED_SOURCES`)."""

    def create(
        self,
        prompt: str,
        model_name: str,
        params: Mapping[str, Any],
        metadata: Mapping[str, Any] | None = None,
        lineage: Lineage | None = None,
    ) -> Generation:
        """Record a new pending job. `params` keys: duration, seed, temperature, top_k, top_p,
        guidance_scale, loudness_lufs (missing keys are stored as None). `lineage`: how it is derived
        (default: from text alone); its parent and source job must exist (else NotFound)."""
        [generation] = self.create_many(
            model_name, [(prompt, params)], metadata=metadata, lineages=None if lineage is None else [lineage]
        )
        return generation

    def create_many(
        self,
        model_name: str,
        jobs: Sequence[tuple[str, Mapping[str, Any]]],
        *,
        max_pending: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        lineages: Sequence[Lineage] | None = None,
    ) -> list[Generation]:
        """Record several pending jobs (prompt, params) in one transaction: all of them or none.

        With `max_pending`, raise `QueueFull` when the pending queue would grow beyond it. The count is taken
        inside the write lock, so concurrent callers, in any process, cannot overshoot the bound together.
        `lineages`, one per job (e.g. the four stems of one song), says how each is derived.
        """
        if not isinstance(model_name, str) or not model_name.strip():
            raise ValueError("model_name must be a non-empty string, e.g. 'facebook/musicgen-small'")
        if lineages is not None and len(lineages) != len(jobs):
            raise ValueError(f"lineages: pass one per job ({len(jobs)} jobs, {len(lineages)} lineages)")
        rows: list[tuple[str, dict[str, Any]]] = []
        for (prompt, params), lineage in zip(jobs, lineages or [Lineage()] * len(jobs), strict=True):
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError("prompt must be a non-empty string")
            unknown = sorted(set(params) - set(PARAM_COLUMNS))
            if unknown:
                raise ValueError(f"unknown params {unknown}; allowed keys: {', '.join(PARAM_COLUMNS)}")
            values = {PARAM_COLUMNS[key]: value for key, value in params.items()}
            rows.append((prompt, values | _lineage_columns(lineage)))

        def work(session: Session) -> list[Generation]:
            _check_references(session, rows)
            if max_pending is not None:
                lock_queue_bound(session)
                pending = session.scalar(
                    select(func.count())
                    .select_from(GenerationRow)
                    .where(GenerationRow.status == Status.PENDING.value)
                )
                if int(pending or 0) + len(rows) > max_pending:
                    raise QueueFull(int(pending or 0), len(rows), max_pending)
            created = []
            for prompt, values in rows:
                # created_at is taken inside the write lock: it grows in commit order, as search snapshots
                # need
                row = GenerationRow(
                    id=str(uuid.uuid4()),
                    prompt=prompt,
                    model_name=model_name,
                    status=Status.PENDING.value,
                    created_at=utc_now(),
                    meta=dict(metadata or {}),
                    attempts=0,
                    **values,
                )
                session.add(row)
                created.append(row)
            session.flush()
            announce(session, [row.id for row in created])
            return [self._snapshot(row) for row in created]

        try:
            return run_transaction(self.engine, work, write=True)
        except IntegrityError as error:
            # PostgreSQL: a referenced job deleted by another transaction between the check and the insert.
            raise NotFound(
                f"a parent or source job of these generations was just deleted ({error.orig})"
            ) from None

    def claim(
        self,
        model_name: str | None = None,
        limit: int = 1,
        *,
        worker_id: str | None = None,
        lease_s: float | None = None,
        exclude: Collection[str] = (),
    ) -> list[Generation]:
        """Atomically move up to `limit` oldest pending jobs of one model (None: the oldest job's model) to
        processing, oldest first. Two workers, in any processes, never receive the same job.

        A claim by `worker_id` holds a lease of `lease_s` seconds that the worker renews
        (`storage.leases.Leases.heartbeat`); the returned snapshots are the fencing tokens that `complete`,
        `fail` and `requeue` take as `claim=`. `exclude`: ids the caller still holds an earlier claim of
        in memory (a job re-queued under a stalled worker must not return to it while it drops the old one).
        """
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        if lease_s is not None and lease_s <= 0:
            raise ValueError(f"lease_s must be > 0, got {lease_s}")

        def work(session: Session) -> list[Generation]:
            model = model_name
            if model is None:
                model = session.scalars(
                    pending_queue().with_only_columns(GenerationRow.model_name).limit(1)
                ).first()
                if model is None:
                    return []
            ids = list(
                session.scalars(
                    pending_queue()
                    .with_only_columns(GenerationRow.id)
                    .where(GenerationRow.model_name == model, GenerationRow.id.not_in(list(exclude)))
                    .limit(limit)
                    .with_for_update(skip_locked=True)  # PostgreSQL; SQLite holds the write lock already
                )
            )
            if not ids:
                return []
            session.execute(
                update(GenerationRow)
                .where(GenerationRow.id.in_(ids), GenerationRow.status == Status.PENDING.value)
                .values(
                    status=Status.PROCESSING.value,
                    started_at=utc_now(),
                    attempts=GenerationRow.attempts + 1,
                    worker_id=worker_id,
                    lease_expires_at=None
                    if lease_s is None
                    else db_now(session) + timedelta(seconds=lease_s),
                )
            )
            announce(session, ids)
            rows = session.scalars(
                select(GenerationRow)
                .where(GenerationRow.id.in_(ids))
                .execution_options(populate_existing=True)
            )
            order = {generation_id: i for i, generation_id in enumerate(ids)}
            return sorted((self._snapshot(row) for row in rows), key=lambda g: order[g.id])

        return run_transaction(self.engine, work, write=True)

    def _transition(
        self, generation_id: str, target: Status, claim: Generation | None = None, **values: Any
    ) -> Generation:
        """Change status only if the current one allows it (and, with `claim`, only while that claim still
        holds the job), in a single conditional UPDATE."""

        def work(session: Session) -> Generation:
            result = session.execute(
                update(GenerationRow)
                .where(
                    GenerationRow.id == generation_id,
                    GenerationRow.status.in_([s.value for s in ALLOWED_SOURCES[target]]),
                    *held_by(claim),
                )
                .values(status=target.value, lease_expires_at=None, **values)
            )
            row = existing_row(session, generation_id, refresh=True)
            if result.rowcount == 0:  # type: ignore[attr-defined]
                raise refusal(generation_id, claim, row.status, target)
            announce(session, [generation_id])
            return self._snapshot(row)

        return run_transaction(self.engine, work, write=True)

    def fail(self, generation_id: str, error: str, *, claim: Generation | None = None) -> Generation:
        return self._transition(generation_id, Status.FAILED, claim, error=error, completed_at=utc_now())

    def cancel(self, generation_id: str) -> Generation:
        return self._transition(generation_id, Status.CANCELLED, completed_at=utc_now())

    def requeue(self, generation_id: str, *, claim: Generation | None = None) -> Generation:
        """processing -> pending (after a crash or a worker shutdown); attempts keep counting."""
        return self._transition(generation_id, Status.PENDING, claim, started_at=None, worker_id=None)


def release(
    session: Session, rows: list[GenerationRow], max_attempts: int, why: str
) -> tuple[list[str], list[str]]:
    """Processing rows whose worker is gone: back to pending, or failed once tried `max_attempts` times.
    Returns (re-queued ids, failed ids)."""
    requeued = [row.id for row in rows if row.attempts < max_attempts]
    failed = [row.id for row in rows if row.attempts >= max_attempts]
    unclaimed = {"worker_id": None, "lease_expires_at": None}
    if requeued:
        session.execute(
            update(GenerationRow)
            .where(GenerationRow.id.in_(requeued))
            .values(status=Status.PENDING.value, started_at=None, **unclaimed)
        )
    if failed:
        session.execute(
            update(GenerationRow)
            .where(GenerationRow.id.in_(failed))
            .values(
                status=Status.FAILED.value,
                completed_at=utc_now(),
                error=f"{why} on each of its {max_attempts}+ attempts (max_attempts={max_attempts}); "
                "submit it again to retry",
                **unclaimed,
            )
        )
    announce(session, requeued + failed)
    return requeued, failed


def held_by(claim: Generation | None) -> list[Any]:
    """WHERE clauses true only while `claim` (a snapshot claim() returned) still holds its job."""
    if claim is None:
        return []
    return [
        GenerationRow.status == Status.PROCESSING.value,
        GenerationRow.attempts == claim.attempts,
        GenerationRow.worker_id.is_(None)
        if claim.worker_id is None
        else GenerationRow.worker_id == claim.worker_id,
    ]


def refusal(generation_id: str, claim: Generation | None, current: str, target: Status) -> IllegalTransition:
    """Why a change was refused: the claim no longer holds the job (re-queued, claimed again, or ended by
    its new owner), or, without a claim or after a cancellation, the state machine forbids it."""
    if claim is not None and current != Status.CANCELLED.value:
        return LeaseLost(generation_id, claim.worker_id, claim.attempts, current)
    return IllegalTransition(generation_id, current, target.value)


def _lineage_columns(lineage: Lineage) -> dict[str, Any]:
    return {
        "parent_id": lineage.parent_id,
        "operation": lineage.operation.value,
        "source_job_id": lineage.source_job_id,
        "source_file_name": lineage.source_file_name,
        "source_file_sha256": lineage.source_file_sha256,
        "stem": lineage.stem,
        "section_start_s": lineage.section_start_s,
        "section_end_s": lineage.section_end_s,
    }


def _check_references(session: Session, rows: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
    """Every parent and source job named must exist (the foreign keys would refuse it less clearly)."""
    for field_name in ("parent_id", "source_job_id"):
        wanted = {values[field_name] for _, values in rows if values[field_name] is not None}
        found = set(session.scalars(select(GenerationRow.id).where(GenerationRow.id.in_(wanted))))
        if missing := sorted(wanted - found):
            raise NotFound(f"{field_name} {missing[0]!r} is not a generation: list ids with history()")
