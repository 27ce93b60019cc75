"""What routes share: the one ``JobService`` of the process, kept on the app's state."""

from __future__ import annotations

from fastapi import Request

from mcp_server.service import JobService


def get_service(request: Request) -> JobService:
    service: JobService = request.app.state.service
    return service
