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
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

from sqlalchemy.exc import DBAPIError

from mcp_server import families, operations
from mcp_server.config import Settings
from mcp_server.telemetry import Telemetry
from storage import Generation, IllegalTransition, LeaseLost, Store
from storage.leases import ANY_MODEL, Leases

if TYPE_CHECKING:  # torch and transformers load on the worker thread, so `initialize` is answered at once
    from engine.backend import Outcome, StepReport

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5  # how often jobs queued (or cancelled) by other processes are looked for
NOTIFY_EVERY_SECONDS = 0.2  # progress wake-ups of waiters are throttled to this
RETRY_SECONDS = 5  # after an unexpected worker error
MAX_ATTEMPTS = 2  # a job left processing by a second crash fails instead of running a third time
NOT_ADMITTED_STAGES = ("queued", "waiting for memory")  # claimed jobs outside every running batch
MODEL_HEADROOM = 1.2  # a model is loaded beside others when free memory exceeds its weights by this factor


@dataclass
class _Job:
    """A claimed job: admitted into a backend, or waiting for room in one."""

    generation: Generation
    request: Any
    # every job this request serves: itself, plus the other stems of one separation (one pass, many WAVs)
    members: list[Generation] = field(default_factory=list)
    admitted: float | None = None  # monotonic time it joined a batch
    stop_reason: str | None = None  # "cancelled" | "timeout" | "shutdown" once asked to stop


@dataclass
class _Resident:
    model_id: str
    engine: families.LoadedModel
    last_used: float = field(default_factory=time.monotonic)
    draining: bool = False  # takes no new jobs: another model is waiting for its memory


