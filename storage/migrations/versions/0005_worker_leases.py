"""Worker leases: who holds a processing job and until when, and the workers table (heartbeats, models).

Plain ADD COLUMN (no batch copy of the table): SQLite adds columns in place, so the FTS triggers of 0003
stay as they are.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("generations", sa.Column("worker_id", sa.String(200), nullable=True))
    op.add_column("generations", sa.Column("lease_expires_at", sa.DateTime(), nullable=True))
    op.create_index("ix_generations_status_lease", "generations", ["status", "lease_expires_at"])
    op.create_table(
        "workers",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("models", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(200), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("workers")
    op.drop_index("ix_generations_status_lease", table_name="generations")
    # SQLite >= 3.35 drops columns in place too (no table copy that would lose the FTS triggers).
    op.drop_column("generations", "lease_expires_at")
    op.drop_column("generations", "worker_id")
