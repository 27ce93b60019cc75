"""Store: the generation history (a database row per job) and its audio files."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Select, and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage import bwf, db, files
from storage.cursor import Cursor, decode, encode, filters_digest
from storage.db import announce, db_now, lock_queue_bound, run_transaction
from storage.errors import (
    AmbiguousId,
    AudioIntegrityError,
    HasChildren,
    IllegalTransition,
    LeaseLost,
    NotFound,
    QueueFull,
    StorageError,
)
from storage.lineage import Lineage
from storage.models import ALLOWED_SOURCES, PARAM_COLUMNS, GenerationRow, Status
from storage.search import apply_search

MAX_PAGE = 500
MIN_ID_PREFIX = 8  # what `dgx-music history` shows; shorter prefixes would collide as the history grows
SHOWN_MATCHES = 5  # ids listed when a prefix is ambiguous
# On a shared outputs directory another host may be publishing a WAV whose row commits a moment later, or
# staging one under a pid this host cannot see: recovery there only touches files older than this.
SHARED_ORPHAN_AGE_S = 600


@dataclass(frozen=True)
class Generation:
    """An immutable snapshot of one row; safe to hand across threads."""

    id: str
    prompt: str
    model_name: str
    status: Status
    params: dict[str, Any]
    file_path: Path | None  # absolute; None until the file is complete
    sample_rate: int | None
    channels: int | None
    duration_s: float | None
    loudness_lufs: float | None
    peak_dbfs: float | None
    file_size: int | None
    sha256: str | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    generation_seconds: float | None
    error: str | None
    attempts: int
    device: str | None
    metadata: dict[str, Any]
    lineage: Lineage = field(default_factory=Lineage)
    worker_id: str | None = None  # the worker holding a processing job (or that ended it)
    lease_expires_at: datetime | None = None  # when that worker's claim lapses unless renewed


@dataclass(frozen=True)
class Page:
    items: list[Generation]
    next_cursor: str | None


@dataclass(frozen=True)
class RecoveryReport:
    requeued: list[str] = field(default_factory=list)  # were processing, now pending again
    failed: list[str] = field(default_factory=list)  # were processing, out of attempts
    pending: list[str] = field(default_factory=list)  # every pending job, oldest first: re-queue these
    quarantined: list[Path] = field(default_factory=list)  # where orphan files were moved
    missing_files: list[str] = field(default_factory=list)  # completed rows whose audio is gone


def _now() -> datetime:
    return datetime.now(UTC)


def _as_utc(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"{name}={value.isoformat()} has no time zone: pass an aware datetime, e.g. UTC")
    return value.astimezone(UTC)


def _status(value: Status | str, name: str = "status") -> Status:
    try:
        return Status(value)
    except ValueError:
        allowed = ", ".join(s.value for s in Status)
        raise ValueError(f"{name}={value!r} is not a status; use one of: {allowed}") from None


class Store:
    """History database plus audio files under `home`. Thread-safe; several processes may share a home."""

    def __init__(self, home: Path, database_url: str | None = None, outputs: Path | None = None) -> None:
        """Open (migrating to head on first use) home/dgx-music.db, or `database_url`, else
        DGX_MUSIC_DATABASE_URL when set. Audio goes under `outputs` (default home/outputs), which several
        hosts may share (one directory on NFS for every worker and front-end)."""
        self.home = Path(home).expanduser()
        self.outputs = Path(outputs).expanduser() if outputs else self.home / "outputs"
        self.url = db.database_url(self.home, database_url)
        self.engine = db.make_engine(self.url)
        self._dialect = self.engine.dialect.name
        db.upgrade(self.engine, self.home)

    def close(self) -> None:
        self.engine.dispose()

    # --- snapshots ---------------------------------------------------------------------------------------

    def _snapshot(self, row: GenerationRow) -> Generation:
        return Generation(
            id=row.id,
            prompt=row.prompt,
            model_name=row.model_name,
            status=Status(row.status),
            params={key: getattr(row, attr) for key, attr in PARAM_COLUMNS.items()},
            file_path=self.absolute(row.file_path) if row.file_path else None,
            sample_rate=row.sample_rate,
            channels=row.channels,
            duration_s=row.duration_s,
            loudness_lufs=row.loudness_lufs,
            peak_dbfs=row.peak_dbfs,
            file_size=row.file_size,
            sha256=row.sha256,
            created_at=row.created_at,
            started_at=row.started_at,
            completed_at=row.completed_at,
            generation_seconds=row.generation_seconds,
            error=row.error,
            attempts=row.attempts,
            device=row.device,
            metadata=dict(row.meta or {}),
            lineage=Lineage(
                operation=row.operation,  # type: ignore[arg-type]  # validated by Lineage
                parent_id=row.parent_id,
                source_job_id=row.source_job_id,
                source_file_name=row.source_file_name,
                source_file_sha256=row.source_file_sha256,
                stem=row.stem,
                section_start_s=row.section_start_s,
                section_end_s=row.section_end_s,
            ),
            worker_id=row.worker_id,
            lease_expires_at=row.lease_expires_at,
        )

    def absolute(self, relative: str | Path) -> Path:
        """Where a stored "outputs/YYYY/MM/DD/<id>.wav" lives: under this store's outputs directory."""
        return self.outputs / Path(relative).relative_to("outputs")

    def _quarantine(self, path: Path) -> Path:
        # Beside the outputs directory (home/quarantine by default): on a shared mount, on the same one.
        return files.quarantine(self.outputs.parent, path)

    def _read(self, generation_id: str) -> Generation:
        return run_transaction(
            self.engine, lambda session: self._snapshot(_row(session, generation_id)), write=False
        )

    # --- jobs --------------------------------------------------------------------------------------------

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
                    created_at=_now(),
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
                model = session.scalars(_queue().with_only_columns(GenerationRow.model_name).limit(1)).first()
                if model is None:
                    return []
            ids = list(
                session.scalars(
                    _queue()
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
                    started_at=_now(),
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
                    *_held_by(claim),
                )
                .values(status=target.value, lease_expires_at=None, **values)
            )
            row = _row(session, generation_id, refresh=True)
            if result.rowcount == 0:  # type: ignore[attr-defined]
                raise _refusal(generation_id, claim, row.status, target)
            announce(session, [generation_id])
            return self._snapshot(row)

        return run_transaction(self.engine, work, write=True)

    def complete(
        self,
        generation_id: str,
        audio: np.ndarray,
        sample_rate: int,
        *,
        loudness_lufs: float | None,
        peak_dbfs: float | None,
        generation_seconds: float,
        device: str,
        seed: int | None,
        claim: Generation | None = None,
        coding_history: str | None = None,
    ) -> Generation:
        """Write the Broadcast WAV atomically, then commit the row completed with path, size and sha256.

        With `claim` (the snapshot `claim()` returned) the job must still be held by that claim: the row is
        locked first and the file is published under the lock, so a worker whose lease lapsed can never
        overwrite the file of the worker that now owns the job; it gets `LeaseLost` and nothing is written.
        ``coding_history`` replaces the bext coding history's default text (model, device, seed).
        """
        job = self._read(generation_id)
        if job.status is not Status.PROCESSING:
            raise _refusal(generation_id, claim, job.status.value, Status.COMPLETED)
        relative = self.relative_audio_path(job)
        final = self.absolute(relative)
        data = bwf.encode(
            audio,
            sample_rate,
            bwf.BroadcastInfo(
                description=job.prompt,
                originator=job.model_name,
                originator_reference=uuid.UUID(job.id).hex,
                origination=job.created_at,
                loudness_lufs=loudness_lufs,
                coding_history=coding_history or f"{job.model_name} on {device}, seed {seed}",
            ),
        )
        values = {
            "status": Status.COMPLETED.value,
            "file_path": str(relative),
            "sample_rate": sample_rate,
            "channels": audio.shape[0],
            "duration_s": audio.shape[1] / sample_rate,
            "loudness_lufs": loudness_lufs,
            "peak_dbfs": peak_dbfs,
            "file_size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "completed_at": _now(),
            "generation_seconds": generation_seconds,
            "device": device,
            "error": None,
            "lease_expires_at": None,
            **({"seed": seed} if seed is not None else {}),
        }
        published = False

        def work(session: Session) -> Generation:
            nonlocal published
            held = session.scalars(
                select(GenerationRow)
                .where(GenerationRow.id == generation_id, *_held_by(claim))
                .with_for_update()  # PostgreSQL row lock; SQLite holds the write lock already
                .execution_options(populate_existing=True)
            ).first()
            if held is None or held.status != Status.PROCESSING.value:
                current = _row(session, generation_id, refresh=True).status
                raise _refusal(generation_id, claim, current, Status.COMPLETED)
            files.write_atomic(final, data)
            published = True
            session.execute(update(GenerationRow).where(GenerationRow.id == generation_id).values(**values))
            announce(session, [generation_id])
            return self._snapshot(_row(session, generation_id, refresh=True))

        try:
            return run_transaction(self.engine, work, write=True)
        except BaseException:
            if published:
                self._withdraw(generation_id, final)
            raise

    def _withdraw(self, generation_id: str, final: Path) -> None:
        """The commit after publishing failed: no row points at the file, so keep it out of outputs/ (where
        it would look finished) without destroying it; unless another claim has completed the job since, in
        which case the file there is that worker's. Decided under the row lock its publication needs."""

        def work(session: Session) -> None:
            row = session.scalars(
                select(GenerationRow).where(GenerationRow.id == generation_id).with_for_update()
            ).first()
            if (row is None or row.status != Status.COMPLETED.value) and final.exists():
                self._quarantine(final)

        run_transaction(self.engine, work, write=True)

    def fail(self, generation_id: str, error: str, *, claim: Generation | None = None) -> Generation:
        return self._transition(generation_id, Status.FAILED, claim, error=error, completed_at=_now())

    def cancel(self, generation_id: str) -> Generation:
        return self._transition(generation_id, Status.CANCELLED, completed_at=_now())

    def requeue(self, generation_id: str, *, claim: Generation | None = None) -> Generation:
        """processing -> pending (after a crash or a worker shutdown); attempts keep counting."""
        return self._transition(generation_id, Status.PENDING, claim, started_at=None, worker_id=None)

    def get(self, generation_id: str) -> Generation:
        """The generation with this id, or with the only id that starts with it (8+ characters).

        Raises `NotFound` when nothing matches (or the prefix is shorter), `AmbiguousId` listing the matches
        when several ids start with it.
        """
        return run_transaction(
            self.engine,
            lambda session: self._snapshot(_row(session, _resolve(session, generation_id))),
            write=False,
        )

    def delete(self, generation_id: str, *, with_descendants: bool = False) -> list[str]:
        """Delete a generation (and, with `with_descendants`, everything derived from it: its stems,
        edits, continuations and theirs); returns the ids deleted, the given one first.

        Refused with `HasChildren` while other generations derive from it and `with_descendants` is False,
        or when a generation outside the deleted set used one of them as its conditioning source. The rows
        go in one statement (all or none); the files are removed after the commit, so a crash in between
        leaves orphan files for recover() to quarantine, never a row pointing at a missing file. A job still
        processing is deleted too: its complete() then fails."""

        def work(session: Session) -> tuple[list[str], list[str]]:
            _row(session, generation_id)
            if with_descendants:
                below = (
                    select(GenerationRow.id)
                    .where(
                        GenerationRow.id.in_(_descendant_ids(generation_id)),
                        GenerationRow.id != generation_id,
                    )
                    .order_by(GenerationRow.created_at, GenerationRow.id)
                )
                ids = [generation_id, *session.scalars(below)]
            else:
                ids = [generation_id]
                children = list(session.scalars(_children(generation_id).with_only_columns(GenerationRow.id)))
                if children:
                    raise HasChildren(generation_id, children)
            users = list(
                session.scalars(
                    select(GenerationRow.id).where(
                        GenerationRow.source_job_id.in_(ids), GenerationRow.id.not_in(ids)
                    )
                )
            )
            if users:
                raise HasChildren(generation_id, users, as_source=True)
            paths = list(
                session.scalars(
                    select(GenerationRow.file_path).where(
                        GenerationRow.id.in_(ids), GenerationRow.file_path.is_not(None)
                    )
                )
            )
            session.execute(delete(GenerationRow).where(GenerationRow.id.in_(ids)))
            announce(session, ids)
            return ids, [str(path) for path in paths]

        ids, paths = run_transaction(self.engine, work, write=True)
        failed = []
        for relative in paths:
            try:
                files.remove(self.absolute(relative))
            except OSError as error:
                failed.append(f"{relative} ({error.strerror})")
        if failed:
            raise StorageError(
                f"deleted {len(ids)} generation(s) but could not remove {len(failed)} file(s): "
                f"{', '.join(failed)}; recover() moves them to quarantine/ at the next start"
            )
        return ids

    # --- lineage -----------------------------------------------------------------------------------------

    def children(self, generation_id: str) -> list[Generation]:
        """The generations made directly from this one (stems, edits, continuations...), oldest first."""

        def work(session: Session) -> list[Generation]:
            _row(session, generation_id)
            return [self._snapshot(row) for row in session.scalars(_children(generation_id))]

        return run_transaction(self.engine, work, write=False)

    def family(self, generation_id: str) -> list[Generation]:
        """The whole family of a piece: its root (the generation with no parent above this one) and every
        descendant of the root, oldest first, so each parent comes before its children. Any member's id
        gives the same family. Build the tree with each member's `lineage.parent_id`."""

        def work(session: Session) -> list[Generation]:
            _row(session, generation_id)
            members = select(GenerationRow).where(GenerationRow.id.in_(_family_ids(generation_id)))
            rows = session.scalars(members.order_by(GenerationRow.created_at, GenerationRow.id))
            return [self._snapshot(row) for row in rows]

        return run_transaction(self.engine, work, write=False)

    # --- queries -----------------------------------------------------------------------------------------

    def history(
        self,
        status: Status | str | None = None,
        model: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        query: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> Page:
        """Newest first, or best match first when `query` (full-text over prompts) is given.
        `since` is inclusive, `until` exclusive. Pass `next_cursor` back with the same filters for more."""
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be 1-{MAX_PAGE}, got {limit}")
        wanted = _status(status) if status is not None else None
        start = _as_utc(since, "since") if since else None
        end = _as_utc(until, "until") if until else None
        search = query.strip() if query and query.strip() else None
        digest = filters_digest(wanted, model, start, end, search)
        position = decode(cursor, digest) if cursor else None

        statement = select(GenerationRow)
        if wanted:
            statement = statement.where(GenerationRow.status == wanted.value)
        if model:
            statement = statement.where(GenerationRow.model_name == model)
        if start:
            statement = statement.where(GenerationRow.created_at >= start)
        if end:
            statement = statement.where(GenerationRow.created_at < end)
        newest_first = (GenerationRow.created_at.desc(), GenerationRow.id.desc())

        def work(session: Session) -> Page:
            if search is None:
                page = statement.order_by(*newest_first).limit(limit + 1)
                if position and position.created_at and position.id:
                    page = page.where(_before(position.created_at, position.id))
                rows = list(session.scalars(page))
                more = len(rows) > limit
                rows = rows[:limit]
                last = rows[-1] if rows else None
                token = encode(Cursor(digest, last.created_at, last.id)) if more and last else None
                return Page([self._snapshot(row) for row in rows], token)

            snapshot = position.snapshot if position else session.scalar(func.max(GenerationRow.created_at))
            offset = (position.offset or 0) if position else 0
            matched, rank = apply_search(statement, self._dialect, search)
            if snapshot is not None:
                matched = matched.where(GenerationRow.created_at <= snapshot)
            rows = list(
                session.scalars(matched.order_by(rank, *newest_first).offset(offset).limit(limit + 1))
            )
            more = len(rows) > limit
            rows = rows[:limit]
            token = encode(Cursor(digest, offset=offset + limit, snapshot=snapshot)) if more else None
            return Page([self._snapshot(row) for row in rows], token)

        return run_transaction(self.engine, work, write=False)

    def queue_position(self, generation_id: str) -> int | None:
        """1 for the next job to be claimed, 2 after it, ...; None when the job is not pending."""

        def work(session: Session) -> int | None:
            row = _row(session, generation_id)
            if row.status != Status.PENDING.value:
                return None
            ahead = (
                _queue().where(_before(row.created_at, row.id)).with_only_columns(func.count()).order_by(None)
            )
            return int(session.scalar(ahead) or 0) + 1

        return run_transaction(self.engine, work, write=False)

    def pending_models(self) -> list[tuple[str, datetime, int]]:
        """(model, oldest pending job's created_at, pending jobs) for every model with pending jobs, the
        longest-waiting model first: what a worker needs to decide which model to serve next."""
        statement = (
            select(GenerationRow.model_name, func.min(GenerationRow.created_at), func.count())
            .where(GenerationRow.status == Status.PENDING.value)
            .group_by(GenerationRow.model_name)
            .order_by(func.min(GenerationRow.created_at))
        )

        def work(session: Session) -> list[tuple[str, datetime, int]]:
            rows = session.execute(statement).all()
            return [
                (str(model), oldest.replace(tzinfo=oldest.tzinfo or UTC), int(count))
                for model, oldest, count in rows
            ]

        return run_transaction(self.engine, work, write=False)

    def count(self, status: Status | str | None = None) -> int:
        statement = select(func.count()).select_from(GenerationRow)
        if status is not None:
            statement = statement.where(GenerationRow.status == _status(status).value)
        return run_transaction(self.engine, lambda session: int(session.scalar(statement) or 0), write=False)

    def relative_audio_path(self, generation: Generation) -> Path:
        """outputs/YYYY/MM/DD/<id>.wav, dated by the job's creation (UTC)."""
        return Path("outputs", generation.created_at.strftime("%Y/%m/%d"), f"{generation.id}.wav")

    def open_audio(self, generation_id: str) -> bytes:
        """The WAV bytes, after checking them against the sha256 recorded when the file was written."""
        job = self._read(generation_id)
        if job.status is not Status.COMPLETED or job.file_path is None:
            raise NotFound(f"generation {generation_id} has no audio: it is {job.status.value}")
        try:
            data = job.file_path.read_bytes()
        except FileNotFoundError:
            raise AudioIntegrityError(
                f"audio of generation {generation_id} is missing at {job.file_path}: "
                "restore it from a backup, or delete the generation and generate it again"
            ) from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != job.sha256:
            raise AudioIntegrityError(
                f"audio of generation {generation_id} at {job.file_path} fails its checksum "
                f"(sha256 {actual[:12]}..., recorded {str(job.sha256)[:12]}...): the file was modified or "
                "corrupted; restore it, or delete the generation and generate it again"
            )
        return data

    # --- recovery ----------------------------------------------------------------------------------------

    def recover(
        self, max_attempts: int = 2, *, shared: bool = False, worker_id: str | None = None
    ) -> RecoveryReport:
        """Run at a worker's start-up: jobs left processing by a crash go back to pending (or fail once they
        were tried `max_attempts` times); orphan files move to quarantine/ beside the outputs directory.

        `shared`: other workers may be running (PostgreSQL): only jobs whose lease lapsed, or that an
        earlier run of `worker_id` held, are re-queued, and only files older than SHARED_ORPHAN_AGE_S move.
        """
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")

        def work(session: Session) -> tuple[list[str], list[str], list[str], dict[str, str]]:
            stuck = select(GenerationRow).where(GenerationRow.status == Status.PROCESSING.value)
            if shared:
                stuck = stuck.where(
                    or_(
                        GenerationRow.worker_id == worker_id,
                        GenerationRow.lease_expires_at.is_(None),
                        GenerationRow.lease_expires_at < db_now(session),
                    )
                )
            requeued, failed = release(
                session,
                list(session.scalars(stuck.with_for_update(skip_locked=True))),
                max_attempts,
                "interrupted by a crash",
            )
            pending = list(session.scalars(_queue().with_only_columns(GenerationRow.id)))
            completed = session.execute(
                select(GenerationRow.file_path, GenerationRow.id).where(
                    GenerationRow.status == Status.COMPLETED.value, GenerationRow.file_path.is_not(None)
                )
            )
            return requeued, failed, pending, {str(path): gid for path, gid in completed}

        requeued, failed, pending, completed = run_transaction(self.engine, work, write=True)
        return RecoveryReport(
            requeued=requeued,
            failed=failed,
            pending=pending,
            quarantined=self._sweep_orphans(set(completed), SHARED_ORPHAN_AGE_S if shared else 0.0),
            missing_files=[gid for path, gid in completed.items() if not self.absolute(path).is_file()],
        )

    def _sweep_orphans(self, completed_paths: set[str], min_age_s: float) -> list[Path]:
        moved = []
        cutoff = time.time() - min_age_s
        for path in sorted(self.outputs.rglob("*")) if self.outputs.is_dir() else []:
            if files.is_temp(path):
                pid = files.writer_pid(path)
                if pid is not None and files.pid_alive(pid):
                    continue  # a live writer's file in progress
            elif path.suffix != ".wav" or str(Path("outputs", path.relative_to(self.outputs))) in (
                completed_paths
            ):
                continue
            if path.is_file() and (min_age_s <= 0 or path.stat().st_mtime < cutoff):
                moved.append(self._quarantine(path))
        return moved


def _resolve(session: Session, id_or_prefix: str) -> str:
    if session.get(GenerationRow, id_or_prefix) is not None:
        return id_or_prefix
    matches: list[str] = []
    if len(id_or_prefix) >= MIN_ID_PREFIX:
        # A range on the primary key (its index serves it) instead of LIKE, whose case rules and wildcards
        # differ between SQLite and PostgreSQL.
        after = id_or_prefix[:-1] + chr(ord(id_or_prefix[-1]) + 1)
        statement = (
            select(GenerationRow.id)
            .where(GenerationRow.id >= id_or_prefix, GenerationRow.id < after)
            .order_by(GenerationRow.id)
            .limit(SHOWN_MATCHES + 1)
        )
        matches = list(session.scalars(statement))
    if not matches:
        raise NotFound(
            f"no generation with id {id_or_prefix!r} (an id, or a unique prefix of {MIN_ID_PREFIX}+ "
            "characters): list ids with history()"
        )
    if len(matches) > 1:
        shown = matches[:SHOWN_MATCHES] + (["..."] if len(matches) > SHOWN_MATCHES else [])
        raise AmbiguousId(id_or_prefix, shown)
    return matches[0]


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
                completed_at=_now(),
                error=f"{why} on each of its {max_attempts}+ attempts (max_attempts={max_attempts}); "
                "submit it again to retry",
                **unclaimed,
            )
        )
    announce(session, requeued + failed)
    return requeued, failed


