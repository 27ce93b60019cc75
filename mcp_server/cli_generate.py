"""`dgx-music generate`: one piece from the shell, queued and kept in the history as the MCP server would,
with its decode steps drawn on a progress bar on stderr.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import anyio
import typer
from rich.progress import Progress

from mcp_server.cli_common import (
    DatabaseUrl,
    Device,
    Dtype,
    Home,
    Model,
    _note,
    _print_result,
    _progress_bar,
    fail,
    load_settings,
    user_errors,
)
from mcp_server.logs import setup_logging

if TYPE_CHECKING:
    from engine import GenerationRequest
    from mcp_server.schemas import Job
    from mcp_server.service import JobService


def generate(
    prompt: Annotated[str, typer.Argument(help="What the music should sound like.")],
    duration: Annotated[float, typer.Option("--duration", "-d", help="Seconds, 1-300.")] = 10.0,
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
