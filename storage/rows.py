"""What the parts of Store share: the clock, one row by id, the pending queue, (created_at, id) order."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.orm import Session

from storage.errors import NotFound
from storage.models import GenerationRow, Status


def utc_now() -> datetime:
    return datetime.now(UTC)


def existing_row(session: Session, generation_id: str, *, refresh: bool = False) -> GenerationRow:
    row = session.get(GenerationRow, generation_id, populate_existing=refresh)
    if row is None:
        raise NotFound(f"no generation with id {generation_id!r}: list ids with history()")
    return row


def pending_queue() -> Select[GenerationRow]:
    """Pending jobs, oldest first: the order claim() takes them in."""
    return (
        select(GenerationRow)
        .where(GenerationRow.status == Status.PENDING.value)
        .order_by(GenerationRow.created_at, GenerationRow.id)
    )


def older_than(created_at: datetime, generation_id: str) -> Any:
    """Rows strictly before (created_at, id) in newest-first order, i.e. older ones."""
    return or_(
        GenerationRow.created_at < created_at,
        and_(GenerationRow.created_at == created_at, GenerationRow.id < generation_id),
    )
