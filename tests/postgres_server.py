"""A throw-away PostgreSQL server from the local binaries, for storage tests that run on both databases."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class PostgresUnavailable(Exception):
    """No binaries here, or the server would not start (e.g. root without a postgres user)."""


def _pg_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(versions[-1]) if versions else None


def _as_postgres_user(command: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _run(command: list[str]) -> None:
    subprocess.run(_as_postgres_user(command), check=True, capture_output=True)


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yields a URL template with a `{db}` placeholder for the database name; stops the server after."""
    initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
    if not initdb or not pg_ctl:
        raise PostgresUnavailable("no PostgreSQL binaries (initdb, pg_ctl) on this machine")
    root = Path(tempfile.mkdtemp(prefix="dgx-pg-"))
    data = root / "data"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    options = f"-k {root} -c listen_addresses='' -p {port} -F"
    try:
        if os.geteuid() == 0:
            shutil.chown(root, "postgres")
        _run([initdb, "-A", "trust", "-U", "postgres", "--no-sync", "-D", str(data)])
        _run([pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"])
    except (subprocess.CalledProcessError, OSError, LookupError) as error:
        shutil.rmtree(root, ignore_errors=True)
        raise PostgresUnavailable(f"could not start a throw-away PostgreSQL: {error}") from error
    try:
        yield f"postgresql+psycopg://postgres@/{{db}}?host={root}&port={port}"
    finally:
        _run([pg_ctl, "-D", str(data), "-m", "immediate", "stop"])
        shutil.rmtree(root, ignore_errors=True)