def _held_by(claim: Generation | None) -> list[Any]:
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


def _refusal(generation_id: str, claim: Generation | None, current: str, target: Status) -> IllegalTransition:
    """Why a change was refused: the claim no longer holds the job (re-queued, claimed again, or ended by
    its new owner), or, without a claim or after a cancellation, the state machine forbids it."""
    if claim is not None and current != Status.CANCELLED.value:
        return LeaseLost(generation_id, claim.worker_id, claim.attempts, current)
    return IllegalTransition(generation_id, current, target.value)


def _row(session: Session, generation_id: str, *, refresh: bool = False) -> GenerationRow:
    row = session.get(GenerationRow, generation_id, populate_existing=refresh)
    if row is None:
        raise NotFound(f"no generation with id {generation_id!r}: list ids with history()")
    return row


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


def _children(generation_id: str) -> Select[GenerationRow]:
    return (
        select(GenerationRow)
        .where(GenerationRow.parent_id == generation_id)
        .order_by(GenerationRow.created_at, GenerationRow.id)
    )


def _descendant_ids(root: Any) -> Select[Any]:
    """Ids of `root` (an id, or a scalar subquery giving one) and everything below it: a recursive CTE
    (SQLite and PostgreSQL). Parent links always point at older rows, so the walk cannot loop."""
    tree = select(GenerationRow.id).where(GenerationRow.id == root).cte("descendants", recursive=True)
    tree = tree.union_all(select(GenerationRow.id).join(tree, GenerationRow.parent_id == tree.c.id))
    return select(tree.c.id)


def _family_ids(generation_id: str) -> Select[Any]:
    """Walk up the parent links to the root, then down from it: one statement with two recursive CTEs."""
    up = (
        select(GenerationRow.id, GenerationRow.parent_id)
        .where(GenerationRow.id == generation_id)
        .cte("ancestors", recursive=True)
    )
    up = up.union_all(
        select(GenerationRow.id, GenerationRow.parent_id).join(up, GenerationRow.id == up.c.parent_id)
    )
    root = select(up.c.id).where(up.c.parent_id.is_(None)).scalar_subquery()
    return _descendant_ids(root)


def _queue() -> Select[GenerationRow]:
    """Pending jobs, oldest first: the order claim() takes them in."""
    return (
        select(GenerationRow)
        .where(GenerationRow.status == Status.PENDING.value)
        .order_by(GenerationRow.created_at, GenerationRow.id)
    )


def _before(created_at: datetime, generation_id: str) -> Any:
    """Rows strictly before (created_at, id) in newest-first order, i.e. older ones."""
    return or_(
        GenerationRow.created_at < created_at,
        and_(GenerationRow.created_at == created_at, GenerationRow.id < generation_id),
    )
