"""Errors raised by the storage package; each message says what went wrong and what to do next."""

from __future__ import annotations


class StorageError(Exception):
    """Base of every storage error."""


class NotFound(StorageError, LookupError):
    """No generation with that id (or it has no audio yet)."""


class IllegalTransition(StorageError):
    """A status change the job state machine does not allow."""

    def __init__(self, generation_id: str, current: str, target: str) -> None:
        self.generation_id = generation_id
        self.current = current
        self.target = target
        super().__init__(
            f"generation {generation_id} is {current}; it cannot become {target}"
            f" (allowed: pending -> processing|cancelled, processing -> completed|failed|cancelled|pending)"
        )


class AudioIntegrityError(StorageError):
    """The audio file on disk is missing or does not match the sha256 recorded when it was written."""


class StorageBusy(StorageError):
    """The database stayed locked by other writers through every retry."""


class QueueFull(StorageError):
    """Queuing these jobs would take the pending queue past its bound."""

    def __init__(self, pending: int, adding: int, limit: int) -> None:
        self.pending = pending
        self.adding = adding
        self.limit = limit
        super().__init__(f"the queue is full ({pending} pending, {adding} more asked for, limit {limit})")


class LeaseLost(IllegalTransition):
    """A worker's claim on a job ended (its lease expired and the job was re-queued or claimed again):
    whatever that worker produced for the job is discarded."""

    def __init__(self, generation_id: str, worker_id: str | None, attempt: int, current: str) -> None:
        self.worker_id = worker_id
        self.attempt = attempt
        StorageError.__init__(
            self,
            f"generation {generation_id}: the claim of worker {worker_id} (attempt {attempt}) is no longer "
            f"valid (the job is {current} under another claim); this worker's result is discarded",
        )
        self.generation_id, self.current, self.target = generation_id, current, "completed"
