"""Setting up and checking a host: `dgx-music doctor`, `pull`, `bundle` and `db upgrade` / `db current`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mcp_server.cli_common import (
    DatabaseUrl,
    Device,
    Dtype,
    Home,
    Model,
    err,
    fail,
    load_settings,
    out,
    user_errors,
)


def doctor(
    full: Annotated[
        bool, typer.Option("--full", help="Also generate and report latency and memory.")
    ] = False,
    gpu: Annotated[bool, typer.Option("--gpu", help="Only the GPU checks; fail without CUDA.")] = False,
    home: Home = None,
    model: Model = None,
    device: Device = None,
    dtype: Dtype = None,
) -> None:
    """Check this host: torch, GPU, model weights, a short generation, data directory, database, Ardour."""
    settings = load_settings(home=home, model=model, device=device, dtype=dtype)
    from mcp_server.doctor import run_doctor

    raise typer.Exit(run_doctor(settings, out, full=full, gpu_only=gpu))


def pull(
    model: Annotated[
        str,
        typer.Argument(
            help="Alias (small, medium, ..., ace-step, ace-step-base, htdemucs, htdemucs_6s, htdemucs_ft), "
            "hub id or path."
        ),
    ],
    skip_if_offline: Annotated[
        bool,
        typer.Option("--skip-if-offline", help="When huggingface.co cannot be reached, say so and exit 0."),
    ] = False,
) -> None:
    """Download a model into the Hugging Face cache and check that it loads offline."""
    from mcp_server.pull import pull_model

    with user_errors():
        pull_model(model, out, skip_if_offline=skip_if_offline)


def bundle(
    out_file: Annotated[Path, typer.Option("--out", "-o", help="Where to write the bundle.")] = Path(
        "dgx-music.mcpb"
    ),
    model: Model = None,
    home: Home = None,
) -> None:
    """Write an MCP Bundle (.mcpb) for Claude Desktop: double-click it to install this server.

    The bundle runs the dgx-music of this environment; Claude Desktop asks for the model and the data
    directory at install time (defaults: --model / --home, else the environment's settings)."""
    settings = load_settings(model=model, home=home)
    from mcp_server.bundle import installed_command, write_bundle

    command = installed_command()
    if not command.exists():
        fail(f"{command} not found; run `dgx-music bundle` from the environment DGX Music is installed in")
    path = write_bundle(out_file, settings, command)
    out.print(str(path), highlight=False)
    err.print(
        f"double-click {path.name} (or drag it into Claude Desktop's Settings > Extensions) to install",
        soft_wrap=True,
    )


def db_upgrade(home: Home = None, database_url: DatabaseUrl = None) -> None:
    """Create the database or migrate it to the latest schema (also done on every start)."""
    settings = load_settings(home=home, database_url=database_url)
    from storage import Store, db

    with user_errors():
        store = Store(settings.home, settings.database_url)
        revision = db.current_revision(store.engine)
        store.close()
    out.print(f"database at revision {revision} (head)", highlight=False)


def db_current(home: Home = None, database_url: DatabaseUrl = None) -> None:
    """Show the schema revision of the database and whether it is the latest."""
    settings = load_settings(home=home, database_url=database_url)
    from storage import db

    with user_errors():
        engine = db.make_engine(db.database_url(settings.home, settings.database_url))
        current, head = db.current_revision(engine), db.head_revision()
        engine.dispose()
    state = "up to date" if current == head else f"behind head {head}: run `dgx-music db upgrade`"
    out.print(f"database at revision {current or 'none (empty)'}: {state}", highlight=False)
