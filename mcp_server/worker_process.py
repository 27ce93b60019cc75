"""`dgx-music worker`: a process that owns models and the scheduler, and nothing else.

No MCP and no API: clients talk to front-ends (`dgx-music serve --no-worker`), which share the queue with
every worker through the database. Over HTTP it answers only ``/health`` (for systemd, load balancers and
people) and ``/metrics`` (Prometheus text), on loopback unless told otherwise.
"""

from __future__ import annotations

import logging
import statistics
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from mcp_server.auth import BearerTokenMiddleware
from mcp_server.config import Settings, check_http_exposure
from mcp_server.service import JobService
from mcp_server.worker import Worker

log = logging.getLogger(__name__)


def run_worker(settings: Settings, host: str = "127.0.0.1", port: int = 8100) -> None:
    """Run the worker until SIGINT/SIGTERM; claimed jobs then go back to the queue for other workers."""
    check_http_exposure(settings.token, host)
    sys.setswitchinterval(0.001)  # keep /health answering while the scheduler thread decodes
    service = JobService(settings)
    assert service.worker is not None
    with service:
        log.info(
            "worker %s serves %s; health on http://%s:%d/health",
            service.worker.worker_id,
            ", ".join(service.worker.models),
            host,
            port,
        )
        config = uvicorn.Config(
            health_app(service.worker, settings), host=host, port=port, log_config=None, lifespan="off"
        )
        uvicorn.Server(config).run()
        log.info("stopping: claimed jobs go back to the queue")


def health_app(worker: Worker, settings: Settings) -> ASGIApp:
    async def health(request: Request) -> Response:
        healthy = worker.is_alive() and not worker.state.startswith("load failed")
        body = {
            "status": "ok" if healthy else "failing",
            "worker_id": worker.worker_id,
            "state": worker.state,
            "models": worker.models,
            "resident": worker.resident_models,
            "jobs": worker.jobs_in_progress,
        }
        return JSONResponse(body, status_code=200 if healthy else 503)

    async def metrics(request: Request) -> Response:
        return PlainTextResponse(prometheus_text(worker), media_type="text/plain; version=0.0.4")

    app: ASGIApp = Starlette(routes=[Route("/health", health), Route("/metrics", metrics)])
    return BearerTokenMiddleware(app, settings.token) if settings.token else app


def prometheus_text(worker: Worker) -> str:
    label = f'worker="{worker.worker_id}"'
    lines = [
        "# HELP dgx_music_worker_jobs_total Jobs this worker ended, by outcome.",
        "# TYPE dgx_music_worker_jobs_total counter",
        *(
            f'dgx_music_worker_jobs_total{{{label},outcome="{outcome}"}} {count}'
            for outcome, count in sorted(worker.counts.items())
        ),
        "# HELP dgx_music_worker_jobs_in_progress Jobs claimed by this worker now.",
        "# TYPE dgx_music_worker_jobs_in_progress gauge",
        f"dgx_music_worker_jobs_in_progress{{{label}}} {worker.jobs_in_progress}",
        "# HELP dgx_music_worker_resident_models Models loaded on this worker.",
        "# TYPE dgx_music_worker_resident_models gauge",
        f"dgx_music_worker_resident_models{{{label}}} {len(worker.resident_models)}",
    ]
    claims = sorted(worker.claim_seconds)
    if claims:
        lines += [
            "# HELP dgx_music_worker_claim_seconds How long a claim that got jobs took (last 1000).",
            "# TYPE dgx_music_worker_claim_seconds summary",
            *(
                f'dgx_music_worker_claim_seconds{{{label},quantile="{q}"}} {quantile(claims, q):.6f}'
                for q in (0.5, 0.95)
            ),
            f"dgx_music_worker_claim_seconds_sum{{{label}}} {sum(claims):.6f}",
            f"dgx_music_worker_claim_seconds_count{{{label}}} {len(claims)}",
        ]
    return "\n".join(lines) + "\n"


def quantile(ordered: list[float], q: float) -> float:
    """The q-quantile (inclusive method) of already sorted values."""
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[round(q * 100) - 1]
