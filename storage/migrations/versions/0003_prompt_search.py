"""Full-text search over prompts: an SQLite FTS5 table kept in step by triggers (other databases: none).

The FTS table keeps its own copy of (id, prompt) rather than pointing at generations.rowid, because VACUUM
may renumber the rowids of a table whose key is not an INTEGER PRIMARY KEY. A later migration that copies
the generations table (batch_alter_table) drops these triggers and must recreate them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SQLITE_FTS = [
    "CREATE VIRTUAL TABLE generations_fts USING fts5("
    "id UNINDEXED, prompt, tokenize = 'porter unicode61 remove_diacritics 2')",
    "INSERT INTO generations_fts (id, prompt) SELECT id, prompt FROM generations",
    "CREATE TRIGGER generations_fts_insert AFTER INSERT ON generations BEGIN "
    "INSERT INTO generations_fts (id, prompt) VALUES (new.id, new.prompt); END",
    "CREATE TRIGGER generations_fts_delete AFTER DELETE ON generations BEGIN "
    "DELETE FROM generations_fts WHERE id = old.id; END",
    "CREATE TRIGGER generations_fts_update AFTER UPDATE OF id, prompt ON generations BEGIN "
    "DELETE FROM generations_fts WHERE id = old.id; "
    "INSERT INTO generations_fts (id, prompt) VALUES (new.id, new.prompt); END",
]


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return  # storage.search falls back to case-insensitive LIKE
    for statement in SQLITE_FTS:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for trigger in ("generations_fts_update", "generations_fts_delete", "generations_fts_insert"):
        op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    op.execute("DROP TABLE IF EXISTS generations_fts")
