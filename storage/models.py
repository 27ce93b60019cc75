"""The schema as SQLAlchemy 2.0 typed models. Only Alembic migrations create it; the two must agree."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class Status(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


# Every legal change, target -> the states it may come from. processing -> pending is the crash re-queue.
ALLOWED_SOURCES: dict[Status, frozenset[Status]] = {
    Status.PROCESSING: frozenset({Status.PENDING}),
    Status.COMPLETED: frozenset({Status.PROCESSING}),
    Status.FAILED: frozenset({Status.PROCESSING}),
    Status.CANCELLED: frozenset({Status.PENDING, Status.PROCESSING}),
    Status.PENDING: frozenset({Status.PROCESSING}),
}


LINEAGE_OPERATION_CHECK = "operation IN ('generate', 'continue', 'melody', 'edit', 'stems', 'remix')"
LINEAGE_STEM_CHECK = "(operation = 'stems') = (stem IS NOT NULL)"
LINEAGE_SECTION_CHECK = (
    "(operation = 'edit' AND section_start_s IS NOT NULL AND section_end_s IS NOT NULL"
    " AND section_start_s >= 0 AND section_end_s > section_start_s) OR "
    "(operation <> 'edit' AND section_start_s IS NULL AND section_end_s IS NULL)"
)
LINEAGE_SOURCE_CHECK = (
    "(source_file_name IS NULL) = (source_file_sha256 IS NULL) AND "
    "(source_job_id IS NULL OR source_file_name IS NULL)"
)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC (SQLite has no time zones; fixed-width text stays sortable), returns aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class GenerationRow(Base):
    __tablename__ = "generations"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')",
            name="ck_generations_status",
        ),
        Index("ix_generations_status_created", "status", "created_at", "id"),
        Index("ix_generations_model_created", "model_name", "created_at"),
        Index("ix_generations_created", "created_at", "id"),
        # Lineage (migration 0004); the checks restate storage.lineage.Lineage's rules for other writers.
        CheckConstraint(LINEAGE_OPERATION_CHECK, name="ck_generations_operation"),
        CheckConstraint(LINEAGE_STEM_CHECK, name="ck_generations_stem"),
        CheckConstraint(LINEAGE_SECTION_CHECK, name="ck_generations_section"),
        CheckConstraint(LINEAGE_SOURCE_CHECK, name="ck_generations_source"),
        Index("ix_generations_parent", "parent_id"),
        Index("ix_generations_source_job", "source_job_id"),
        Index("ix_generations_status_lease", "status", "lease_expires_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    prompt: Mapped[str] = mapped_column(Text)
    model_name: Mapped[str] = mapped_column(String(200))
    # Relative to the data directory; NULL until the file is complete on disk.
    file_path: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)

    # Request parameters.
    request_duration_s: Mapped[float | None] = mapped_column(Float)
    seed: Mapped[int | None] = mapped_column(BigInteger)  # the requested seed, replaced by the one used
    temperature: Mapped[float | None] = mapped_column(Float)
    top_k: Mapped[int | None] = mapped_column(Integer)
    top_p: Mapped[float | None] = mapped_column(Float)
    guidance_scale: Mapped[float | None] = mapped_column(Float)
    target_lufs: Mapped[float | None] = mapped_column(Float)

    # Results.
    sample_rate: Mapped[int | None] = mapped_column(Integer)
    channels: Mapped[int | None] = mapped_column(Integer)
    duration_s: Mapped[float | None] = mapped_column(Float)
    loudness_lufs: Mapped[float | None] = mapped_column(Float)
    peak_dbfs: Mapped[float | None] = mapped_column(Float)
    file_size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))

    # Timings, failure and provenance.
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    generation_seconds: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    device: Mapped[str | None] = mapped_column(String(64))

    # Lineage. Both links are foreign keys without cascades: a row others derive from cannot be deleted
    # alone (Store.delete removes a whole subtree in one statement).
    parent_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("generations.id", name="fk_generations_parent")
    )
    operation: Mapped[str] = mapped_column(String(16), default="generate", server_default="generate")
    source_job_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("generations.id", name="fk_generations_source_job")
    )
    source_file_name: Mapped[str | None] = mapped_column(String(255))
    source_file_sha256: Mapped[str | None] = mapped_column(String(64))
    stem: Mapped[str | None] = mapped_column(String(32))
    section_start_s: Mapped[float | None] = mapped_column(Float)
    section_end_s: Mapped[float | None] = mapped_column(Float)

    # The claim of a processing job (storage.leases): which worker holds it (kept once it ended: who made
    # it) and until when. A claim is (worker_id, attempts): the fencing token its result is committed with.
    worker_id: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class WorkerRow(Base):
    """A worker process that serves the queue; live while its heartbeat is recent."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    models: Mapped[list[str]] = mapped_column(JSON)  # model ids it serves; ["*"] = any model
    state: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime())


# params dict key (the public contract) -> column attribute.
PARAM_COLUMNS: dict[str, str] = {
    "duration": "request_duration_s",
    "seed": "seed",
    "temperature": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "guidance_scale": "guidance_scale",
    "loudness_lufs": "target_lufs",
}


def include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """Alembic autogenerate filter: the FTS5 table and its shadow tables are made by hand in a migration."""
    return not (type_ == "table" and name is not None and name.startswith("generations_fts"))
