"""Database engine set-up: SQLite tuned for concurrency and durability, retries, migrations to head."""

from __future__ import annotations

import fcntl
import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import DateTime, Engine, create_engine, event, func, select, type_coerce
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from storage.errors import StorageBusy

log = logging.getLogger(__name__)

DATABASE_FILE = "dgx-music.db"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"

BUSY_TIMEOUT_MS = 10_000
# busy_timeout already waits 10 s per attempt; these retries cover what it cannot (a stale WAL read snapshot
# turning into a write, a checkpoint racing a new connection) so "database is locked" never reaches a caller.
RETRY_ATTEMPTS = 5

T = TypeVar("T")

# PostgreSQL NOTIFY channel that carries the ids of jobs whose row changed (comma-separated), sent inside the
# transaction that changed them, so a listener hears of a change exactly when it becomes visible.
JOBS_CHANNEL = "dgx_music_jobs"
# pg_advisory_xact_lock key that serialises queue-bound checks (an arbitrary constant: "dgxq" in ASCII).
QUEUE_LOCK_KEY = 0x64677871
MIGRATION_LOCK_KEY = 0x6467786D  # "dgxm": serialises migrations between hosts sharing one database
# Our transactions last milliseconds (the longest writes one WAV under a row lock). A process stalled inside
# one (SIGSTOP, a frozen VM) would hold its row locks, and with them the jobs its lease no longer covers;
# PostgreSQL ends such a session after this long, so other workers can take those jobs over.
STALLED_TRANSACTION_TIMEOUT = "10s"


def default_home() -> Path:
    """DGX_MUSIC_HOME, else $XDG_DATA_HOME/dgx-music, else ~/.local/share/dgx-music (empty means unset)."""
    if home := os.environ.get("DGX_MUSIC_HOME"):
        return Path(home).expanduser()
    if xdg := os.environ.get("XDG_DATA_HOME"):
        return Path(xdg).expanduser() / "dgx-music"
    return Path.home() / ".local" / "share" / "dgx-music"


def database_url(home: Path, database_url: str | None = None) -> str:
    """The URL given, else DGX_MUSIC_DATABASE_URL, else the SQLite file in the data directory."""
    return database_url or os.environ.get("DGX_MUSIC_DATABASE_URL") or f"sqlite:///{home / DATABASE_FILE}"


def _sqlite_on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    # Let SQLAlchemy's begin hook below own transactions instead of pysqlite's implicit BEGIN.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    # FULL, not NORMAL: in WAL mode NORMAL survives an application crash but can lose the last commits on a
    # power cut, and a lost "completed" row would orphan a finished WAV. FULL fsyncs the WAL on each commit;
    # we commit a handful of rows per multi-second generation, so the cost is invisible.
    cursor.execute("PRAGMA synchronous = FULL")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    # Writers take the write lock up front (BEGIN IMMEDIATE): a deferred transaction that reads and then
    # writes can fail with SQLITE_BUSY at once, bypassing busy_timeout.
    mode = "IMMEDIATE" if connection.get_execution_options().get("write") else "DEFERRED"
    connection.exec_driver_sql(f"BEGIN {mode}")


def _postgres_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"SET idle_in_transaction_session_timeout = '{STALLED_TRANSACTION_TIMEOUT}'")
    cursor.close()
    dbapi_connection.commit()


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        engine = create_engine(url, pool_pre_ping=True)
        if parsed.get_backend_name() == "postgresql":
            event.listen(engine, "connect", _postgres_on_connect)
        return engine
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000})
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _is_busy(error: OperationalError) -> bool:
    message = str(error.orig).lower()
    return "locked" in message or "busy" in message


def run_transaction(engine: Engine, work: Callable[[Session], T], *, write: bool) -> T:
    """Run `work` in one transaction, retrying the whole of it (bounded, with jitter) while SQLite is busy."""
    bind = engine.execution_options(write=True) if write else engine
    for attempt in range(RETRY_ATTEMPTS):
        try:
            with Session(bind, expire_on_commit=False) as session, session.begin():
                return work(session)
        except OperationalError as error:
            if not _is_busy(error):
                raise
            time.sleep(min(0.05 * 2**attempt, 1.0) * (0.5 + random.random()))
    raise StorageBusy(
        f"the database stayed locked through {RETRY_ATTEMPTS} retries of {BUSY_TIMEOUT_MS} ms each; "
        "another process is holding a long write transaction: stop it or retry later"
    )


def alembic_config(url: str) -> Config:
    """A config that works from an installed package (no alembic.ini or working directory needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None, "storage/migrations/versions holds no revision"
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


@contextmanager
def _migration_lock(home: Path) -> Iterator[None]:
    """Serialise migrations of one data directory between processes starting at the same moment."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".migrate.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def upgrade(engine: Engine, home: Path, revision: str = "head") -> None:
    """Migrate the database to `revision` (default head); a no-op when it is already there."""
    current = current_revision(engine)
    if revision == "head" and current == head_revision():
        return
    # One line for the whole migration: alembic's own INFO chatter is silenced by the application.
    log.info("migrating the database from revision %s to %s", current or "none (new database)", revision)
    with _migration_lock(home), engine.execution_options(write=True).begin() as connection:
        if connection.dialect.name == "postgresql":
            # Hosts with separate data directories may start at the same moment: one migrates, the others
            # wait here and then find the schema at head (alembic's upgrade is then a no-op).
            connection.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
        config = alembic_config(engine.url.render_as_string(hide_password=False))
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def db_now(session: Session) -> Any:
    """Now, in naive UTC as the columns store it, on the database's clock where there is one to share.

    On PostgreSQL every host compares leases against the server's clock, so worker clocks may drift; SQLite
    lives on one machine, whose clock every process already shares.
    """
    if is_postgres(session):
        return type_coerce(func.timezone("UTC", func.clock_timestamp()), DateTime())
    return datetime.now(UTC)


def announce(session: Session, job_ids: list[str]) -> None:
    """Tell PostgreSQL listeners (other machines' front-ends and workers) that these jobs changed."""
    if job_ids and is_postgres(session):
        session.execute(select(func.pg_notify(JOBS_CHANNEL, ",".join(job_ids))))


def lock_queue_bound(session: Session) -> None:
    """Serialise "count pending, then insert" between PostgreSQL transactions until this one ends.

    On SQLite the write lock (BEGIN IMMEDIATE) already does it. Under READ COMMITTED the count that follows
    the lock sees every insert committed by the previous holder, so the bound is exact.
    """
    if is_postgres(session):
        session.execute(select(func.pg_advisory_xact_lock(QUEUE_LOCK_KEY)))
