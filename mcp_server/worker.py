"""The model-owning worker: the scheduler loop, model residency and outcome recording, on one thread.

Every turn of the loop is one step boundary:

1. models finished loading (on a helper thread, so running batches keep stepping) become resident;
2. cancellations (from this process, or seen in the database for other processes) and time limits are
   applied: the backend drops those requests at this boundary;
3. pending jobs are claimed from the store for every resident model that has room, validated and admitted
   into its running batch at once (no waiting for the batch to end); a job the memory budget cannot take yet
   stays claimed and waits its turn ("waiting for memory");
4. a model that has pending jobs and is not resident is loaded beside the others while memory allows;
   otherwise an idle resident model is unloaded to make room, and when none is idle for longer than
   ``model_wait_s`` the busy ones stop taking new jobs until one drains (no reload thrash when clients
   alternate models, and no model waits forever);
5. every resident model with work advances one step; each request's outcome is written as soon as it
   is done.

Only the process holding an exclusive ``fcntl`` lock on ``DGX_MUSIC_HOME/worker.lock`` runs the loop and loads
models: Claude Desktop sometimes starts two stdio servers, and two copies of a model on one GPU would not fit.
A process without the lock queues and reads, and takes over if the holder exits.

Several workers (other hosts, on PostgreSQL) share one queue through leases (``storage.leases``): each
claim carries this worker's id and a lease renewed by the heartbeat every ``lease_s / 3``; a job whose lease
lapsed goes back to the queue (any worker's heartbeat sweeps them), and a result produced under a lapsed
claim is discarded, never committed over the new owner's. A worker claims only models it serves
(``DGX_MUSIC_WORKER_MODELS``).

This module is the loop, admission, leases and stops; model residency (steps 1 and 4) is in
``mcp_server.residency``, writing each job's outcome in ``mcp_server.outcomes``, the lock in
``mcp_server.worker_lock``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import DBAPIError

from mcp_server import families, operations, worker_lock
from mcp_server.config import Settings
from mcp_server.outcomes import Outcomes
from mcp_server.residency import ModelResidency, Resident
from mcp_server.telemetry import Telemetry
from storage import Generation, Store
from storage.leases import ANY_MODEL, Leases

if TYPE_CHECKING:  # torch and transformers load on the worker thread, so `initialize` is answered at once
    from engine.backend import Outcome, StepReport

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5  # how often jobs queued (or cancelled) by other processes are looked for
NOTIFY_EVERY_SECONDS = 0.2  # progress wake-ups of waiters are throttled to this
RETRY_SECONDS = 5  # after an unexpected worker error
MAX_ATTEMPTS = 2  # a job left processing by a second crash fails instead of running a third time
NOT_ADMITTED_STAGES = ("queued", "waiting for memory")  # claimed jobs outside every running batch


@dataclass
class _Job:
    """A claimed job: admitted into a backend, or waiting for room in one."""

    generation: Generation
    request: Any
    # every job this request serves: itself, plus the other stems of one separation (one pass, many WAVs)
    members: list[Generation] = field(default_factory=list)
    admitted: float | None = None  # monotonic time it joined a batch
    stop_reason: str | None = None  # "cancelled" | "timeout" | "shutdown" once asked to stop


class Worker(ModelResidency):
    """Owns the loaded models. ``start`` runs the loop on its own thread; other methods are thread-safe."""

    def __init__(
        self, settings: Settings, store: Store, notify: Callable[[bool], None], telemetry: Telemetry
    ) -> None:
        self.settings = settings
        self.store = store
        self._notify = notify
        self.telemetry = telemetry
        self.state = "not started"  # for logs and doctor: standby | loading ... | ready | load failed: ...
        self._lock = threading.Lock()
        self._progress: dict[str, tuple[int, int, str]] = {}  # job id -> (done, total, stage)
        self._loading = {}
        self._cancel_requested: set[str] = set()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._loaders = []
        self._loads = queue.SimpleQueue()
        self._residents = {}
        self._jobs: dict[str, _Job] = {}  # claimed, by id
        self._waiting: dict[str, list[_Job]] = {}  # model id -> claimed jobs not admitted yet, oldest first
        self._last_poll = 0.0
        self._last_notify = 0.0
        self.leases = Leases(store)
        self.worker_id = settings.worker_name
        self.models = settings.served_models
        self._shared = store.engine.dialect.name == "postgresql"  # other workers may serve this queue
        self._last_heartbeat = 0.0
        self.claim_seconds: deque[float] = deque(maxlen=1000)  # how long each claim that got jobs took
        self.outcomes = Outcomes(settings, store, telemetry, notify)
        self.counts = self.outcomes.counts  # one dict: the heartbeat counts expired leases in it too

    # --- called from other threads ----------------------------------------------------------------------

    def start(self) -> None:
        self.outcomes.started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="dgx-music-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the loop: running jobs stop at the next step boundary and go back to the queue."""
        self._stop.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        for thread in [self._thread, *self._loaders]:
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))

    def wake(self) -> None:
        """Jobs were queued: claim them at the next step boundary."""
        self._wake.set()

    def request_cancel(self, job_id: str) -> None:
        with self._lock:
            self._cancel_requested.add(job_id)
        self._wake.set()

    def running_job_ids(self) -> list[str]:
        """The jobs admitted into a running batch here (none when idle or on standby)."""
        with self._lock:
            return [job for job, (_, _, stage) in self._progress.items() if stage not in NOT_ADMITTED_STAGES]

    def progress(self, job_id: str) -> tuple[int, int, str] | None:
        """(steps done on the device, steps needed, stage) of a claimed job; None when not claimed here."""
        with self._lock:
            return self._progress.get(job_id)

    @property
    def first_audio_seconds(self) -> float | None:
        """Seconds from start to the first completed job's audio."""
        return self.outcomes.first_audio_seconds

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def jobs_in_progress(self) -> int:
        return len(self._jobs)

    def progress_snapshot(self) -> dict[str, tuple[int, int, str]]:
        """Every claimed job's progress, for publishing to other machines."""
        with self._lock:
            return dict(self._progress)

    def serves(self, model_id: str) -> bool:
        return ANY_MODEL in self.models or model_id in self.models

    # --- the loop ---------------------------------------------------------------------------------------

    def _run(self) -> None:
        lock = worker_lock.acquire(self.settings.lock_file, self._stop, self._go_on_standby)
        if lock is None:
            return
        try:
            try:
                report = self.store.recover(MAX_ATTEMPTS, shared=self._shared, worker_id=self.worker_id)
                log.info("recovered the queue at start-up: %s", report)
            except Exception:
                log.exception("recovering the queue failed; jobs left processing by a crash stay as they are")
            self._notify(False)
            # At start-up, not on the first job, so the first job does not wait for the whole load.
            default = families.resolve(self.settings.model, self.settings)
            self._begin_load(default if self.serves(default) else self.models[0])
            try:
                self.leases.register(self.worker_id, self.models, self.state)
            except Exception:  # front-ends then say no worker serves its models until a restart
                log.exception("could not register worker %s in the workers table", self.worker_id)
            while not self._stop.is_set():
                try:
                    worked = self._turn()
                except DBAPIError as error:  # the server restarted, or ended our session after a stall
                    log.warning("the database failed (%s); retrying in %d s", error.orig, RETRY_SECONDS)
                    worked = self._stop.wait(RETRY_SECONDS)
                except Exception:  # e.g. the database stayed locked: keep the worker alive and retry
                    log.exception("the worker hit an unexpected error; retrying in %d s", RETRY_SECONDS)
                    worked = self._stop.wait(RETRY_SECONDS)
                if not worked:
                    self._wake.wait(POLL_SECONDS)
        finally:
            self._shutdown()
            lock.close()  # releases the flock

    def _go_on_standby(self) -> None:
        self.state = "standby"

    def _turn(self) -> bool:
        """One step boundary; True when some model stepped."""
        self._take_loaded()
        now = time.monotonic()
        if now - self._last_heartbeat >= self.settings.lease_s / 3:
            self._heartbeat()
        poll = self._wake.is_set() or now - self._last_poll >= POLL_SECONDS
        if poll:
            self._wake.clear()
            self._last_poll = now
        self._apply_stops(poll)
        self._admit(poll)
        if poll:
            self._plan_residency()
        worked = False
        for resident in list(self._residents.values()):
            core = resident.engine.core
            if core.has_work:
                started = time.monotonic()
                report = core.step()
                seconds = time.monotonic() - started
                self.telemetry.step_done(len(report.progress) + len(report.finished), seconds)
                self._record(resident, report)
                resident.last_used = time.monotonic()
                worked = True
        if not worked:
            self.telemetry.idle()
        if worked and time.monotonic() - self._last_notify >= NOTIFY_EVERY_SECONDS:
            self._last_notify = time.monotonic()
            self._notify(True)
        return worked

    # --- admission ----------------------------------------------------------------------------------------

    def _admit(self, poll: bool) -> None:
        from engine.backend import Decision, InvalidRequest

        for model_id, resident in self._residents.items():
            core = resident.engine.core
            waiting = self._waiting.setdefault(model_id, [])
            room = core.capabilities.max_batch - sum(
                1 for job in self._claimed() if job.generation.model_name == model_id
            )
            if poll and room > 0 and not resident.draining:
                # a separation serves all stems of its source: claim them together, however many
                limit = self.settings.max_queue if resident.engine.family == "demucs" else room
                for members in operations.group_stems(self._claim(model_id, limit)):
                    generation = members[0]
                    try:
                        request = core.validate(*operations.backend_params(generation, self.store))
                    except (InvalidRequest, operations.SourceUnavailable) as error:
                        for member in members:
                            self.outcomes.fail(member.id, str(error), member)
                        continue
                    job = _Job(generation, request, members)
                    for member in members:
                        self._jobs[member.id] = job
                    waiting.append(job)
            while waiting:
                job = waiting[0]
                admission = core.can_admit(job.request)
                if admission.decision is Decision.LATER:
                    queued, waiting_for_memory = NOT_ADMITTED_STAGES
                    self._set_progress(job, 0, waiting_for_memory if "free" in admission.reason else queued)
                    break
                waiting.pop(0)
                if admission.decision is Decision.NEVER:
                    self._forget(job)
                    for member in job.members:
                        self.outcomes.fail(member.id, admission.reason, member)
                    continue
                core.admit(job.generation.id, job.request)
                job.admitted = time.monotonic()
                total = core.progress(job.generation.id)
                self._set_progress(job, 0, "decoding", total.total if total else None)

    def _claim(self, model_id: str, limit: int) -> list[Generation]:
        started = time.monotonic()
        # Never a job still held here under an earlier claim: one request per job id in the backend.
        claimed = self.store.claim(
            model_id, limit, worker_id=self.worker_id, lease_s=self.settings.lease_s, exclude=set(self._jobs)
        )
        if claimed:
            self.claim_seconds.append(time.monotonic() - started)
        return claimed

    # --- leases ---------------------------------------------------------------------------------------

    def _heartbeat(self) -> None:
        """Renew this worker's leases (dropping jobs whose lease lapsed) and expire other workers' leases."""
        self._last_heartbeat = time.monotonic()
        try:
            held = self.leases.heartbeat(
                self.worker_id,
                self.state,
                [member for job in self._claimed() for member in job.members],
                self.settings.lease_s,
            )
        except Exception as error:  # e.g. the database ended our session after a stall: retry next boundary
            log.warning(
                "heartbeat failed (%s: %s); retrying at the next step boundary", type(error).__name__, error
            )
            return
        missing = [job_id for job_id, job in self._jobs.items() if job_id not in held and not job.stop_reason]
        # A job cancelled meanwhile is not 'processing' any more either: that is a cancellation (stopped as
        # one at this boundary), not a lapsed lease, whose result another worker would then redo.
        cancelled: set[str] = set()
        if missing:
            with suppress(Exception):
                cancelled = self.store.with_status(missing, "cancelled")
            with self._lock:
                self._cancel_requested |= cancelled
        for job_id in missing:
            job = self._jobs[job_id]
            if job_id not in cancelled and job.stop_reason is None:
                log.warning(
                    "job %s: the lease of attempt %d lapsed (this worker was stalled); another worker may "
                    "own it now, so it stops here and its result is discarded",
                    job_id,
                    job.generation.attempts,
                )
                job.stop_reason = "lease lost"
                self._stop_job(job)
        requeued, failed = self.leases.expire(MAX_ATTEMPTS)
        if requeued or failed:
            self.counts["expired"] += len(requeued) + len(failed)
            log.warning("leases lapsed: re-queued %s, failed %s (out of attempts)", requeued, failed)
            self._wake.set()
            self._notify(False)

    def _apply_stops(self, poll: bool) -> None:
        """Cancellations asked for here or (polled) in the database, time limits, shutdown."""
        with self._lock:
            asked, self._cancel_requested = self._cancel_requested, set()
        if poll:  # cancel_job in another process can only tell us through the database
            with suppress(Exception):
                asked |= self.store.with_status(list(self._jobs), "cancelled")
        limit = self.settings.job_timeout_s
        now = time.monotonic()
        for job_id, job in list(self._jobs.items()):
            if job.stop_reason is not None or job_id not in self._jobs:
                continue
            if job_id in asked:
                job.stop_reason = "cancelled"
            elif job.admitted is not None and now - job.admitted > limit:
                job.stop_reason = "timeout"
            else:
                continue
            self._stop_job(job)

    def _stop_job(self, job: _Job) -> None:
        model_id = job.generation.model_name
        waiting = self._waiting.get(model_id, [])
        if job in waiting:  # never admitted: record its end directly
            waiting.remove(job)
            self._end(job, None)
            return
        resident = self._residents.get(model_id)
        if resident is None or not resident.engine.core.cancel(job.generation.id):
            self._end(job, None)

    # --- outcomes -------------------------------------------------------------------------------------

    def _record(self, resident: Resident, report: StepReport) -> None:
        for job_id, progress in report.progress.items():
            job = self._jobs.get(job_id)
            if job is not None:
                self._set_progress(job, progress.done, progress.phase, progress.total)
        for outcome in report.finished:
            job = self._jobs.get(outcome.request_id)
            if job is not None:
                self._end(job, outcome, resident.engine.device)

    def _end(self, job: _Job, outcome: Outcome | None, device: str | None = None) -> None:
        """Record how a job ended: completed, failed, cancelled, timed out, or re-queued (shutdown)."""
        self._forget(job)
        self.outcomes.record(job.members, job.stop_reason, outcome, device)

    def _forget(self, job: _Job) -> None:
        for member in job.members:
            self._jobs.pop(member.id, None)
            with self._lock:
                self._progress.pop(member.id, None)

    def _set_progress(self, job: _Job, done: int, stage: str, total: int | None = None) -> None:
        with self._lock:
            previous = self._progress.get(job.generation.id)
            if total is None:
                total = previous[1] if previous else 0
            for member in job.members:
                self._progress[member.id] = (done, total, stage)

    def _claimed(self) -> list[_Job]:
        """Each claimed job once (the stems of one separation share one)."""
        return list({id(job): job for job in self._jobs.values()}.values())

    def _shutdown(self) -> None:
        """Stop every claimed job at this boundary and put it back in the queue for the next worker."""
        for job in self._claimed():
            job.stop_reason = "shutdown"
            self._stop_job(job)
        for resident in self._residents.values():
            while resident.engine.core.has_work:
                for outcome in resident.engine.core.step().finished:
                    stopped = self._jobs.get(outcome.request_id)
                    if stopped is not None:
                        self._end(stopped, None)
        for job in self._claimed():
            self._end(job, None)
        self._residents.clear()
        with suppress(Exception):  # the database may be what failed
            self.leases.unregister(self.worker_id)
        self._notify(False)
