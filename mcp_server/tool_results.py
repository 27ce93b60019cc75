"""What the MCP tools send back: progress notifications while they wait, a summary line per job and the
structured result as JSON, as text (the only content some clients show), with resource links to the audio,
and refusals as tool (or resource) errors rather than protocol failures."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp_types import CallToolResult, ContentBlock, ResourceLink, TextContent
from pydantic import BaseModel

from ardour_templates import SessionManifest
from mcp_server.schemas import TERMINAL, Job
from mcp_server.service import JobService, ServiceError, UnknownJob


@contextmanager
def tool_errors() -> Iterator[None]:
    """Refusals the caller can act on become tool errors (is_error + message), not protocol crashes."""
    try:
        yield
    except ServiceError as exc:
        raise ToolError(str(exc)) from exc


@contextmanager
def resource_errors() -> Iterator[None]:
    try:
        yield
    except UnknownJob as exc:
        raise ResourceNotFoundError(str(exc)) from exc
    except ServiceError as exc:
        raise ResourceError(str(exc)) from exc


def progress_reporter(ctx: Context, service: JobService) -> Callable[[list[Job]], Awaitable[None]]:
    """Progress notifications (decode steps done / needed over all jobs), sent only when something changed."""
    sent: tuple[float, str] | None = None
    high_water = 0

    async def report(jobs: list[Job]) -> None:
        nonlocal sent, high_water
        steps = [service.steps(job) for job in jobs]
        high_water = max(high_water, sum(done for done, _ in steps))  # progress must never go backwards
        total = max(high_water, sum(total for _, total in steps))
        finished = sum(job.status in TERMINAL for job in jobs)
        states = ", ".join(
            f"{job.job_id[:8]} {job.status} {job.progress:.0%}" + (f" ({job.stage})" if job.stage else "")
            for job in jobs
        )
        message = f"{finished}/{len(jobs)} finished: {states}"
        if sent != (high_water, message):
            sent = (high_water, message)
            await ctx.report_progress(high_water, total, message)

    return report


def tool_result(
    structured: BaseModel,
    jobs: list[Job],
    studio_url: str | None,
    *,
    waited: bool = False,
    links: bool = True,
) -> CallToolResult:
    """A summary line per job, then the structured result as JSON, as text; resource links to the audio.

    Claude Code shows only text content and ignores resource_link blocks, so the text alone carries what an
    agent needs: job id, status, the WAV path, what to do next, and the job in the studio when it is served.
    A call that waited and saw a job fail is a tool error (the client's model must notice), still carrying
    every job; its summary says why each failed.
    """
    failed = [job for job in jobs if job.status == "failed"] if waited else []
    summary = "\n".join(job_summary(job, studio_url) for job in jobs) or "no jobs"
    text = f"{summary}\n\n{structured.model_dump_json(indent=2)}"
    content: list[ContentBlock] = [TextContent(type="text", text=text)]
    for job in jobs if links else []:
        if job.audio is not None:
            content.append(
                ResourceLink(
                    type="resource_link",
                    uri=job.audio.uri,
                    name=f"{job.job_id}.wav",
                    title=job.prompt[:100],
                    mime_type="audio/wav",
                    size=Path(job.audio.path).stat().st_size if Path(job.audio.path).exists() else None,
                )
            )
    return CallToolResult(
        content=content, structured_content=structured.model_dump(mode="json"), is_error=bool(failed)
    )


def job_summary(job: Job, studio_url: str | None) -> str:
    """One line: ``job ID STATUS: WAV path / what happens next [studio: URL]``."""
    if job.audio is not None:
        loudness = "" if job.audio.loudness_lufs is None else f", {job.audio.loudness_lufs:.1f} LUFS"
        detail = f"{job.audio.path} ({job.audio.duration_s:g} s{loudness})"
    elif job.status == "pending":
        detail = f"queue position {job.queue_position}; poll job_status(job_id, wait_seconds=30)"
    elif job.status == "processing":
        doing = f"{job.stage}, " if job.stage else ""
        detail = f"{doing}{job.progress:.0%} done; poll job_status(job_id, wait_seconds=30)"
    else:
        detail = job.error or "no audio"
    studio = f" studio: {studio_url}#job={job.job_id}" if studio_url else ""
    return f"job {job.job_id} {job.status}: {detail}{studio}"


def manifest_result(manifest: SessionManifest) -> CallToolResult:
    text = (
        f"session {manifest.session_name} written: {manifest.ardour_file} ({len(manifest.tracks)} tracks, "
        f"{manifest.length_s:.1f} s); open it with: {manifest.open_command}\n\n"
        + manifest.model_dump_json(indent=2)
    )
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=manifest.model_dump(mode="json")
    )
