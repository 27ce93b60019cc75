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

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, ParamSpec, TypeVar

import anyio
from pydantic import ValidationError

from engine import GenerationRequest
from engine.models import looks_like_path
from mcp_server import families
from mcp_server.conditioning_sources import MELODY_KEY, SOURCE_KEY, Source, SourceError, resolve_source
from mcp_server.config import Settings, describe_validation_error
from mcp_server.notify import Relay, uses_notify
from mcp_server.schemas import TERMINAL, Job, job_from_generation
from mcp_server.telemetry import Telemetry
from mcp_server.worker import Worker
from storage import (
    AmbiguousId,
    Generation,
    IllegalTransition,
    Lineage,
    NotFound,
    Operation,
    QueueFull,
    StorageError,
    Store,
)
from storage.leases import Leases
from storage.models import PARAM_COLUMNS

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

POLL_SECONDS = 0.5  # waiters re-read this often: another process may be the one doing the work
LISTEN_POLL_SECONDS = 5.0  # with LISTEN/NOTIFY the re-read is only a safety net
SEED_SPACE = 2**32
ESTIMATED_FRAME_RATE = 50  # MusicGen's decode steps per second of audio, before the worker says exactly


class ServiceError(Exception):
    """A request the service refuses. The message names the argument and what is allowed."""


class QueueFullError(ServiceError):
    """The queue holds DGX_MUSIC_MAX_QUEUE pending jobs; retrying later can succeed."""


class UnknownJob(ServiceError):
    def __init__(self, job_id: str) -> None:
        super().__init__(
            f"job_id {job_id!r} not found (give a job_id or a unique prefix of 8+ characters); "
            "list_history shows the jobs that exist"
        )


