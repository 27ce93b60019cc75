"""A throw-away PostgreSQL server from the local binaries (Debian's postgresql package) for tests.

Skips the test where there are none, or where one cannot be started (e.g. root without a postgres user).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text


def _pg_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(versions[-1]) if versions else None


def _as_postgres_user(command: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A URL template: format it with db=NAME (see fresh_database)."""
    initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl) on this machine")
    root = Path(tempfile.mkdtemp(prefix="dgx-pg-"))
    data = root / "data"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run = lambda cmd: subprocess.run(_as_postgres_user(cmd), check=True, capture_output=True)  # noqa: E731
    options = f"-k {root} -c listen_addresses='' -p {port} -F"
    try:
        if os.geteuid() == 0:
            shutil.chown(root, "postgres")
        run([initdb, "-A", "trust", "-U", "postgres", "--no-sync", "-D", str(data)])
        run([pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"])
    except (
        subprocess.CalledProcessError,
        OSError,
        LookupError,
    ) as error:  # e.g. root without a postgres user
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"could not start a throw-away PostgreSQL: {error}")
    try:
        yield f"postgresql+psycopg://postgres@/{{db}}?host={root}&port={port}"
    finally:
        run([pg_ctl, "-D", str(data), "-m", "immediate", "stop"])
        shutil.rmtree(root, ignore_errors=True)


def fresh_database(server: str, name: str) -> str:
    """CREATE DATABASE name (dropping an earlier one) and return its URL."""
    admin = create_engine(server.format(db="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return server.format(db=name)
