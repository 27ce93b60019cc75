"""Lineage: parent, operation, conditioning source, stem name and edit section of each generation.

On SQLite the foreign keys and checks need the table copied (batch mode), which drops the full-text
triggers of 0003: both directions re-create them from 0003's own statements.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# The schema as of this revision (storage.models may move on; a migration must not).
OPERATION_CHECK = "operation IN ('generate', 'continue', 'melody', 'edit', 'stems', 'remix')"
STEM_CHECK = "(operation = 'stems') = (stem IS NOT NULL)"
SECTION_CHECK = (
    "(operation = 'edit' AND section_start_s IS NOT NULL AND section_end_s IS NOT NULL"
    " AND section_start_s >= 0 AND section_end_s > section_start_s) OR "
    "(operation <> 'edit' AND section_start_s IS NULL AND section_end_s IS NULL)"
)
SOURCE_CHECK = (
    "(source_file_name IS NULL) = (source_file_sha256 IS NULL) AND "
    "(source_job_id IS NULL OR source_file_name IS NULL)"
)
CHECKS = {
    "ck_generations_operation": OPERATION_CHECK,
    "ck_generations_stem": STEM_CHECK,
    "ck_generations_section": SECTION_CHECK,
    "ck_generations_source": SOURCE_CHECK,
}
FOREIGN_KEYS = {"fk_generations_parent": "parent_id", "fk_generations_source_job": "source_job_id"}
COLUMNS = (
    "parent_id", "operation", "source_job_id", "source_file_name", "source_file_sha256", "stem",
    "section_start_s", "section_end_s",
)  # fmt: skip
INDEXES = {"ix_generations_parent": "parent_id", "ix_generations_source_job": "source_job_id"}


def _restore_search_triggers() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    search = context.script.get_revision("0003")
    assert search is not None and search.module is not None
    for statement in search.module.SQLITE_FTS:
        if statement.startswith("CREATE TRIGGER"):
            op.execute(statement)


def upgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.add_column(sa.Column("parent_id", sa.String(36), nullable=True))
        batch.add_column(sa.Column("operation", sa.String(16), nullable=False, server_default="generate"))
        batch.add_column(sa.Column("source_job_id", sa.String(36), nullable=True))
        batch.add_column(sa.Column("source_file_name", sa.String(255), nullable=True))
        batch.add_column(sa.Column("source_file_sha256", sa.String(64), nullable=True))
        batch.add_column(sa.Column("stem", sa.String(32), nullable=True))
        batch.add_column(sa.Column("section_start_s", sa.Float(), nullable=True))
        batch.add_column(sa.Column("section_end_s", sa.Float(), nullable=True))
        for name, column in FOREIGN_KEYS.items():
            batch.create_foreign_key(name, "generations", [column], ["id"])
        for name, condition in CHECKS.items():
            batch.create_check_constraint(name, condition)
    for name, column in INDEXES.items():
        op.create_index(name, "generations", [column])
    _restore_search_triggers()


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="generations")
    with op.batch_alter_table("generations") as batch:
        for name in CHECKS:
            batch.drop_constraint(name, type_="check")
        for name in FOREIGN_KEYS:
            batch.drop_constraint(name, type_="foreignkey")
        for column in COLUMNS:
            batch.drop_column(column)
    _restore_search_triggers()
