"""Writing how each claimed job ended to the store, and counting the outcomes for ``/metrics``.

The worker decides when a job has ended (its backend finished it, or it was stopped at a step boundary) and
forgets it; this module records that end for every job the request served: the audio of a completed one,
the error of a failed one, a cancellation, a time limit, or a return to the queue at shutdown. A result
whose claim lapsed meanwhile is discarded, never committed over the new owner's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING

from mcp_server import operations
from mcp_server.config import Settings
from mcp_server.telemetry import Telemetry
from storage import Generation, IllegalTransition, LeaseLost, Store

if TYPE_CHECKING:  # torch and transformers load on the worker thread, so `initialize` is answered at once
    from engine.backend import Outcome

# The worker's lines keep one logger name, whichever of its modules writes them: operators filter by it.
log = logging.getLogger("mcp_server.worker")


class Outcomes:
    """Records job ends in the store, then wakes the job's waiters (``notify(False)``: a change of status,
    not progress); ``counts`` and ``first_audio_seconds`` are read by metrics and logs."""

    def __init__(
        self, settings: Settings, store: Store, telemetry: Telemetry, notify: Callable[[bool], None]
    ) -> None:
        self.settings = settings
        self.store = store
        self.telemetry = telemetry
        self._notify = notify
        self.started = 0.0  # monotonic time the worker started, for first_audio_seconds
        self.first_audio_seconds: float | None = None  # from start to the first completed job's audio
        self.counts = {"completed": 0, "failed": 0, "requeued": 0, "discarded": 0, "expired": 0}

    def record(
        self,
        members: list[Generation],
        stop_reason: str | None,
        outcome: Outcome | None,
        device: str | None,
    ) -> None:
        """Record how one request ended for every job it served: completed, failed, cancelled, timed out,
        or re-queued (shutdown)."""
        outputs = (
            operations.outputs(members, outcome.result)
            if outcome is not None and outcome.status == "completed" and outcome.result is not None
            else {}
        )
        for member in members:
            self._record_one(member, stop_reason, outcome, outputs.get(member.id), device)
        self._notify(False)

    def _record_one(
        self,
        member: Generation,
        stop_reason: str | None,
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
                    self.first_audio_seconds = time.monotonic() - self.started
                    log.info("first audio %.1f s after the worker started", self.first_audio_seconds)
            elif stop_reason == "lease lost":
                self.counts["discarded"] += 1
            elif outcome is not None and outcome.status == "completed":  # a stem this separator lacks
                self.store.fail(
                    job_id,
                    f"stem: {member.model_name} makes no stem {member.lineage.stem!r}; nothing stored",
                    claim=member,
                )
            elif outcome is not None and outcome.status == "failed":
                self.store.fail(job_id, outcome.error or "generation failed", claim=member)
            elif stop_reason == "timeout":
                self.store.fail(
                    job_id,
                    f"exceeded the per-job time limit of {self.settings.job_timeout_s:g} s "
                    "(DGX_MUSIC_JOB_TIMEOUT_S); ask for a shorter duration or raise the limit",
                    claim=member,
                )
            elif stop_reason == "shutdown":
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
            self.fail(
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
                self.fail(job_id, f"could not store the result: {type(exc).__name__}: {exc}", member)

    def _claim_lost(self, claim: Generation) -> bool:
        """Whether another claim (or the queue) has the job now; False when that cannot be known."""
        try:
            now = self.store.get(claim.id)
        except Exception:
            return False
        return (now.status, now.worker_id, now.attempts) != ("processing", claim.worker_id, claim.attempts)

    def fail(self, job_id: str, error: str, claim: Generation | None = None) -> None:
        try:
            self.store.fail(job_id, error, claim=claim)
            self.counts["failed"] += 1
        except LeaseLost as lost:
            self.counts["discarded"] += 1
            log.warning("job %s: late failure discarded: %s", job_id, lost)
        except IllegalTransition:  # cancel_job got there first (e.g. between its claim and its validation)
            log.info("job %s was cancelled before its failure could be recorded (%s)", job_id, error)
        except Exception:
            log.exception("could not mark job %s failed", job_id)
        self._notify(False)
