"""The job service: the async API over a queue that lives in the database (``storage``).

- ``submit`` writes ``pending`` rows and returns at once, then wakes the worker (``mcp_server.worker``), which
  claims them at its next step boundary and admits them into the running batch; jobs queued by other
  processes on the same data directory are found by polling.
- Async callers (MCP handlers) never touch torch: they read the database on worker threads and are woken
  thread-safely by the worker through ``Changes``.
- ``run_worker=False`` (``dgx-music serve --no-worker``) is a stateless front-end: workers elsewhere do the
  work. On PostgreSQL, ``mcp_server.notify.Relay`` turns LISTEN/NOTIFY into the same wake-ups and brings
  other machines' progress, so waits and progress notifications work across machines.
"""

from __future__ import annotations

import logging
from contextlib import suppress

from mcp_server import families
from mcp_server.config import Settings
from mcp_server.notify import Relay, uses_notify
from mcp_server.schemas import Job
from mcp_server.service_errors import QueueFullError, ServiceError, UnknownJob
from mcp_server.service_reads import _in_thread
from mcp_server.service_submit import SEED_SPACE, Submission
from mcp_server.service_waits import Changes, Waiting
from mcp_server.telemetry import Telemetry
from mcp_server.worker import Worker
from storage import IllegalTransition, StorageError, Store
from storage.leases import Leases

# Re-exported: the MCP tools, REST routers, derive and the tests import these from here.
__all__ = [
    "SEED_SPACE",
    "Changes",
    "JobService",
    "QueueFullError",
    "ServiceError",
    "UnknownJob",
    "_in_thread",
]

log = logging.getLogger(__name__)


class JobService(Submission, Waiting):
    """The job service: submissions (``service_submit``), reads (``service_reads``) and waits
    (``service_waits``) over one store, and the lifecycle of this process's worker and LISTEN relay."""

    def __init__(self, settings: Settings, store: Store | None = None, *, run_worker: bool = True) -> None:
        self.settings = settings
        self.store = (
            store if store is not None else Store(settings.home, settings.database_url, settings.outputs)
        )
        self.default_model = families.resolve(settings.model, settings)
        self.changes = Changes()
        self.telemetry = Telemetry()  # what /metrics and /health report about this process's worker
        self.leases = Leases(self.store)
        self.worker = Worker(settings, self.store, self._changed, self.telemetry) if run_worker else None
        self.relay = Relay(self.store, self._heard) if uses_notify(self.store) else None

    @property
    def worker_state(self) -> str:
        """For logs and doctor: not started | standby | loading MODEL | ready | load failed: ... | none"""
        return self.worker.state if self.worker is not None else "none (front-end only)"

    # --- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> JobService:
        if self.relay is not None:
            self.relay.start()
        if self.worker is not None:
            self.worker.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the worker: running jobs stop at the next step boundary and go back to the queue."""
        if self.worker is not None:
            self.worker.stop(timeout)
        if self.relay is not None:
            self.relay.stop()
        self.changes.notify()

    def running_job_ids(self) -> list[str]:
        """The jobs this process's worker is decoding now (none when idle, on standby or without a worker)."""
        return self.worker.running_job_ids() if self.worker is not None else []

    def __enter__(self) -> JobService:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- requests (async: called from MCP handlers and the CLI) ------------------------------------------

    async def cancel(self, job_id: str) -> Job:
        return await _in_thread(self._cancel, job_id)

    def _cancel(self, id_or_prefix: str) -> Job:
        job = self._job(id_or_prefix)
        job_id = job.job_id
        if job.status in ("completed", "failed"):
            raise ServiceError(
                f"job_id {job_id!r} is already {job.status}; only pending or processing jobs can be cancelled"
            )
        if job.status != "cancelled":
            if self.worker is not None:  # a running job stops at the next step boundary
                self.worker.request_cancel(job_id)
            with suppress(IllegalTransition):  # it ended while we looked; report what it is now
                self.store.cancel(job_id)
            self.changes.notify()
        return self._job(job_id)

    async def history(
        self, query: str | None, status: str | None, limit: int, cursor: str | None
    ) -> tuple[list[Job], str | None]:
        return await _in_thread(self._history, query, status, limit, cursor)

    def _history(
        self, query: str | None, status: str | None, limit: int, cursor: str | None
    ) -> tuple[list[Job], str | None]:
        try:
            page = self.store.history(status=status, query=query or None, limit=limit, cursor=cursor)
        except ValueError as exc:  # a malformed cursor or FTS query; storage says which
            raise ServiceError(str(exc)) from None
        return [self._to_job(generation) for generation in page.items], page.next_cursor

    async def family(self, job_id: str) -> list[Job]:
        """The family of the job ``job_id`` (or prefix) belongs to: its root and every descendant, each
        parent before its children (``Job.lineage.parent_id`` links them)."""
        job = await self.job(job_id)
        members = await _in_thread(self.store.family, job.job_id)
        return [await _in_thread(self._to_job, member) for member in members]

    async def audio(self, job_id: str) -> bytes:
        """The WAV bytes of a completed job, checked against the sha256 recorded when it was written."""
        job = await self.job(job_id)
        if job.status != "completed":
            raise ServiceError(f"job_id {job_id!r} is {job.status}; audio exists only for completed jobs")
        try:
            return await _in_thread(self.store.open_audio, job.job_id)
        except StorageError as exc:  # missing or corrupted file: storage says how to repair it
            raise ServiceError(str(exc)) from None
