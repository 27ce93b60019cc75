"""Jobs: queue generations, read and long-poll them, follow their progress as server-sent events, cancel them,
and page through the history. Every route is a thin call into the same ``JobService`` the MCP tools use."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from engine import GenerationRequest
from mcp_server import derive, families
from mcp_server.rest.deps import get_service
from mcp_server.rest.models import ExtendRequest, GenerateRequest
from mcp_server.rest.problems import ERRORS, ProblemError, from_validation_error
from mcp_server.schemas import TERMINAL, GenerateResult, HistoryPage, Job, JobStatus
from mcp_server.service import JobService, ServiceError, UnknownJob
from mcp_server.song_args import ACESTEP_ONLY

router = APIRouter(prefix="/api/v1", tags=["jobs"], responses=ERRORS)

Service = Annotated[JobService, Depends(get_service)]
JobIdPath = Annotated[
    str, Path(min_length=1, max_length=64, description="A job_id from generate or history.")
]
HEARTBEAT_SECONDS = 15  # a comment line keeps proxies from closing an idle event stream


@router.post("/generate", status_code=202, response_model=GenerateResult)
async def generate(body: GenerateRequest, service: Service) -> GenerateResult | JSONResponse:
    """Queue one job per variation; they are pending when this returns (202). Poll each with
    GET /api/v1/jobs/{id}?wait=60 or follow GET /api/v1/jobs/{id}/events."""
    params = body.generation_params()
    model_id = service.resolve_model(body.model)
    if families.family_of(model_id) == "musicgen" and not ACESTEP_ONLY & {k for k, v in params.items() if v}:
        try:  # the engine's own check, so its bounds reach the caller as field errors
            GenerationRequest(**{name: value for name, value in params.items() if value is not None})
        except ValidationError as exc:
            return from_validation_error(exc)
    return GenerateResult(
        jobs=await derive.generate(
            service, body.model, body.variations, params, body.continue_from, body.melody_from
        )
    )


@router.post("/jobs/{job_id}/extend", status_code=202, response_model=GenerateResult)
async def extend(job_id: JobIdPath, body: ExtendRequest, service: Service) -> GenerateResult:
    """Queue a continuation of a completed job by `seconds`: one new job holding the whole, longer piece,
    with the job as its parent (its prompt and parameters unless a prompt is given)."""
    job, requests, source = await service.extension(job_id, body.seconds, body.prompt)
    return GenerateResult(jobs=await service.submit(requests, job.model, continue_from=source))


@router.get("/jobs/{job_id}", response_model=Job)
async def get_job(
    job_id: JobIdPath,
    service: Service,
    wait: Annotated[
        float, Query(ge=0, le=300, description="Long-poll: seconds to wait for the job to end (0-300).")
    ] = 0,
) -> Job:
    """One job: status, progress (0-1), queue position, error or audio."""
    [job] = await service.wait([job_id], wait)
    return job


@router.get(
    "/jobs/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "`progress` events with the job as JSON while it runs, then one `job` event with "
            "the finished job; the stream then ends.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    },
)
async def job_events(job_id: JobIdPath, service: Service, request: Request) -> StreamingResponse:
    """Server-sent events for one job: progress while it runs, then the final job."""
    first = await service.job(job_id)  # unknown ids get a 404 before the stream starts
    return StreamingResponse(
        _events(service, first),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _events(service: JobService, first: Job) -> AsyncIterator[str]:
    """Each change of the job as one event, read through ``service.wait`` (which wakes on every change)."""
    changes: asyncio.Queue[Job] = asyncio.Queue()

    async def on_change(jobs: list[Job]) -> None:
        changes.put_nowait(jobs[0])

    watcher = asyncio.create_task(service.wait([first.job_id], float("inf"), on_change))
    last = None
    try:
        job = first
        while job.status not in TERMINAL:
            seen = (job.status, job.progress, job.queue_position)
            if seen != last:
                last = seen
                yield _event("progress", job)
            try:
                job = await asyncio.wait_for(changes.get(), HEARTBEAT_SECONDS)
            except TimeoutError:
                yield ": still waiting\n\n"
        yield _event("job", job)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher


def _event(name: str, job: Job) -> str:
    return f"event: {name}\ndata: {job.model_dump_json()}\n\n"


@router.delete("/jobs/{job_id}", response_model=Job)
async def cancel_job(job_id: JobIdPath, service: Service) -> Job:
    """Cancel a pending or processing job (a running one stops at its next decode step). Completed and
    failed jobs are left alone (409); cancelling twice is a no-op."""
    try:
        return await service.cancel(job_id)
    except UnknownJob:
        raise
    except ServiceError as exc:  # already completed or failed
        raise ProblemError(409, str(exc), "job_id") from None


@router.get("/history", response_model=HistoryPage)
async def history(
    service: Service,
    q: Annotated[
        str | None,
        Query(max_length=500, description='Full-text search over prompts (words, "phrases", prefix*).'),
    ] = None,
    status: Annotated[JobStatus | None, Query(description="Only jobs with this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Page size, 1-100.")] = 20,
    cursor: Annotated[
        str | None, Query(max_length=500, description="next_cursor of the previous page.")
    ] = None,
) -> HistoryPage:
    """Past and queued jobs, newest first (best match first with q), a page at a time."""
    items, next_cursor = await service.history(q, status, limit, cursor)
    return HistoryPage(items=items, next_cursor=next_cursor)
