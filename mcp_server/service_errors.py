"""The errors the job service raises: each message names the argument and what is allowed, for MCP, REST
and the CLI to show as they are."""

from __future__ import annotations


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
