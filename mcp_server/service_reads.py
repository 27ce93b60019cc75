"""Reading jobs for the job service: a job by id or prefix, and what an unfinished one is doing (its stage,
its decode steps) from this process's worker, the LISTEN relay's news of other machines, or the workers'
heartbeats. All database work runs off the event loop (``_in_thread``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import anyio

from mcp_server.schemas import TERMINAL, Job, job_from_generation
from mcp_server.service_errors import ServiceError, UnknownJob
from storage import AmbiguousId, Generation, NotFound

if TYPE_CHECKING:
    from mcp_server.config import Settings
    from mcp_server.notify import Relay
    from mcp_server.worker import Worker
    from storage import Store
    from storage.leases import Leases

P = ParamSpec("P")
T = TypeVar("T")

ESTIMATED_FRAME_RATE = 50  # MusicGen's decode steps per second of audio, before the worker says exactly


class JobReads:
    """``JobService``'s reads; the service sets the state declared here."""

    settings: Settings
    store: Store
    leases: Leases
    worker: Worker | None
    relay: Relay | None

    async def job(self, job_id: str) -> Job:
        return await _in_thread(self._job, job_id)

    def _job(self, job_id: str) -> Job:
        """The job with this id or unique id prefix (8+ characters, as `dgx-music history` shows them)."""
        try:
            generation = self.store.get(job_id)
        except NotFound:
            raise UnknownJob(job_id) from None
        except AmbiguousId as exc:
            raise ServiceError(
                f"job_id {job_id!r} is the start of several jobs ({', '.join(exc.matches)}); "
                "give more characters of the id"
            ) from None
        return self._to_job(generation)

    def _to_job(self, generation: Generation) -> Job:
        position = self.store.queue_position(generation.id) if generation.status == "pending" else None
        done, total = self._steps(generation.id, generation.params.get("duration") or 10.0)
        return job_from_generation(
            generation, self.settings.home, done / total, position, self._stage(generation)
        )

    def _stage(self, generation: Generation) -> str | None:
        """What an unfinished job is waiting for or doing, in words."""
        if generation.status in TERMINAL:
            return None
        loading = self.worker.loading_since(generation.model_name) if self.worker is not None else None
        if loading is not None:
            return f"loading model {generation.model_name} ({loading:.0f} s so far)"
        progress = self._progress(generation.id)
        if progress is not None:
            return progress[2]
        if generation.status == "pending" and not self._served_here(generation.model_name):
            return self._routing_stage(generation.model_name)
        return "queued" if generation.status == "pending" else "starting"

    def _served_here(self, model_id: str) -> bool:
        worker = self.worker
        return worker is not None and worker.state != "standby" and worker.serves(model_id)

    def _routing_stage(self, model_id: str) -> str:
        """A pending job's stage as the live workers (any machine) see its model."""
        # Heartbeats come every lease_s / 3: a worker silent for a whole lease is taken for gone.
        live = [w for w in self.leases.live_workers(self.settings.lease_s) if w.serves(model_id)]
        if not live:
            return (
                f"waiting for a worker: no live worker serves model {model_id}; start one with "
                f"`dgx-music worker --models {model_id}` (or DGX_MUSIC_WORKER_MODELS=*)"
            )
        for worker in live:
            if worker.state == f"loading {model_id}":
                return f"loading model {model_id} on worker {worker.id}"
        return "queued"

    def _progress(self, job_id: str) -> tuple[int, int, str] | None:
        local = self.worker.progress(job_id) if self.worker is not None else None
        if local is None and self.relay is not None:
            return self.relay.progress(job_id)
        return local

    def steps(self, job: Job) -> tuple[int, int]:
        """(decode steps done, steps needed) of one job, for progress notifications."""
        done, total = self._steps(job.job_id, job.params.duration or 10.0)
        return (total, total) if job.status in TERMINAL else (done, total)

    def _steps(self, job_id: str, duration: float) -> tuple[int, int]:
        progress = self._progress(job_id)
        if progress is not None and progress[1] > 0:
            return progress[0], progress[1]
        return 0, max(1, round(duration * ESTIMATED_FRAME_RATE))


async def _in_thread(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Database work off the event loop (SQLite may wait on its busy timeout)."""
    return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))
