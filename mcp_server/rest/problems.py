"""Errors as ``application/problem+json`` (RFC 9457) that name the field, for every failure of the REST API.

Service refusals keep their message, which already says which argument is wrong and what to do; pydantic
validation errors become one entry per field. Nothing else (no traceback) crosses HTTP.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException

from mcp_server.config import describe_validation_error
from mcp_server.service import QueueFullError, ServiceError, UnknownJob
from mcp_server.sessions import NotCompleted, UnknownSession

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
RETRY_AFTER_SECONDS = 10


class FieldError(BaseModel):
    field: str = Field(description="The argument at fault: a body field, query parameter or path segment.")
    message: str


class Problem(BaseModel):
    type: str = "about:blank"
    title: str = Field(description="The HTTP status phrase.")
    status: int
    detail: str = Field(description="What went wrong and what to do about it.")
    errors: list[FieldError] = Field(default_factory=list, description="One entry per invalid field.")


class ProblemError(Exception):
    """Raised by a route for a failure the service does not know about (e.g. an unsatisfiable range)."""

    def __init__(self, status: int, detail: str, field: str | None = None, **headers: str) -> None:
        super().__init__(detail)
        self.status, self.detail, self.field, self.headers = status, detail, field, headers


# The OpenAPI description of every error response: the same schema whatever the status.
PROBLEM_CONTENT = {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
ERRORS: dict[int | str, dict[str, Any]] = {
    "4XX": {"description": "The request was refused; `errors` names the fields", "content": PROBLEM_CONTENT},
    "5XX": {"description": "The server cannot serve it now", "content": PROBLEM_CONTENT},
}


def problem(status: int, detail: str, errors: Sequence[FieldError] = (), **headers: str) -> JSONResponse:
    body = Problem(title=HTTPStatus(status).phrase, status=status, detail=detail, errors=list(errors))
    return JSONResponse(body.model_dump(), status_code=status, media_type=MEDIA_TYPE, headers=headers or None)


def from_validation_error(exc: ValidationError, prefix: str = "") -> JSONResponse:
    """A 422 for a pydantic error raised while checking a request (e.g. the engine's bounds)."""
    errors = [_field_error(error, prefix) for error in exc.errors()]
    return problem(422, describe_validation_error(exc), errors)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(ProblemError, _problem_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


async def _request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [_field_error(error) for error in exc.errors()]
    detail = "; ".join(f"{error.field}: {error.message}" for error in errors) or "invalid request"
    return problem(422, detail, errors)


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    message = str(exc)
    if isinstance(exc, UnknownJob):
        return problem(404, message, [FieldError(field="job_id", message=message)])
    if isinstance(exc, UnknownSession):
        return problem(404, message, [FieldError(field="name", message=message)])
    if isinstance(exc, QueueFullError):
        return problem(503, message, [], **{"Retry-After": str(RETRY_AFTER_SECONDS)})
    if isinstance(exc, NotCompleted):
        return problem(409, message, [FieldError(field="job_ids", message=message)])
    # The service's messages start with the argument at fault ("model: ...", "job_id 'x' is ...").
    field = message.split(":", 1)[0].split(" ", 1)[0] if message else "request"
    return problem(422, message, [FieldError(field=field, message=message)])


async def _problem_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    errors = [FieldError(field=exc.field, message=exc.detail)] if exc.field else []
    return problem(exc.status, exc.detail, errors, **exc.headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    if exc.status_code == 404:
        detail = f"no such endpoint: {request.method} {request.url.path}; the API is described at /docs"
    return problem(exc.status_code, detail, [], **(exc.headers or {}))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error in %s %s", request.method, request.url.path)
    return problem(500, f"internal error ({type(exc).__name__}); the server log has the details")


def _field_error(error: Any, prefix: str = "") -> FieldError:
    # FastAPI prefixes the location with body/query/path; the field is what the caller named.
    location = [str(part) for part in error["loc"] if part not in ("body", "query", "path", "header")]
    name = ".".join(location) or "body"
    message = str(error["msg"]).removeprefix("Value error, ")
    return FieldError(field=prefix + name, message=message)
