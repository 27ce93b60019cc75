"""`dgx-music`: serve the MCP server, generate from the shell, browse the history, export to Ardour, check and
set up a host.

Expected failures (bad input, unknown model, bad configuration) end with one ``error: ...`` line on stderr
and exit status 1; a traceback means a bug. Commands that make a file print only its path on stdout (never
wrapped, so ``P=$(dgx-music generate ...)`` works) and their human summary on stderr.
"""

from __future__ import annotations

import enum
import json
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import anyio
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from mcp_server.config import ConfigError, Settings, check_http_exposure
from mcp_server.logs import setup_logging

if TYPE_CHECKING:
    from engine import GenerationRequest
    from mcp_server.schemas import Job
    from mcp_server.service import JobService

app = typer.Typer(
    name="dgx-music",
    help="Generate music with MusicGen: an MCP server, a history and Ardour export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema: upgrade to the latest revision or show the current one.")
app.add_typer(db_app, name="db")

# soft_wrap: a message is one line however narrow the terminal (or the pipe, which rich takes as 80 columns).
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


class TransportName(enum.StrEnum):
    stdio = "stdio"
    sse = "sse"
    http = "http"


class ArrangementName(enum.StrEnum):
    sequential = "sequential"
    stacked = "stacked"
    song = "song"


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


# The settings flags of both long-running processes that load models, `serve` and `worker`.
_MODEL_PROCESS_FLAGS = ("home", "model", "device", "dtype", "database_url", "max_batch", "log_level")


def _model_process_settings(ctx: typer.Context, **role_flags: Any) -> Settings:
    """Settings of `serve` or `worker`: the flags they share, read from the command's parsed parameters so
    each is passed on in one place, plus `role_flags`, the settings that only this command takes."""
    return load_settings(**{name: ctx.params[name] for name in _MODEL_PROCESS_FLAGS}, **role_flags)


def _history_service(home: Path | None, database_url: str | None) -> JobService:
    """A job service that is never started: the history and its files, without the worker or a model."""
    settings = load_settings(home=home, database_url=database_url)
    setup_logging("WARNING", settings.log_file, stderr=False)
    from mcp_server.service import JobService

    with user_errors():
        return JobService(settings)


@app.command()
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


@app.command()
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


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="What the music should sound like.")],
    duration: Annotated[
        float, typer.Option("--duration", "-d", help="Seconds, 1-300 (melody checkpoints 1-30).")
    ] = 10.0,
    seed: Annotated[int | None, typer.Option(help="Seed for a reproducible result.")] = None,
    model: Model = None,
    out_file: Annotated[Path | None, typer.Option("--out", "-o", help="Also copy the WAV here.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the job as one JSON object (as job_status returns it).")
    ] = False,
    loudness: Annotated[float, typer.Option(help="Target integrated loudness, LUFS (-40 to -6).")] = -14.0,
    no_normalize: Annotated[
        bool, typer.Option("--no-normalize", help="Keep the level as generated.")
    ] = False,
    temperature: Annotated[float, typer.Option(help="Sampling temperature, (0, 2].")] = 1.0,
    top_k: Annotated[int, typer.Option(help="Top-k sampling, 0-2048 (0 = off).")] = 250,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling, 0-1 (0 = off).")] = 0.0,
    guidance_scale: Annotated[float, typer.Option(help="Classifier-free guidance, 0-10.")] = 3.0,
    home: Home = None,
    device: Device = None,
    dtype: Dtype = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Generate one piece and keep it in the history, as the MCP server would.

    stdout gets only the WAV's path (or, with --json, the job); the summary goes to stderr.
    """
    settings = load_settings(home=home, device=device, dtype=dtype, database_url=database_url)
    setup_logging("INFO", settings.log_file, stderr=False)
    from mcp_server.service import JobService

    with user_errors():
        service = JobService(settings)
        requests = service.build_requests(
            1,
            prompt=prompt,
            duration=duration,
            seed=seed,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            guidance_scale=guidance_scale,
            loudness_lufs=None if no_normalize else loudness,
        )
        started = time.monotonic()
        with service, _progress_bar() as bar:
            job = anyio.run(_run_job, service, requests, model, bar)
    wall = time.monotonic() - started
    if job.status != "completed" or job.audio is None:
        fail(f"job {job.job_id} {job.status}: {job.error or 'no audio was produced'}")
    path = Path(job.audio.path)
    if out_file is not None:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out_file)
        path = out_file
    loudness_text = (
        "n/a (silence)" if job.audio.loudness_lufs is None else f"{job.audio.loudness_lufs:.1f} LUFS"
    )
    _print_result(job.model_dump_json() if as_json else str(path))
    _note(
        f"job {job.job_id}  seed {job.params.seed}  {job.audio.duration_s:.2f} s  {loudness_text}  "
        f"peak {job.audio.peak_dbfs:.1f} dBFS  wall {wall:.1f} s"
    )


def _print_result(text: str) -> None:
    """What a script captures: plain text on stdout, no markup, never wrapped at the terminal width."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _note(text: str) -> None:
    """The human summary: one line on stderr."""
    err.print(text, highlight=False, markup=False, soft_wrap=True)


