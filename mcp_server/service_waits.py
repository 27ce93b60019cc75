"""Waiting for jobs in the job service: ``Changes`` wakes async waiters on any event loop when this
process's worker changes a job, the LISTEN relay (PostgreSQL) turns other machines' changes into the same
wake-ups, and a timer re-reads in case another process without either is the one doing the work.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress

import anyio

from mcp_server.schemas import TERMINAL, Job
from mcp_server.service_reads import JobReads

POLL_SECONDS = 0.5  # waiters re-read this often: another process may be the one doing the work
SAFETY_POLL_SECONDS = 5.0  # ... and this often when a wake-up is sure to come (LISTEN, or our own worker)


class Changes:
    """Wakes async waiters, on whatever event loop they run, when the worker changes a job (any thread).

    Progress (a few times a second while anything decodes) wakes only the waiters that show it: one
    that waits for an end would otherwise re-read its jobs at every step, and eight such waiters cost a
    full batch of eight ~10 % of its decode speed on the project's 2-core VM (the reads hold the GIL the
    stepping thread needs between its operations)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event, bool]] = set()

    def notify(self, progress_only: bool = False) -> None:
        """Wake the waiters; ``progress_only``: only those listening for progress."""
        with self._lock:
            waiters = [entry for entry in self._waiters if entry[2] or not progress_only]
        for loop, event, _ in waiters:
            with suppress(RuntimeError):  # that loop has closed; its waiter is gone with it
                loop.call_soon_threadsafe(event.set)

    @contextmanager
    def listening(self, progress: bool = True) -> Iterator[asyncio.Event]:
        """Register before reading state, so a change between the read and the wait is not missed;
        ``progress``: also wake on progress."""
        entry = (asyncio.get_running_loop(), asyncio.Event(), progress)
        with self._lock:
            self._waiters.add(entry)
        try:
            yield entry[1]
        finally:
            with self._lock:
                self._waiters.discard(entry)


class Waiting(JobReads):
    """``JobService``'s waits and the wake-ups behind them."""

    changes: Changes

    def _changed(self, progress_only: bool = False) -> None:
        """The worker changed something (``progress_only``: only decode progress): wake local waiters, and
        tell other machines its progress."""
        self.changes.notify(progress_only)
        if self.relay is not None and self.worker is not None:
            self.relay.publish(self.worker.worker_id, self.worker.progress_snapshot())

    def _heard(self, job_ids: list[str], progress_only: bool) -> None:
        """LISTEN heard of a change (from any machine): re-read now, and claim if it may be a new job."""
        self.changes.notify(progress_only)
        if self.worker is not None and not progress_only:
            self.worker.wake()

    async def wait(
        self,
        job_ids: list[str],
        timeout: float,
        on_change: Callable[[list[Job]], Awaitable[None]] | None = None,
    ) -> list[Job]:
        """The jobs once all have ended or ``timeout`` seconds passed; ``on_change`` sees every wake-up."""
        deadline = time.monotonic() + timeout
        while True:
            with self.changes.listening(progress=on_change is not None) as changed:
                jobs = [await self.job(job_id) for job_id in job_ids]
                if on_change is not None:
                    await on_change(jobs)
                left = deadline - time.monotonic()
                unfinished = [job.job_id for job in jobs if job.status not in TERMINAL]
                if left <= 0 or not unfinished:
                    return jobs
                # Also re-read on a timer: another process may be the one doing the work. Not so often when
                # it is sure to say when it ends: LISTEN hears every machine, and our worker tells us itself.
                listening = self.relay is not None and self.relay.listening.is_set()
                ours = self.worker is not None and all(self.worker.progress(job) for job in unfinished)
                poll = SAFETY_POLL_SECONDS if listening or ours else POLL_SECONDS
                with anyio.move_on_after(min(left, poll)):
                    await changed.wait()
