"""`dgx-music stems JOB`: split a completed generation into stems, as the separate_stems tool does."""

from __future__ import annotations

from typing import Annotated

import anyio
import typer

from mcp_server.cli_common import (
    DatabaseUrl,
    Device,
    Home,
    _note,
    _print_result,
    _progress_bar,
    fail,
    load_settings,
    user_errors,
)
from mcp_server.logs import setup_logging
from mcp_server.schemas import Job


def stems(
    job_id: Annotated[str, typer.Argument(help="A completed job: id or unique 8+ character prefix.")],
    model: Annotated[
        str | None,
        typer.Option(help="htdemucs (4 stems), htdemucs_6s (+ guitar, piano), htdemucs_ft, or a directory."),
    ] = None,
    home: Home = None,
    device: Device = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Separate a job into stems (Demucs), each a job of its own; prints one WAV path per stem."""
    settings = load_settings(home=home, device=device, database_url=database_url)
    setup_logging("INFO", settings.log_file, stderr=False)
    from mcp_server import derive
    from mcp_server.service import JobService

    with user_errors():
        service = JobService(settings)
        separator = service.resolve_model(model or settings.separator, local_paths=True)
        with service, _progress_bar() as bar:

            async def run() -> list[Job]:
                queued = await derive.separate(service, job_id, separator, local_paths=True)
                task = bar.add_task("queued", total=None)

                async def show(jobs: list[Job]) -> None:
                    done, total = service.steps(jobs[0])
                    bar.update(task, description=jobs[0].status, completed=done, total=total)

                return await service.wait([job.job_id for job in queued], float("inf"), show)

            jobs = anyio.run(run)
    failed = [job for job in jobs if job.status != "completed" or job.audio is None]
    if failed:
        fail("; ".join(f"job {job.job_id} {job.status}: {job.error or 'no audio'}" for job in failed))
    _print_result("\n".join(job.audio.path for job in jobs if job.audio is not None))
    stems_named = ", ".join(f"{job.lineage.stem} {job.job_id[:8]}" for job in jobs if job.lineage)
    _note(f"{len(jobs)} stems of {jobs[0].lineage.parent_id if jobs[0].lineage else job_id}: {stems_named}")
