"""Alembic environment. Store passes its own connection (pragmas set); the alembic CLI opens one."""

from __future__ import annotations

from typing import Any

from alembic import context

from storage.db import database_url, default_home, make_engine
from storage.models import Base, include_object


def run_migrations(connection: Any) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        include_object=include_object,
        render_as_batch=True,  # SQLite alters columns by copying the table
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url") or database_url(default_home())
    engine = make_engine(url)
    with engine.execution_options(write=True).begin() as connection:
        run_migrations(connection)
    engine.dispose()


main()
