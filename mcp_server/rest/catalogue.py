"""The model catalogue over REST: the same ``mcp_server.catalogue`` the MCP resource dgx-music://models
returns."""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Depends

from mcp_server.catalogue import Catalogue, catalogue
from mcp_server.rest.deps import get_service
from mcp_server.rest.problems import ERRORS
from mcp_server.service import JobService

router = APIRouter(prefix="/api/v1", tags=["models"], responses=ERRORS)


@router.get("/models", response_model=Catalogue)
async def models(service: Annotated[JobService, Depends(get_service)]) -> Catalogue:
    """Every model this server knows by name: what it does, the parameters it takes (with ranges and
    defaults), its longest piece, rate and channels, licence, whether its weights are here (else the pull
    command) and its extra installed, and which are the server's defaults."""
    # reads checkpoint files and the Hugging Face cache: off the event loop
    return await anyio.to_thread.run_sync(catalogue, service.settings)