async def _run_job(
    service: JobService, requests: list[GenerationRequest], model: str | None, bar: Progress
) -> Job:
    """Queue one job and wait for it, drawing decode steps on the bar (when this process runs the worker)."""
    [queued] = await service.submit(requests, model, local_paths=True)
    task = bar.add_task("queued", total=None)

    async def show(jobs: list[Job]) -> None:
        done, total = service.steps(jobs[0])
        bar.update(task, description=jobs[0].status, completed=done, total=total)

    [job] = await service.wait([queued.job_id], float("inf"), show)
    return job


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


@app.command()
def history(
    query: Annotated[str | None, typer.Argument(help="Full-text search over prompts.")] = None,
    status: Annotated[
        str | None, typer.Option(help="pending, processing, completed, failed or cancelled.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=100, help="Entries to show, 1-100.")] = 20,
    as_json: Annotated[
        bool, typer.Option("--json", help="The jobs as JSON, as job_status returns them.")
    ] = False,
    family: Annotated[
        str | None,
        typer.Option(help="Show the family tree of this job (or id prefix): its root, continuations, ..."),
    ] = None,
    home: Home = None,
    database_url: DatabaseUrl = None,
) -> None:
    """The most recent generations, or the best matches for QUERY, or one piece's family tree."""
    service = _history_service(home, database_url)
    with user_errors():
        if family is not None:
            members = anyio.run(service.family, family)
        else:
            jobs, _ = anyio.run(service.history, query, status, limit, None)
    if family is not None:
        from mcp_server.family import family_tree

        if as_json:
            _print_result(json.dumps([job.model_dump(mode="json") for job in members], indent=2))
        else:
            out.print(family_tree(members, _history_entry), highlight=False, markup=False, soft_wrap=True)
        return
    if as_json:
        _print_result(json.dumps([job.model_dump(mode="json") for job in jobs], indent=2))
        return
    if not jobs:
        err.print("no generations match" if query or status else "no generations yet")
        return
    for job in jobs:
        out.print(_history_entry(job), highlight=False, markup=False, soft_wrap=True)


def _history_entry(job: Job) -> str:
    """One job as a short block: a header line, the prompt, then the file (or the error)."""
    seed = "" if job.params.seed is None else f"  seed {job.params.seed}"
    seconds = job.audio.duration_s if job.audio is not None else job.params.duration
    length = "" if seconds is None else f"{seconds:g} s"
    lineage = job.lineage
    derived = ""
    if lineage is not None and lineage.parent_id is not None:  # stems, edits, ...: what and from which job
        derived = (
            f"  {lineage.operation}{' ' + lineage.stem if lineage.stem else ''} of {lineage.parent_id[:8]}"
        )
    header = (
        f"{job.job_id[:8]}  {job.created_at:%Y-%m-%d %H:%M}  {job.status}  "
        f"{length}{seed}  {Path(job.model).name}{derived}"
    )
    if job.audio is not None:
        loudness = "" if job.audio.loudness_lufs is None else f"  {job.audio.loudness_lufs:.1f} LUFS"
        detail = f"{job.audio.path}{loudness}"
    else:
        detail = f"error: {job.error}" if job.error else ""
    return (
        "\n".join(line for line in (header, f"  {job.prompt}", f"  {detail}" if detail else "") if line)
        + "\n"
    )


@app.command()
def export(
    job_ids: Annotated[
        list[str], typer.Argument(help="Completed jobs, one track each: ids or unique 8+ character prefixes.")
    ],
    name: Annotated[str, typer.Option("--name", "-n", help="Session name (1-100 characters).")],
    arrangement: Annotated[
        ArrangementName,
        typer.Option(
            help="sequential (one after another), stacked (all at 0) or song (a piece and its stems)."
        ),
    ] = ArrangementName.sequential,
    gap: Annotated[
        float, typer.Option(min=0, max=60, help="Seconds of silence between clips (sequential), 0-60.")
    ] = 0.0,
    bpm: Annotated[
        float | None, typer.Option(min=20, max=300, help="Session tempo, 20-300 (default 120).")
    ] = None,
    osc: Annotated[bool, typer.Option("--osc", help="Turn on Ardour's OSC surface (UDP 3819).")] = False,
    home: Home = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Write an Ardour session (DGX_MUSIC_HOME/sessions) with one track per job; prints the .ardour path."""
    from mcp_server.sessions import export_jobs

    service = _history_service(home, database_url)
    with user_errors():
        manifest = anyio.run(
            lambda: export_jobs(
                service,
                job_ids,
                name,
                arrangement=arrangement.value,
                gap_seconds=gap,
                bpm=bpm,
                enable_osc=osc,
            )
        )
    _print_result(str(manifest.ardour_file))
    renamed = f" (renamed: {'; '.join(manifest.notes)})" if manifest.renamed else ""
    _note(
        f"{len(manifest.tracks)} track(s), {manifest.length_s:.1f} s{renamed}; open: {manifest.open_command}"
    )


@app.command()
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


@app.command()
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


@app.command()
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


@db_app.command("upgrade")
def db_upgrade(home: Home = None, database_url: DatabaseUrl = None) -> None:
    """Create the database or migrate it to the latest schema (also done on every start)."""
    settings = load_settings(home=home, database_url=database_url)
    from storage import Store, db

    with user_errors():
        store = Store(settings.home, settings.database_url)
        revision = db.current_revision(store.engine)
        store.close()
    out.print(f"database at revision {revision} (head)", highlight=False)


@db_app.command("current")
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


from mcp_server import cli_stems  # noqa: E402  # registers `dgx-music stems` on this app

cli_stems.register(app)
