"""`dgx-music history` and `dgx-music export`: browse the kept generations (a search, or one piece's family
tree) and write completed ones into an Ardour session, without starting the worker or loading a model.
"""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import anyio
import typer

from mcp_server.cli_common import (
    DatabaseUrl,
    Home,
    _note,
    _print_result,
    err,
    load_settings,
    out,
    user_errors,
)
from mcp_server.logs import setup_logging

if TYPE_CHECKING:
    from mcp_server.schemas import Job
    from mcp_server.service import JobService


class ArrangementName(enum.StrEnum):
    sequential = "sequential"
    stacked = "stacked"
    song = "song"


def _history_service(home: Path | None, database_url: str | None) -> JobService:
    """A job service that is never started: the history and its files, without the worker or a model."""
    settings = load_settings(home=home, database_url=database_url)
    setup_logging("WARNING", settings.log_file, stderr=False)
    from mcp_server.service import JobService

    with user_errors():
        return JobService(settings)


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
