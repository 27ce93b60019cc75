"""Service columns: request parameters, results, timings, errors, attempts; file_path nullable until done.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

NEW_COLUMNS: list[tuple[str, sa.types.TypeEngine[Any]]] = [
    ("request_duration_s", sa.Float()),
    ("seed", sa.BigInteger()),
    ("temperature", sa.Float()),
    ("top_k", sa.Integer()),
    ("top_p", sa.Float()),
    ("guidance_scale", sa.Float()),
    ("target_lufs", sa.Float()),
    ("sample_rate", sa.Integer()),
    ("channels", sa.Integer()),
    ("duration_s", sa.Float()),
    ("loudness_lufs", sa.Float()),
    ("peak_dbfs", sa.Float()),
    ("file_size", sa.BigInteger()),
    ("sha256", sa.String(64)),
    ("started_at", sa.DateTime()),
    ("completed_at", sa.DateTime()),
    ("generation_seconds", sa.Float()),
    ("error", sa.Text()),
    ("device", sa.String(64)),
]


def upgrade() -> None:
    # Seed rows may lack a creation time; give them the migration time so they sort and page like the rest.
    # Bound as a DateTime so SQLite gets SQLAlchemy's fixed-width text, which sorts against the other rows.
    op.get_bind().execute(
        sa.text("UPDATE generations SET created_at = :now WHERE created_at IS NULL").bindparams(
            sa.bindparam("now", type_=sa.DateTime())
        ),
        {"now": datetime.now(UTC).replace(tzinfo=None)},
    )
    with op.batch_alter_table("generations") as batch:
        batch.alter_column("file_path", existing_type=sa.Text(), nullable=True)
        batch.alter_column("created_at", existing_type=sa.DateTime(), nullable=False)
        for name, type_ in NEW_COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.create_check_constraint(
            "ck_generations_status",
            "status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')",
        )
    op.create_index("ix_generations_status_created", "generations", ["status", "created_at", "id"])
    op.create_index("ix_generations_model_created", "generations", ["model_name", "created_at"])
    op.create_index("ix_generations_created", "generations", ["created_at", "id"])


def downgrade() -> None:
    for index in ("ix_generations_created", "ix_generations_model_created", "ix_generations_status_created"):
        op.drop_index(index, table_name="generations")
    with op.batch_alter_table("generations") as batch:
        batch.drop_constraint("ck_generations_status", type_="check")
        batch.drop_column("attempts")
        for name, _ in reversed(NEW_COLUMNS):
            batch.drop_column(name)
        batch.alter_column("created_at", existing_type=sa.DateTime(), nullable=True)
        batch.alter_column("file_path", existing_type=sa.Text(), nullable=False)
