"""The read side of Store: a generation by id or prefix, history pages and search, the queue's state."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.core import Generation, StoreCore
from storage.cursor import Cursor, decode, encode, filters_digest
from storage.db import run_transaction
from storage.errors import AmbiguousId, NotFound
from storage.models import GenerationRow, Status
from storage.rows import existing_row, older_than, pending_queue
from storage.search import apply_search

MAX_PAGE = 500
MIN_ID_PREFIX = 8  # what `dgx-music history` shows; shorter prefixes would collide as the history grows
SHOWN_MATCHES = 5  # ids listed when a prefix is ambiguous


@dataclass(frozen=True)
class Page:
    items: list[Generation]
    next_cursor: str | None


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


class HistoryQueries(StoreCore):
    """Reads only: nothing here writes to the database or the outputs directory."""

    def get(self, generation_id: str) -> Generation:
        """The generation with this id, or with the only id that starts with it (8+ characters).

        Raises `NotFound` when nothing matches (or the prefix is shorter), `AmbiguousId` listing the matches
        when several ids start with it.
        """
        return run_transaction(
            self.engine,
            lambda session: self._snapshot(existing_row(session, _resolve(session, generation_id))),
            write=False,
        )

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
                    page = page.where(older_than(position.created_at, position.id))
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
            row = existing_row(session, generation_id)
            if row.status != Status.PENDING.value:
                return None
            ahead = (
                pending_queue()
                .where(older_than(row.created_at, row.id))
                .with_only_columns(func.count())
                .order_by(None)
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

    def with_status(self, generation_ids: Collection[str], status: Status | str) -> set[str]:
        """Which of ``generation_ids`` (full ids) have ``status``: one query, however many (a worker asks
        this of its running jobs at every poll)."""
        if not generation_ids:
            return set()
        statement = select(GenerationRow.id).where(
            GenerationRow.id.in_(list(generation_ids)), GenerationRow.status == _status(status).value
        )
        return run_transaction(self.engine, lambda session: set(session.scalars(statement)), write=False)

    def count(self, status: Status | str | None = None) -> int:
        statement = select(func.count()).select_from(GenerationRow)
        if status is not None:
            statement = statement.where(GenerationRow.status == _status(status).value)
        return run_transaction(self.engine, lambda session: int(session.scalar(statement) or 0), write=False)


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
