"""Crash-safe file operations: atomic writes (temp file, fsync, rename, fsync dir) and quarantine moves."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

TEMP_MARK = ".tmp-"  # a staged file is ".<final name>.tmp-<writer pid>-<random>"


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(directory: Path) -> None:
    """mkdir -p that also fsyncs each new directory's parent, so the new entries survive a power cut."""
    missing: list[Path] = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            continue
        fsync_dir(path.parent)


def is_temp(path: Path) -> bool:
    return path.name.startswith(".") and TEMP_MARK in path.name


def writer_pid(temp: Path) -> int | None:
    try:
        return int(temp.name.rsplit(TEMP_MARK, 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stage(final: Path, data: bytes) -> Path:
    """Write `data` durably to a temp file beside `final`; nothing is visible under `final` yet."""
    make_dirs(final.parent)
    temp = final.with_name(f".{final.name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def publish(temp: Path, final: Path) -> None:
    """Atomically make the staged file visible as `final` and make the rename durable."""
    os.replace(temp, final)
    fsync_dir(final.parent)


def write_atomic(final: Path, data: bytes) -> None:
    publish(stage(final, data), final)


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    fsync_dir(path.parent)


def quarantine(home: Path, path: Path) -> Path:
    """Move `path` (inside `home`) under home/quarantine/, keeping its relative path; never overwrite."""
    target = home / "quarantine" / path.relative_to(home)
    make_dirs(target.parent)
    candidate, n = target, 1
    while True:  # link() fails if the name exists, so two sweepers can never overwrite each other's find
        try:
            os.link(path, candidate)
            break
        except FileExistsError:
            candidate, n = target.with_name(f"{target.name}.{n}"), n + 1
    path.unlink()
    fsync_dir(candidate.parent)
    fsync_dir(path.parent)
    return candidate
