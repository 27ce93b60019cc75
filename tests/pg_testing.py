"""A throw-away PostgreSQL server from the local binaries (Debian's postgresql package) for tests.

Skips the test where there are none, or where one cannot be started (e.g. root without a postgres user).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from postgres_server import PostgresUnavailable, postgres_server
from sqlalchemy import create_engine, text


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A URL template: format it with db=NAME (see fresh_database)."""
    try:
        with postgres_server() as url:
            yield url
    except PostgresUnavailable as error:  # e.g. no binaries, or root without a postgres user
        pytest.skip(str(error))


def fresh_database(server: str, name: str) -> str:
    """CREATE DATABASE name (dropping an earlier one) and return its URL."""
    admin = create_engine(server.format(db="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return server.format(db=name)
