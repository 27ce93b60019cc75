"""What every `dgx-music` command shares: the two consoles, the common options, and how a command ends.

``fail`` and ``user_errors`` turn an expected failure into one ``error: ...`` line on stderr and exit
status 1; ``_print_result`` writes what a script captures on stdout, ``_note`` the human summary on stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from mcp_server.config import ConfigError, Settings

# soft_wrap: a message is one line however narrow the terminal (or the pipe, which rich takes as 80 columns).
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

Home = Annotated[Path | None, typer.Option("--home", help="Data directory (env DGX_MUSIC_HOME).")]
Model = Annotated[
    str | None, typer.Option("--model", "-m", help="Model alias, hub id or path (env DGX_MUSIC_MODEL).")
]
Device = Annotated[str | None, typer.Option(help="cuda, cuda:N or cpu (env DGX_MUSIC_DEVICE).")]
Dtype = Annotated[str | None, typer.Option(help="bfloat16, float16 or float32 (env DGX_MUSIC_DTYPE).")]
DatabaseUrl = Annotated[str | None, typer.Option(help="SQLAlchemy URL (env DGX_MUSIC_DATABASE_URL).")]


def fail(message: str) -> NoReturn:
    err.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@contextmanager
def user_errors() -> Iterator[None]:
    """Errors whose message is written for the user become one line on stderr and exit status 1."""
    try:
        yield
    except ConfigError as exc:
        fail(str(exc))
    except Exception as exc:
        # Imported here: these packages pull in torch, which `--help` and early refusals should not wait for.
        from engine import EngineError
        from mcp_server.service import ServiceError
        from storage import StorageError

        if isinstance(exc, ServiceError | EngineError | StorageError):
            fail(str(exc))
        raise


def load_settings(**flags: Any) -> Settings:
    try:
        return Settings.load(None, **flags)
    except ConfigError as exc:
        fail(str(exc))


def _print_result(text: str) -> None:
    """What a script captures: plain text on stdout, no markup, never wrapped at the terminal width."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _note(text: str) -> None:
    """The human summary: one line on stderr."""
    err.print(text, highlight=False, markup=False, soft_wrap=True)


def _progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
