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
LISTEN_POLL_SECONDS = 5.0  # with LISTEN/NOTIFY the re-read is only a safety net


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


class Waiting(JobReads):
    """``JobService``'s waits and the wake-ups behind them."""

    changes: Changes

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
