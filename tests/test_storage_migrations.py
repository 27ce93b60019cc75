"""Migrations are the only way the schema is made; models and migrations agree; old databases upgrade."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from storage import Status, Store, db, default_home
from storage.models import Base, include_object


def test_new_home_is_migrated_to_head_on_first_use(data_home: Path) -> None:
    store = Store(data_home)
    store.create("a first prompt", "facebook/musicgen-small", {"duration": 5.0})
    store.close()

    with sqlite3.connect(data_home / db.DATABASE_FILE) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert raw.execute("SELECT version_num FROM alembic_version").fetchall() == [(db.head_revision(),)]
        tables = {name for (name,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"generations", "generations_fts", "alembic_version"} <= tables


def test_every_connection_gets_the_durability_pragmas(data_home: Path) -> None:
    store = Store(data_home)
    with store.engine.connect() as connection:
        pragmas = {
            name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")
        }
    assert pragmas == {
        "journal_mode": "wal",
        "busy_timeout": db.BUSY_TIMEOUT_MS,
        "foreign_keys": 1,
        "synchronous": 2,
    }


def test_models_and_migrations_agree(data_home: Path) -> None:
    store = Store(data_home)
    with store.engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"include_object": include_object, "compare_type": True}
        )
        assert compare_metadata(context, Base.metadata) == []


def test_upgrade_from_the_seed_revision_keeps_rows(data_home: Path) -> None:
    engine = db.make_engine(db.database_url(data_home))
    db.upgrade(engine, data_home, "0001")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO generations (id, prompt, model_name, file_path, status, created_at, metadata) "
                "VALUES (:id, :prompt, 'facebook/musicgen-small', :path, 'completed', :created, '{}'), "
                "(:id2, 'old pending job', 'facebook/musicgen-small', '', 'pending', NULL, NULL)"
            ),
            {
                "id": "0b3c9a55-8d2e-4a1c-9f61-2f0f7a4b2c11",
                "prompt": "seed era lofi piano",
                "path": "outputs/old.wav",
                "created": datetime(2026, 1, 2, 3, 4, 5),
                "id2": "1b3c9a55-8d2e-4a1c-9f61-2f0f7a4b2c11",
            },
        )
    assert db.current_revision(engine) == "0001"
    engine.dispose()

    store = Store(data_home)
    assert db.current_revision(store.engine) == db.head_revision()
    old = store.get("0b3c9a55-8d2e-4a1c-9f61-2f0f7a4b2c11")
    assert (old.status, old.prompt, old.attempts) == (Status.COMPLETED, "seed era lofi piano", 0)
    assert old.created_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert old.file_path == data_home / "outputs/old.wav"
    assert store.get("1b3c9a55-8d2e-4a1c-9f61-2f0f7a4b2c11").created_at is not None
    assert [g.id for g in store.history(query="lofi").items] == [old.id]  # FTS was back-filled
    assert store.queue_position("1b3c9a55-8d2e-4a1c-9f61-2f0f7a4b2c11") == 1


def test_downgrade_to_base_and_back(data_home: Path) -> None:
    store = Store(data_home)
    url = store.engine.url.render_as_string(hide_password=False)
    command.downgrade(db.alembic_config(url), "base")
    assert db.current_revision(store.engine) is None
    command.upgrade(db.alembic_config(url), "head")
    assert store.count() == 0
    assert store.create("after a round trip", "m", {}).status is Status.PENDING


def test_default_home_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DGX_MUSIC_HOME", str(tmp_path / "explicit"))
    assert default_home() == tmp_path / "explicit"
    monkeypatch.setenv("DGX_MUSIC_HOME", "")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_home() == tmp_path / "xdg" / "dgx-music"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert default_home() == tmp_path / "user" / ".local" / "share" / "dgx-music"


def test_database_url_overrides_the_file_in_home(
    monkeypatch: pytest.MonkeyPatch, data_home: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere.db"
    monkeypatch.setenv("DGX_MUSIC_DATABASE_URL", f"sqlite:///{elsewhere}")
    Store(data_home).create("routed by url", "m", {})
    assert elsewhere.exists()
    assert not (data_home / db.DATABASE_FILE).exists()
