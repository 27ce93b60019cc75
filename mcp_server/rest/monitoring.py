"""Liveness and metrics: ``/health`` (503 while jobs cannot run) and ``/metrics`` (Prometheus text)."""

from __future__ import annotations

from typing import Annotated, get_args

import anyio
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from mcp_server import __version__
from mcp_server.rest.deps import get_service
from mcp_server.rest.models import Health
from mcp_server.rest.problems import ERRORS
from mcp_server.schemas import JobStatus
from mcp_server.service import JobService

router = APIRouter(tags=["monitoring"], responses=ERRORS)
Service = Annotated[JobService, Depends(get_service)]


async def job_counts(service: JobService) -> dict[str, int]:
    def count() -> dict[str, int]:
        return {status: service.store.count(status) for status in get_args(JobStatus)}

    return await anyio.to_thread.run_sync(count)


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"description": "The worker cannot run jobs now.", "model": Health}},
)
async def health(service: Service) -> JSONResponse:
    """Whether jobs can run now, the worker's state, the queue depth, the model and the device."""
    counts = await job_counts(service)
    loaded = service.telemetry.loaded
    serving = await anyio.to_thread.run_sync(can_serve, service)
    body = Health(
        status="ok" if serving else "unavailable",
        version=__version__,
        worker=service.worker_state,
        queue_depth=counts["pending"],
        running=counts["processing"],
        model=service.default_model,
        loaded_model=loaded.model if loaded else None,
        device=loaded.device if loaded else None,
        dtype=loaded.dtype if loaded else None,
    )
    return JSONResponse(body.model_dump(), status_code=200 if body.status == "ok" else 503)


def can_serve(service: JobService) -> bool:
    """Jobs on the default model can run: this worker has loaded it (a client's request for a model that
    failed to load does not change that: the next default job loads it again), another process holding
    worker.lock runs the jobs (standby), or — on a front-end without a worker (`serve --no-worker`) — a
    worker with a live heartbeat serves the queue."""
    if service.worker is None:
        return bool(service.leases.live_workers(within_s=service.settings.lease_s))
    return service.worker_state == "standby" or service.default_model in service.telemetry.ever_loaded


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_PLAIN_0_0_4: {"schema": {"type": "string"}}}}},
)
async def metrics(service: Service) -> Response:
    """Prometheus text format: jobs by status, queue depth, batch size, decode steps per second, generation
    seconds, model load time, and GPU memory where a GPU is in use."""
    exposition = service.telemetry.exposition(await job_counts(service))
    return Response(exposition, media_type=CONTENT_TYPE_PLAIN_0_0_4)
