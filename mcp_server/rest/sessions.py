"""Ardour sessions: write one from completed jobs, download it as a zip."""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import APIRouter, Depends, Path
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from ardour_templates import SessionManifest
from mcp_server.rest.deps import get_service
from mcp_server.rest.models import ExportRequest
from mcp_server.rest.problems import ERRORS
from mcp_server.service import JobService
from mcp_server.sessions import export_jobs, zip_session

router = APIRouter(prefix="/api/v1/sessions", tags=["sessions"], responses=ERRORS)
Service = Annotated[JobService, Depends(get_service)]


@router.post("", status_code=201, response_model=SessionManifest)
async def create_session(body: ExportRequest, service: Service) -> SessionManifest:
    """A new Ardour session with one track per completed job (the export_to_ardour tool). Download it with
    GET /api/v1/sessions/{session_name}.zip, using the session_name of the manifest."""
    return await export_jobs(service, **body.model_dump())


@router.get(
    "/{name}.zip",
    response_class=FileResponse,
    responses={200: {"content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}}}},
)
async def download_session(
    name: Annotated[str, Path(min_length=1, max_length=200, description="session_name of the manifest.")],
    service: Service,
) -> FileResponse:
    """The session directory (the .ardour file, its audio and manifest.json) as one zip."""
    archive = await zip_session(service, name)
    return FileResponse(
        archive,
        media_type="application/zip",
        filename=f"{name}.zip",
        background=BackgroundTask(os.unlink, archive),
    )
