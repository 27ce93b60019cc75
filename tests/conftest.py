"""Shared fixtures: tiny random MusicGen checkpoints in the hub layout, an empty data directory."""

from __future__ import annotations

import os

# Tests run servers as subprocesses beside the test process on a 2-core machine: with OpenMP's default of one
# spinning thread per core, two torch processes starve each other (seconds per decode step instead of
# milliseconds). One thread per process keeps every test's timing sane; subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path

import pytest

from engine.musicgen.checkpoints import build_random_checkpoint

pytest_plugins = ["pg_testing"]  # the throw-away PostgreSQL `server` fixture


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few-megabyte mono MusicGen checkpoint, built once per test session."""
    return build_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "musicgen-tiny")


@pytest.fixture(scope="session")
def tiny_stereo_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "musicgen-tiny-stereo", stereo=True)


@pytest.fixture
def data_home(tmp_path: Path) -> Path:
    """An empty DGX_MUSIC_HOME."""
    home = tmp_path / "home"
    home.mkdir()
    return home


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
