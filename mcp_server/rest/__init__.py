"""The REST API (``/api/v1``, ``/health``, ``/metrics``) and the studio (``/``) over the job service.

One service layer under both surfaces: the routes call the same ``JobService`` methods, pydantic models and
export code as the MCP tools. OpenAPI is at ``/openapi.json``, interactive docs at ``/docs``.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from mcp_server import __version__
from mcp_server.rest import catalogue, derived, jobs, monitoring, problems, sessions
from mcp_server.rest import files as files_routes
from mcp_server.service import JobService

STUDIO_DIR = Path(str(importlib.resources.files("mcp_server") / "studio"))


def build_api(service: JobService, **fastapi_options: Any) -> FastAPI:
    """The FastAPI app for ``service`` (which the caller starts and stops)."""
    api = FastAPI(
        title="DGX Music",
        version=__version__,
        summary="Text-to-music jobs, their audio, a searchable history and Ardour sessions.",
        **fastapi_options,
    )
    api.state.service = service
    problems.install(api)
    for module in (jobs, derived, files_routes, sessions, monitoring, catalogue):
        api.include_router(module.router)
    api.mount("/studio", StaticFiles(directory=STUDIO_DIR), name="studio")

    @api.get("/", include_in_schema=False)
    async def studio() -> FileResponse:
        return FileResponse(STUDIO_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    api.openapi = lambda: _openapi(api)  # type: ignore[method-assign]
    return api


def _openapi(api: FastAPI) -> dict[str, Any]:
    """FastAPI's document, plus the Problem schema every error response refers to."""
    if api.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=api.title, version=api.version, summary=api.summary, routes=api.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (problems.Problem, problems.FieldError):
            definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(definition.pop("$defs", {}))
            components[model.__name__] = definition
        api.openapi_schema = schema
    return api.openapi_schema
