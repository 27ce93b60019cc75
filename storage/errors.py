"""Errors raised by the storage package; each message says what went wrong and what to do next."""

from __future__ import annotations


class StorageError(Exception):
    """Base of every storage error."""


class NotFound(StorageError, LookupError):
    """No generation with that id (or it has no audio yet)."""


class AmbiguousId(StorageError, LookupError):
    """An id prefix that starts more than one generation's id."""

    def __init__(self, prefix: str, matches: list[str]) -> None:
        self.prefix = prefix
        self.matches = matches
        super().__init__(
            f"id prefix {prefix!r} matches more than one generation ({', '.join(matches)}); "
            "give more characters of the id"
        )


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


class HasChildren(StorageError):
    """Other generations derive from the one asked to be deleted: delete them too, or keep it."""

    def __init__(self, generation_id: str, dependants: list[str], *, as_source: bool = False) -> None:
        self.generation_id = generation_id
        self.dependants = dependants
        self.as_source = as_source
        shown = ", ".join(dependants[:5]) + (
            f" and {len(dependants) - 5} more" if len(dependants) > 5 else ""
        )
        if as_source:
            message = (
                f"generation {generation_id} (or one derived from it) is the conditioning source of "
                f"{len(dependants)} generation(s) outside its family ({shown}); delete those first"
            )
        else:
            message = (
                f"generation {generation_id} has {len(dependants)} generation(s) derived from it (stems, "
                f"edits, continuations: {shown}); delete its whole family instead, or those first"
            )
        super().__init__(message)


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
