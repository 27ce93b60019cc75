"""`dgx-music serve` and `dgx-music worker`: the two long-running processes that load models (serve can also
run as a front-end without them) and the settings flags they share.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Any

import typer

from mcp_server.cli_common import DatabaseUrl, Device, Dtype, Home, Model, load_settings, user_errors
from mcp_server.config import Settings, check_http_exposure
from mcp_server.logs import setup_logging


class TransportName(enum.StrEnum):
    stdio = "stdio"
    sse = "sse"
    http = "http"


# The settings flags of both long-running processes that load models, `serve` and `worker`.
_MODEL_PROCESS_FLAGS = ("home", "model", "device", "dtype", "database_url", "max_batch", "log_level")


def _model_process_settings(ctx: typer.Context, **role_flags: Any) -> Settings:
    """Settings of `serve` or `worker`: the flags they share, read from the command's parsed parameters so
    each is passed on in one place, plus `role_flags`, the settings that only this command takes."""
    return load_settings(**{name: ctx.params[name] for name in _MODEL_PROCESS_FLAGS}, **role_flags)


def serve(
    ctx: typer.Context,
    transport: Annotated[TransportName, typer.Option(help="stdio for Claude Desktop/Code; sse or http.")] = (
        TransportName.stdio
    ),
    host: Annotated[
        str,
        typer.Option(envvar="DGX_MUSIC_HOST", help="HTTP bind address; off loopback needs DGX_MUSIC_TOKEN."),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="DGX_MUSIC_PORT", min=1, max=65535, help="HTTP port.")] = 8000,
    home: Home = None,
    model: Model = None,
    device: Device = None,
    dtype: Dtype = None,
    database_url: DatabaseUrl = None,
    max_batch: Annotated[
        int | None, typer.Option(help="Jobs decoded together (env DGX_MUSIC_MAX_BATCH).")
    ] = None,
    max_queue: Annotated[
        int | None, typer.Option(help="Pending jobs allowed (env DGX_MUSIC_MAX_QUEUE).")
    ] = None,
    job_timeout_s: Annotated[
        float | None, typer.Option(help="Per-job time limit in seconds (env DGX_MUSIC_JOB_TIMEOUT_S).")
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = None,
    no_worker: Annotated[
        bool,
        typer.Option(
            "--no-worker",
            help="A stateless front-end: no models here; `dgx-music worker` processes do the work "
            "(needs a shared PostgreSQL DGX_MUSIC_DATABASE_URL to reach them from other hosts).",
        ),
    ] = False,
) -> None:
    """Run the MCP server (stdio by default: stdout carries the protocol, logs go to stderr and a file)."""
    settings = _model_process_settings(ctx, max_queue=max_queue, job_timeout_s=job_timeout_s)
    with user_errors():
        if transport is not TransportName.stdio:
            check_http_exposure(settings.token, host)  # before the slow imports: refuse at once
        setup_logging(settings.log_level, settings.log_file)
        from mcp_server.serving import serve as run_server

        run_server(settings, transport.value, host, port, run_worker=not no_worker)


def worker(
    ctx: typer.Context,
    models: Annotated[
        str | None,
        typer.Option(
            help="Models this worker serves, comma-separated; * = any (env DGX_MUSIC_WORKER_MODELS)."
        ),
    ] = None,
    worker_id: Annotated[
        str | None, typer.Option(help="Its name in the workers table (env DGX_MUSIC_WORKER_ID).")
    ] = None,
    host: Annotated[
        str,
        typer.Option(
            envvar="DGX_MUSIC_WORKER_HOST",
            help="/health and /metrics bind address; off loopback needs a token.",
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(envvar="DGX_MUSIC_WORKER_PORT", min=1, max=65535, help="/health and /metrics port.")
    ] = 8100,
    home: Home = None,
    model: Model = None,
    device: Device = None,
    dtype: Dtype = None,
    database_url: DatabaseUrl = None,
    outputs: Annotated[
        Path | None, typer.Option(help="Audio directory shared by every host (env DGX_MUSIC_OUTPUTS).")
    ] = None,
    lease_s: Annotated[
        float | None,
        typer.Option(help="Seconds a claimed job survives without a heartbeat (env DGX_MUSIC_LEASE_S)."),
    ] = None,
    max_batch: Annotated[
        int | None, typer.Option(help="Jobs decoded together (env DGX_MUSIC_MAX_BATCH).")
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = None,
) -> None:
    """Run a worker: load models and decode queued jobs; no MCP, only /health and /metrics over HTTP."""
    settings = _model_process_settings(
        ctx, outputs=outputs, worker_models=models, worker_id=worker_id, lease_s=lease_s
    )
    with user_errors():
        check_http_exposure(settings.token, host)
        setup_logging(settings.log_level, settings.home / "logs" / "worker.log")
        from mcp_server.worker_process import run_worker

        run_worker(settings, host, port)
