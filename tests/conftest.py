"""Shared fixtures: tiny random MusicGen checkpoints (mono, stereo, melody) in the hub layout, an empty data
directory."""

from __future__ import annotations

import os

# Tests run servers as subprocesses beside the test process on a 2-core machine: with OpenMP's default of one
# spinning thread per core, two torch processes starve each other (seconds per decode step instead of
# milliseconds). One thread per process keeps every test's timing sane; subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from collections.abc import Iterator
from pathlib import Path

import pytest
from postgres_server import PostgresUnavailable, postgres_server

from engine.musicgen.checkpoints import build_random_checkpoint

pytest_plugins = ["pg_testing"]  # the throw-away PostgreSQL `server` fixture


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few-megabyte mono MusicGen checkpoint, built once per test session."""
    return build_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "musicgen-tiny")


@pytest.fixture(scope="session")
def tiny_stereo_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "musicgen-tiny-stereo", stereo=True)


@pytest.fixture(scope="session")
def tiny_melody_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny MusicGen-Melody checkpoint (conditioned through a decoder prefix, not cross-attention)."""
    return build_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "musicgen-tiny-melody", melody=True)


@pytest.fixture
def data_home(tmp_path: Path) -> Path:
    """An empty DGX_MUSIC_HOME."""
    home = tmp_path / "home"
    home.mkdir()
    return home


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads, and on a shared, busy CPU OpenMP threads waiting for
    each other at every op made the decoding modules ten times slower. Modules use it with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def postgres_url_template() -> Iterator[str]:
    """One throw-away PostgreSQL server per test session; skips where there is none (or no psycopg)."""
    pytest.importorskip("psycopg")
    try:
        with postgres_server() as template:
            yield template
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def postgres_database(postgres_url_template: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a fresh, empty database on that server, dropped after the test."""
    from sqlalchemy import create_engine, text

    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    admin = create_engine(postgres_url_template.format(db="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield postgres_url_template.format(db=name)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()