class Worker:
    """Owns the loaded models. ``start`` runs the loop on its own thread; other methods are thread-safe."""

    def __init__(
        self, settings: Settings, store: Store, notify: Callable[[], None], telemetry: Telemetry
    ) -> None:
        self.settings = settings
        self.store = store
        self._notify = notify
        self.telemetry = telemetry
        self.state = "not started"  # for logs and doctor: standby | loading ... | ready | load failed: ...
        self.first_audio_seconds: float | None = None  # from start to the first completed job's audio
        self._lock = threading.Lock()
        self._progress: dict[str, tuple[int, int, str]] = {}  # job id -> (done, total, stage)
        self._loading: dict[str, float] = {}  # model id -> monotonic time its load started
        self._cancel_requested: set[str] = set()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._loaders: list[threading.Thread] = []
        self._loads: queue.SimpleQueue[tuple[str, families.LoadedModel | None, str | None]] = (
            queue.SimpleQueue()
        )
        self._residents: dict[str, _Resident] = {}
        self._jobs: dict[str, _Job] = {}  # claimed, by id
        self._waiting: dict[str, list[_Job]] = {}  # model id -> claimed jobs not admitted yet, oldest first
        self._started = 0.0
        self._last_poll = 0.0
        self._last_notify = 0.0
        self.leases = Leases(store)
        self.worker_id = settings.worker_name
        self.models = settings.served_models
        self._shared = store.engine.dialect.name == "postgresql"  # other workers may serve this queue
        self._last_heartbeat = 0.0
        self.claim_seconds: deque[float] = deque(maxlen=1000)  # how long each claim that got jobs took
        self.counts = {"completed": 0, "failed": 0, "requeued": 0, "discarded": 0, "expired": 0}

    # --- called from other threads ----------------------------------------------------------------------

    def start(self) -> None:
        self._started = time.monotonic()
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

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def resident_models(self) -> list[str]:
        return list(self._residents)

    @property
    def jobs_in_progress(self) -> int:
        return len(self._jobs)

    def progress_snapshot(self) -> dict[str, tuple[int, int, str]]:
        """Every claimed job's progress, for publishing to other machines."""
        with self._lock:
            return dict(self._progress)

    def serves(self, model_id: str) -> bool:
        return ANY_MODEL in self.models or model_id in self.models

    def loading_since(self, model_id: str) -> float | None:
        """Seconds ``model_id`` has been loading, or None when it is not loading."""
        with self._lock:
            started = self._loading.get(model_id)
        return None if started is None else time.monotonic() - started

    # --- the loop ---------------------------------------------------------------------------------------

    def _run(self) -> None:
        lock = self._acquire_worker_lock()
        if lock is None:
            return
        try:
            try:
                report = self.store.recover(MAX_ATTEMPTS, shared=self._shared, worker_id=self.worker_id)
                log.info("recovered the queue at start-up: %s", report)
            except Exception:
                log.exception("recovering the queue failed; jobs left processing by a crash stay as they are")
            self._notify()
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
        if time.monotonic() - self._last_notify >= NOTIFY_EVERY_SECONDS:
            self._last_notify = time.monotonic()
            self._notify()
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
                            self._fail(member.id, str(error), member)
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
                        self._fail(member.id, admission.reason, member)
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
        for job_id, job in list(self._jobs.items()):
            if job_id not in held and job.stop_reason is None:
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
            self._notify()

    def _apply_stops(self, poll: bool) -> None:
        """Cancellations asked for here or (polled) in the database, time limits, shutdown."""
        with self._lock:
            asked, self._cancel_requested = self._cancel_requested, set()
        if poll:  # cancel_job in another process can only tell us through the database
            for job_id in list(self._jobs):
                with suppress(Exception):
                    if self.store.get(job_id).status == "cancelled":
                        asked.add(job_id)
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

    # --- residency ------------------------------------------------------------------------------------

    def _plan_residency(self) -> None:
        """Load a model that has pending jobs and is not resident, when memory allows or can be made to."""
        with self._lock:
            if self._loading:
                return  # one load at a time
        now = datetime.now(UTC)
        for model_id, oldest, _count in self.store.pending_models():
            if model_id in self._residents or not self.serves(model_id):
                continue
            if self._fits_beside_residents(model_id):
                self._begin_load(model_id)
                return
            idle = [
                r
                for r in self._residents.values()
                if not r.engine.core.has_work and not self._waiting.get(r.model_id)
            ]
            if idle:
                victim = min(idle, key=lambda resident: resident.last_used)
                self._unload(victim)
                self._begin_load(model_id)
                return
            if (now - oldest).total_seconds() >= self.settings.model_wait_s:
                for resident in self._residents.values():
                    if not resident.draining:
                        log.info("%s stops taking jobs so %s can be loaded", resident.model_id, model_id)
                    resident.draining = True
            return  # the longest-waiting model goes first

    def _fits_beside_residents(self, model_id: str) -> bool:
        if not self._residents:
            return True
        from engine import loading, memory

        weights = families.weights_bytes(model_id)
        if weights is None:
            weights = max(resident.engine.memory_bytes for resident in self._residents.values())
        device = loading.select_device(self.settings.device)
        return memory.free_bytes(device) >= MODEL_HEADROOM * weights

    def _unload(self, resident: _Resident) -> None:
        log.info("unloading %s to make room", resident.model_id)
        del self._residents[resident.model_id]
        self._waiting.pop(resident.model_id, None)
        resident.engine.core.close()
        from engine import loading

        loading.release_memory(resident.engine.device)

    def _begin_load(self, model_id: str) -> None:
        with self._lock:
            self._loading[model_id] = time.monotonic()
        self.state = f"loading {model_id}"
        self._last_heartbeat = 0.0  # tell the workers table at the next boundary
        self._notify()
        loader = threading.Thread(target=self._load, args=(model_id,), name=f"load-{model_id}", daemon=True)
        self._loaders = [thread for thread in self._loaders if thread.is_alive()] + [loader]
        loader.start()

    def _load(self, model_id: str) -> None:
        """On a helper thread: the engine or the reason it could not load."""
        log.info("loading %s", model_id)
        from engine import EngineError

        try:
            engine = families.load(model_id, self.settings)
        except EngineError as error:
            self._loads.put((model_id, None, str(error)))
        except Exception as error:
            log.exception("could not load %s", model_id)
            self._loads.put((model_id, None, f"could not load the model: {type(error).__name__}: {error}"))
        else:
            self._loads.put((model_id, engine, None))
        self._wake.set()

    def _take_loaded(self) -> None:
        while True:
            try:
                model_id, engine, error = self._loads.get_nowait()
            except queue.Empty:
                return
            with self._lock:
                self._loading.pop(model_id, None)
            if engine is None:
                self.state = f"load failed: {error}"
                log.error("could not load %s: %s", model_id, error)
                for generation in self._claim(model_id, self.settings.max_queue):
                    self._fail(generation.id, error or "could not load the model", generation)
                continue
            self._residents[model_id] = _Resident(model_id, engine)
            self.telemetry.model_loaded(engine)
            for resident in self._residents.values():
                resident.draining = False
            self.state = "ready"
            self._last_heartbeat = 0.0
            log.info(
                "loaded %s on %s (%s) in %.1f s", model_id, engine.device, engine.dtype, engine.load_seconds
            )
            self._wake.set()

    # --- outcomes -------------------------------------------------------------------------------------

    def _record(self, resident: _Resident, report: StepReport) -> None:
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
        outputs = (
            operations.outputs(job.members, outcome.result)
            if outcome is not None and outcome.status == "completed" and outcome.result is not None
            else {}
        )
        for member in job.members:
            self._end_one(job, member, outcome, outputs.get(member.id), device)
        self._notify()

    def _end_one(
        self,
        job: _Job,
        member: Generation,
        outcome: Outcome | None,
        output: operations.Output | None,
        device: str | None,
    ) -> None:
        job_id = member.id
        try:
            if outcome is not None and outcome.result is not None and output is not None:
                result = outcome.result
                self.store.complete(
                    job_id,
                    output.audio,
                    result.sample_rate,
                    loudness_lufs=output.loudness_lufs,
                    peak_dbfs=output.peak_dbfs,
                    generation_seconds=result.generation_seconds,
                    device=device or "",
                    seed=result.seed,
                    claim=member,
                    coding_history=operations.coding_history(member, device or "", result.seed, output.note),
                )
                self.telemetry.job_completed(result.generation_seconds)
                self.counts["completed"] += 1
                log.info("job %s completed (attempt %d)", job_id, member.attempts)
                if self.first_audio_seconds is None:
                    self.first_audio_seconds = time.monotonic() - self._started
                    log.info("first audio %.1f s after the worker started", self.first_audio_seconds)
            elif job.stop_reason == "lease lost":
                self.counts["discarded"] += 1
            elif outcome is not None and outcome.status == "completed":  # a stem this separator lacks
                self.store.fail(
                    job_id,
                    f"stem: {member.model_name} makes no stem {member.lineage.stem!r}; nothing stored",
                    claim=member,
                )
            elif outcome is not None and outcome.status == "failed":
                self.store.fail(job_id, outcome.error or "generation failed", claim=member)
            elif job.stop_reason == "timeout":
                self.store.fail(
                    job_id,
                    f"exceeded the per-job time limit of {self.settings.job_timeout_s:g} s "
                    "(DGX_MUSIC_JOB_TIMEOUT_S); ask for a shorter duration or raise the limit",
                    claim=member,
                )
            elif job.stop_reason == "shutdown":
                self.store.requeue(job_id, claim=member)
                self.counts["requeued"] += 1
            else:
                with suppress(IllegalTransition):  # cancel_job already marked it
                    self.store.cancel(job_id)
        except LeaseLost as lost:
            self.counts["discarded"] += 1
            log.warning("job %s: late result discarded: %s", job_id, lost)
        except IllegalTransition:
            log.info("job %s was cancelled while it finished; its result is discarded", job_id)
        except OSError as exc:  # a full disk, a quota, a file-size limit
            log.exception("writing the audio of job %s failed", job_id)
            outputs = self.store.outputs
            self._fail(
                job_id,
                f"could not write the audio under {outputs}: {exc.strerror or exc}; free disk space there "
                "(or lift the quota / file-size limit) and generate again",
                member,
            )
        except Exception as exc:
            if self._claim_lost(member):
                self.counts["discarded"] += 1
                log.warning(
                    "job %s: late result discarded: its claim lapsed while it was stored (%s)", job_id, exc
                )
            else:
                log.exception("recording the outcome of job %s failed", job_id)
                self._fail(job_id, f"could not store the result: {type(exc).__name__}: {exc}", member)

    def _claim_lost(self, claim: Generation) -> bool:
        """Whether another claim (or the queue) has the job now; False when that cannot be known."""
        try:
            now = self.store.get(claim.id)
        except Exception:
            return False
        return (now.status, now.worker_id, now.attempts) != ("processing", claim.worker_id, claim.attempts)

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

    def _fail(self, job_id: str, error: str, claim: Generation | None = None) -> None:
        try:
            self.store.fail(job_id, error, claim=claim)
            self.counts["failed"] += 1
        except LeaseLost as lost:
            self.counts["discarded"] += 1
            log.warning("job %s: late failure discarded: %s", job_id, lost)
        except Exception:
            log.exception("could not mark job %s failed", job_id)

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
        self._notify()

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
                    self.state = "standby"
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