class Changes:
    """Wakes async waiters, on whatever event loop they run, when the worker changes a job (any thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def notify(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            with suppress(RuntimeError):  # that loop has closed; its waiter is gone with it
                loop.call_soon_threadsafe(event.set)

    @contextmanager
    def listening(self) -> Iterator[asyncio.Event]:
        """Register before reading state, so a change between the read and the wait is not missed."""
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.add(entry)
        try:
            yield entry[1]
        finally:
            with self._lock:
                self._waiters.discard(entry)


class JobService:
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

    def _changed(self) -> None:
        """The worker changed something: wake local waiters, and tell other machines its progress."""
        self.changes.notify()
        if self.relay is not None and self.worker is not None:
            self.relay.publish(self.worker.worker_id, self.worker.progress_snapshot())

    def _heard(self, job_ids: list[str]) -> None:
        """LISTEN heard of a change (from any machine): re-read now, and claim if it was a new job."""
        self.changes.notify()
        if self.worker is not None:
            self.worker.wake()

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

    def build_requests(self, variations: int = 1, **params: Any) -> list[GenerationRequest]:
        """Validated requests, one per variation; take i gets seed + i (mod 2**32) when a seed is given."""
        try:
            base = GenerationRequest(**params)
        except ValidationError as exc:
            raise ServiceError(describe_validation_error(exc)) from None
        if base.seed is None:
            return [base] * variations
        return [base.model_copy(update={"seed": (base.seed + i) % SEED_SPACE}) for i in range(variations)]

    async def source(self, value: str | None, argument: str = "continue_from") -> Source | None:
        """The audio ``value`` names (a completed job, an allowed file, inline base64), checked now so that
        a bad one is refused before anything is queued."""
        if value is None:
            return None
        try:
            return await _in_thread(resolve_source, value, argument, self.settings, self.store)
        except SourceError as error:
            raise ServiceError(str(error)) from None

    async def extension(
        self, job_id: str, seconds: float, prompt: str | None
    ) -> tuple[Job, list[GenerationRequest], Source]:
        """What extending ``job_id`` by ``seconds`` queues: the job, its request (its own parameters and,
        without ``prompt``, its prompt; a fresh seed) and the job's audio as the source."""
        source = await self.source(job_id, "job_id")
        assert source is not None and source.job_id is not None
        job = await self.job(source.job_id)
        if families.family_of(job.model) != "musicgen":
            raise ServiceError(
                f"job_id: {job.job_id} was made by {job.model}; extend_music continues MusicGen pieces: use "
                "generate_music(continue_from=job_id) to continue its audio with a MusicGen model"
            )
        kept = {name: value for name, value in job.params.model_dump().items() if value is not None}
        params = kept | {"duration": seconds, "seed": None, "loudness_lufs": job.params.loudness_lufs}
        return job, self.build_requests(1, prompt=prompt or job.prompt, **params), source

    async def submit(
        self,
        requests: list[GenerationRequest],
        model: str | None = None,
        *,
        local_paths: bool = False,
        continue_from: Source | None = None,
    ) -> list[Job]:
        """Queue one job per request; they are ``pending`` when this returns. With ``continue_from`` each
        continues that audio (``duration`` seconds are added) and records it as its lineage.

        ``local_paths`` lets ``model`` name a checkpoint directory: for the operator (the CLI), never for MCP
        clients.
        """
        model_id = self.resolve_model(model, local_paths=local_paths)
        jobs = [(request.prompt, request.model_dump(exclude={"prompt"})) for request in requests]
        return await self.submit_jobs(model_id, jobs, continue_from=continue_from)

    def resolve_model(self, model: str | None, *, local_paths: bool = False, argument: str = "model") -> str:
        """The model id a job records; ``local_paths`` lets the operator (the CLI) name any directory."""
        model_id = families.resolve(model, self.settings) if model else self.default_model
        operator = families.is_operator_model(model_id, self.settings)
        if not local_paths and looks_like_path(model_id) and not operator:
            # A client must not make the server open arbitrary files (or probe which paths exist).
            raise ServiceError(
                f"{argument}: local paths are not accepted from clients; give an alias (small, medium, "
                "large, stereo-small, ace-step, ace-step-base, htdemucs, ...) or a hub id; the operator maps "
                "aliases to local directories with DGX_MUSIC_MODEL_PATHS=alias=/dir,..."
            )
        missing = families.missing_extra(model_id, argument)
        if missing is not None:
            raise ServiceError(missing)
        return model_id

    async def submit_jobs(
        self,
        model_id: str,
        jobs: list[tuple[str, dict[str, Any]]],
        lineages: list[Lineage] | None = None,
        *,
        continue_from: Source | None = None,
        melody_from: Source | None = None,
    ) -> list[Job]:
        """Queue (prompt, params) jobs for ``model_id`` in one transaction (with their lineage); with
        ``continue_from`` each continues that audio (``duration`` seconds are added), with ``melody_from``
        each follows that tune, and records it as its lineage."""
        metadata: dict[str, Any] = {}
        for source, key, operation in (
            (continue_from, SOURCE_KEY, Operation.CONTINUE),
            (melody_from, MELODY_KEY, Operation.MELODY),
        ):
            if source is None:
                continue
            metadata[key] = str(source.path)
            note = source.note(operation)
            if note:
                metadata["note"] = note
            lineages = [source.lineage(operation)] * len(jobs)
        generations = await _in_thread(self._create, model_id, jobs, lineages, metadata)
        if self.worker is not None:
            self.worker.wake()
        return [await self.job(generation.id) for generation in generations]

    def _create(
        self,
        model_id: str,
        jobs: list[tuple[str, dict[str, Any]]],
        lineages: list[Lineage] | None,
        metadata: dict[str, Any],
    ) -> list[Generation]:
        limit = self.settings.max_queue
        if len(jobs) > limit:
            raise QueueFullError(
                f"variations: {len(jobs)} is more than the queue holds "
                f"({limit}, set by DGX_MUSIC_MAX_QUEUE); ask for fewer variations"
            )
        # The common parameters are columns; a family's own (lyrics, bpm, section, context_seconds, ...) are
        # kept in the jobs' metadata, shared by the takes of one call (which differ in their seed only).
        columns = [(prompt, {k: v for k, v in p.items() if k in PARAM_COLUMNS}) for prompt, p in jobs]
        extras = [{k: v for k, v in p.items() if k not in PARAM_COLUMNS} for _, p in jobs]
        if any(extra != extras[0] for extra in extras):
            raise ValueError("jobs queued together must share their family parameters")
        if extras and extras[0]:
            metadata = {**metadata, "params": extras[0]}
        try:
            return self.store.create_many(
                model_id, columns, max_pending=limit, metadata=metadata or None, lineages=lineages
            )
        except QueueFull as full:
            raise QueueFullError(
                f"the queue is full ({full.pending} pending, limit {limit} set by DGX_MUSIC_MAX_QUEUE); "
                "wait for jobs to finish (job_status) or cancel some (cancel_job)"
            ) from None

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

    async def wait(
        self,
        job_ids: list[str],
        timeout: float,
        on_change: Callable[[list[Job]], Awaitable[None]] | None = None,
    ) -> list[Job]:
        """The jobs once all have ended or ``timeout`` seconds passed; ``on_change`` sees every wake-up."""
        deadline = time.monotonic() + timeout
        while True:
            with self.changes.listening() as changed:
                jobs = [await self.job(job_id) for job_id in job_ids]
                if on_change is not None:
                    await on_change(jobs)
                left = deadline - time.monotonic()
                if left <= 0 or all(job.status in TERMINAL for job in jobs):
                    return jobs
                # Also re-read on a timer: another process may be the one doing the work.
                listening = self.relay is not None and self.relay.listening.is_set()
                poll = LISTEN_POLL_SECONDS if listening else POLL_SECONDS
                with anyio.move_on_after(min(left, poll)):
                    await changed.wait()

    def steps(self, job: Job) -> tuple[int, int]:
        """(decode steps done, steps needed) of one job, for progress notifications."""
        done, total = self._steps(job.job_id, job.params.duration or 10.0)
        return (total, total) if job.status in TERMINAL else (done, total)

    def _steps(self, job_id: str, duration: float) -> tuple[int, int]:
        progress = self._progress(job_id)
        if progress is not None and progress[1] > 0:
            return progress[0], progress[1]
        return 0, max(1, round(duration * ESTIMATED_FRAME_RATE))

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


async def _in_thread(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Database work off the event loop (SQLite may wait on its busy timeout)."""
    return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))
