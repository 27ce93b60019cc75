"""The job service: a queue that lives in the database and one worker thread that owns the resident model.

- ``submit`` writes ``pending`` rows and returns at once; the worker polls the database (and is woken at once
  for jobs queued by this process), so jobs queued by other processes on the same data directory run too.
- Only the process holding an exclusive ``fcntl`` lock on ``DGX_MUSIC_HOME/worker.lock`` runs the worker and
  loads the model: Claude Desktop sometimes starts two stdio servers, and two copies of a model on one GPU
  would not fit. A process without the lock queues and reads, and takes over if the holder exits.
- The worker claims every pending job of one model at once (up to ``max_batch``) and decodes them together.
- Async callers (MCP handlers) never touch torch: they read the database on worker threads and are woken
  thread-safely by the worker through ``Changes``.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, ParamSpec, TypeVar

import anyio
from pydantic import ValidationError

from engine import EngineError, GenerationRequest, resolve_model_id
from engine.models import looks_like_path
from mcp_server.config import Settings, describe_validation_error
from mcp_server.schemas import TERMINAL, Job, job_from_generation
from mcp_server.telemetry import Telemetry
from storage import Generation, IllegalTransition, NotFound, QueueFull, StorageError, Store

if TYPE_CHECKING:  # torch and transformers load in the worker, so `initialize` is answered at once
    from engine import MusicEngine

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

POLL_SECONDS = 0.5  # how often the worker looks for jobs queued by other processes, and waiters re-read
NOTIFY_EVERY_SECONDS = 0.2  # progress wake-ups per running batch are throttled to this
RETRY_SECONDS = 5  # after an unexpected worker error
MAX_ATTEMPTS = 2  # a job left processing by a second crash fails instead of running a third time
SEED_SPACE = 2**32
MAX_REMEMBERED_TOTALS = 10_000
DEFAULT_FRAME_RATE = 50  # MusicGen's codec frame rate, used to estimate steps before the model is loaded


class ServiceError(Exception):
    """A request the service refuses. The message names the argument and what is allowed."""


class QueueFullError(ServiceError):
    """The queue holds DGX_MUSIC_MAX_QUEUE pending jobs; retrying later can succeed."""


class UnknownJob(ServiceError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job_id {job_id!r} not found; list_history shows the jobs that exist")


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


@dataclass
class _Batch:
    """What the worker knows about the batch it is decoding; read by handlers under the service lock."""

    ids: list[str]
    started: float
    done: dict[str, int] = field(default_factory=dict)  # job id -> decode steps done
    last_notify: float = 0.0
    last_cancel_check: float = 0.0


class JobService:
    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.store = store if store is not None else Store(settings.home, settings.database_url)
        self.default_model = resolve_model_id(settings.model)
        self.changes = Changes()
        self.telemetry = Telemetry()  # what /metrics and /health report about this process's worker
        self.worker_state = "not started"  # for logs and doctor: standby | loading | ready | load failed: ...
        self._lock = threading.Lock()
        self._batch: _Batch | None = None
        self._cancel_requested: set[str] = set()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._engine: MusicEngine | None = None
        self._engine_model: str | None = None
        self._frame_rate = DEFAULT_FRAME_RATE
        self._totals: dict[str, int] = {}  # job id -> decode steps it needs, once the engine has said

    # --- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> JobService:
        self._thread = threading.Thread(target=self._work, name="dgx-music-worker", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the worker: a running batch is interrupted at its next step and its jobs re-queued."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.changes.notify()

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

    async def submit(
        self, requests: list[GenerationRequest], model: str | None = None, *, local_paths: bool = False
    ) -> list[Job]:
        """Queue one job per request; they are ``pending`` when this returns.

        ``local_paths`` lets ``model`` name a checkpoint directory: for the operator (the CLI), never for MCP
        clients.
        """
        model_id = resolve_model_id(model) if model else self.default_model
        if not local_paths and model_id != self.default_model and looks_like_path(model_id):
            # A client must not make the server open arbitrary files (or probe which paths exist).
            raise ServiceError(
                "model: local paths are not accepted from clients; give an alias (small, medium, large, "
                "melody, stereo-small, ...) or a hub id, or start the server with DGX_MUSIC_MODEL=<path>"
            )
        generations = await _in_thread(self._create, requests, model_id)
        self._wake.set()
        return [await self.job(generation.id) for generation in generations]

    def _create(self, requests: list[GenerationRequest], model_id: str) -> list[Generation]:
        limit = self.settings.max_queue
        if len(requests) > limit:
            raise QueueFullError(
                f"variations: {len(requests)} is more than the queue holds "
                f"({limit}, set by DGX_MUSIC_MAX_QUEUE); ask for fewer variations"
            )
        jobs = [(request.prompt, request.model_dump(exclude={"prompt"})) for request in requests]
        try:
            return self.store.create_many(model_id, jobs, max_pending=limit)
        except QueueFull as full:
            raise QueueFullError(
                f"the queue is full ({full.pending} pending, limit {limit} set by DGX_MUSIC_MAX_QUEUE); "
                "wait for jobs to finish (job_status) or cancel some (cancel_job)"
            ) from None

    async def job(self, job_id: str) -> Job:
        return await _in_thread(self._job, job_id)

    def _job(self, job_id: str) -> Job:
        try:
            generation = self.store.get(job_id)
        except NotFound:
            raise UnknownJob(job_id) from None
        return self._to_job(generation)

    def _to_job(self, generation: Generation) -> Job:
        position = self.store.queue_position(generation.id) if generation.status == "pending" else None
        done, total = self._steps(generation.id, generation.params["duration"])
        return job_from_generation(generation, self.settings.home, done / total, position)

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
                with anyio.move_on_after(min(left, POLL_SECONDS)):
                    await changed.wait()

    def steps(self, job: Job) -> tuple[int, int]:
        """(decode steps done, steps needed) of one job, for progress notifications."""
        done, total = self._steps(job.job_id, job.params.duration)
        return (total, total) if job.status in TERMINAL else (done, total)

    def _steps(self, job_id: str, duration: float) -> tuple[int, int]:
        with self._lock:
            done = self._batch.done.get(job_id, 0) if self._batch else 0
            total = self._totals.get(job_id)
        return done, total or max(1, round(duration * self._frame_rate))

    async def cancel(self, job_id: str) -> Job:
        return await _in_thread(self._cancel, job_id)

    def _cancel(self, job_id: str) -> Job:
        job = self._job(job_id)
        if job.status in ("completed", "failed"):
            raise ServiceError(
                f"job_id {job_id!r} is already {job.status}; only pending or processing jobs can be cancelled"
            )
        if job.status != "cancelled":
            with self._lock:
                if self._batch is not None and job_id in self._batch.ids:  # ours: stop at the next step
                    self._cancel_requested.add(job_id)
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

    async def audio(self, job_id: str) -> bytes:
        """The WAV bytes of a completed job, checked against the sha256 recorded when it was written."""
        job = await self.job(job_id)
        if job.status != "completed":
            raise ServiceError(f"job_id {job_id!r} is {job.status}; audio exists only for completed jobs")
        try:
            return await _in_thread(self.store.open_audio, job_id)
        except StorageError as exc:  # missing or corrupted file: storage says how to repair it
            raise ServiceError(str(exc)) from None

    # --- the worker -------------------------------------------------------------------------------------

    def _work(self) -> None:
        lock = self._acquire_worker_lock()
        if lock is None:
            return
        try:
            try:
                report = self.store.recover(max_attempts=MAX_ATTEMPTS)
                log.info("recovered the queue at start-up: %s", report)
            except Exception:
                log.exception("recovering the queue failed; jobs left processing by a crash stay as they are")
            self.changes.notify()
            # At start-up, not on the first job, so the first job does not wait for the load. A failure is
            # logged; each batch retries the load and fails its jobs with the reason.
            with suppress(Exception):
                self._load(self.default_model)
            while not self._stop.is_set():
                try:
                    worked = self._run_batch()
                except Exception:  # e.g. the database stayed locked: keep the worker alive and retry
                    log.exception("the worker hit an unexpected error; retrying in %d s", RETRY_SECONDS)
                    worked = self._stop.wait(RETRY_SECONDS)
                if not worked:
                    self._wake.wait(POLL_SECONDS)
                    self._wake.clear()
        finally:
            self._engine = None
            lock.close()  # releases the flock

    def _acquire_worker_lock(self) -> IO[str] | None:
        """Hold worker.lock for the life of the worker; wait as a standby while another process holds it."""
        self.settings.lock_file.parent.mkdir(parents=True, exist_ok=True)
        handle = self.settings.lock_file.open("a+")
        announced = False
        while not self._stop.is_set():
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not announced:
                    log.info(
                        "another process holds %s; this one queues and reads only", self.settings.lock_file
                    )
                    self.worker_state = "standby"
                    announced = True
                self._stop.wait(1.0)
                continue
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            return handle
        handle.close()
        return None

    def _load(self, model_id: str) -> MusicEngine:
        """The resident engine for ``model_id``, loading it (and dropping any other) when needed."""
        if self._engine is not None and self._engine_model == model_id:
            return self._engine
        self._engine, self._engine_model = None, None
        self.worker_state = f"loading {model_id}"
        log.info("loading %s", model_id)
        from engine import MusicEngine

        try:
            engine = MusicEngine.load(model_id, device=self.settings.device, dtype=self.settings.dtype)
        except EngineError as exc:
            self.worker_state = f"load failed: {exc}"
            log.error("could not load %s: %s", model_id, exc)
            raise
        except Exception as exc:
            self.worker_state = f"load failed: {type(exc).__name__}: {exc}"
            log.exception("could not load %s", model_id)
            raise
        self._engine, self._engine_model = engine, model_id
        self._frame_rate = engine.frame_rate
        self.telemetry.model_loaded(engine)
        self.worker_state = "ready"
        log.info("loaded %s on %s (%s) in %.1f s", model_id, engine.device, engine.dtype, engine.load_seconds)
        return engine

    def _run_batch(self) -> bool:
        """Decode the pending jobs of the oldest job's model (up to max_batch); False when none is waiting."""
        limit = self.settings.max_batch
        if self._engine is not None:  # e.g. a melody model decodes one request at a time
            limit = min(limit, self._engine.max_batch_size)
        batch = self.store.claim(None, limit)
        if not batch:
            return False
        log.info("claimed %d job(s): %s", len(batch), ", ".join(g.id for g in batch))
        try:
            engine = self._load(batch[0].model_name)
        except EngineError as exc:
            self._finish(batch, [None] * len(batch), str(exc))
            return True
        except Exception as exc:
            self._finish(batch, [None] * len(batch), f"could not load the model: {type(exc).__name__}: {exc}")
            return True
        state = _Batch(ids=[g.id for g in batch], started=time.monotonic())
        with self._lock:
            self._batch = state
        self.telemetry.batch_started(len(batch))
        error = None
        try:
            requests = [GenerationRequest(prompt=g.prompt, **g.params) for g in batch]
            results = engine.generate(requests, self._on_step_for(state), self._is_cancelled_for(state))
        except EngineError as exc:
            results, error = [None] * len(batch), str(exc)
        except Exception as exc:
            log.exception("generation failed")
            results, error = [None] * len(batch), f"generation failed: {type(exc).__name__}: {exc}"
        self._finish(batch, results, error, engine=engine, state=state)
        return True

    def _on_step_for(self, state: _Batch) -> Callable[[int, list[int]], None]:
        def on_step(step: int, totals: list[int]) -> None:
            now = time.monotonic()
            with self._lock:
                for job_id, total in zip(state.ids, totals, strict=True):
                    state.done[job_id] = min(step, total)
                    self._totals[job_id] = total
                while len(self._totals) > MAX_REMEMBERED_TOTALS:  # oldest first: dicts keep insertion order
                    del self._totals[next(iter(self._totals))]
            if now - state.last_cancel_check >= POLL_SECONDS:
                state.last_cancel_check = now
                self._pick_up_cancellations(state.ids)
            if now - state.last_notify >= NOTIFY_EVERY_SECONDS:
                state.last_notify = now
                self.changes.notify()

        return on_step

    def _pick_up_cancellations(self, job_ids: list[str]) -> None:
        """cancel_job in another process can only tell us through the database."""
        cancelled = {job_id for job_id in job_ids if self.store.get(job_id).status == "cancelled"}
        if cancelled:
            with self._lock:
                self._cancel_requested |= cancelled

    def _is_cancelled_for(self, state: _Batch) -> Callable[[int], bool]:
        def is_cancelled(row: int) -> bool:
            with self._lock:
                requested = state.ids[row] in self._cancel_requested
            return requested or self._stop.is_set() or self._timed_out(state)

        return is_cancelled

    def _timed_out(self, state: _Batch) -> bool:
        return time.monotonic() - state.started > self.settings.job_timeout_s

    def _finish(
        self,
        batch: list[Generation],
        results: list[Any],
        error: str | None,
        engine: MusicEngine | None = None,
        state: _Batch | None = None,
    ) -> None:
        """Record every row's outcome: completed, cancelled, re-queued (shutdown), timed out or failed."""
        for generation, result in zip(batch, results, strict=True):
            job_id = generation.id
            with self._lock:
                cancelled = job_id in self._cancel_requested
                self._cancel_requested.discard(job_id)
            try:
                if result is not None and engine is not None:
                    self.store.complete(
                        job_id,
                        result.audio,
                        result.sample_rate,
                        loudness_lufs=result.loudness_lufs,
                        peak_dbfs=result.peak_dbfs,
                        generation_seconds=result.generation_seconds,
                        device=engine.device,
                        seed=result.seed,
                    )
                    self.telemetry.job_completed(result.generation_seconds)
                elif cancelled:
                    self.store.cancel(job_id)
                elif error is not None:
                    self.store.fail(job_id, error)
                elif state is not None and self._timed_out(state):
                    self.store.fail(
                        job_id,
                        f"exceeded the per-job time limit of {self.settings.job_timeout_s:g} s "
                        "(DGX_MUSIC_JOB_TIMEOUT_S); ask for a shorter duration or raise the limit",
                    )
                else:  # interrupted by shutdown: back in the queue for the next worker
                    self.store.requeue(job_id)
            except IllegalTransition:
                log.info("job %s was cancelled while it finished; its result is discarded", job_id)
            except OSError as exc:  # a full disk, a quota, a file-size limit
                log.exception("writing the audio of job %s failed", job_id)
                outputs = self.settings.home / "outputs"
                self._fail_quietly(
                    job_id,
                    f"could not write the audio under {outputs}: {exc.strerror or exc}; free disk space "
                    "there (or lift the quota / file-size limit) and generate again",
                )
            except Exception as exc:
                log.exception("recording the outcome of job %s failed", job_id)
                self._fail_quietly(job_id, f"could not store the result: {type(exc).__name__}: {exc}")
        with self._lock:
            self._batch = None
        if state is not None:
            self.telemetry.batch_finished(
                max(state.done.values(), default=0), time.monotonic() - state.started
            )
        self.changes.notify()

    def _fail_quietly(self, job_id: str, error: str) -> None:
        try:
            self.store.fail(job_id, error)
        except Exception:
            log.exception("could not mark job %s failed", job_id)


async def _in_thread(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Database work off the event loop (SQLite may wait on its busy timeout)."""
    return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))
