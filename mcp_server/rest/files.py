"""The audio of completed jobs: the WAV (sha256-checked, byte ranges so players can seek, ETag) and a
downsampled waveform for drawing it."""

from __future__ import annotations

import io
import re
from typing import Annotated

import anyio
import numpy as np
import soundfile as sf
from fastapi import APIRouter, Depends, Query, Request, Response

from mcp_server.rest.deps import get_service
from mcp_server.rest.jobs import JobIdPath
from mcp_server.rest.models import Peaks
from mcp_server.rest.problems import ERRORS, ProblemError
from mcp_server.schemas import Job
from mcp_server.service import JobService, ServiceError, UnknownJob

router = APIRouter(prefix="/api/v1/files", tags=["files"], responses=ERRORS)
Service = Annotated[JobService, Depends(get_service)]
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_WAV = {"content": {"audio/wav": {"schema": {"type": "string", "format": "binary"}}}}


@router.get(
    "/{job_id}",
    response_class=Response,
    responses={
        200: {"description": "The whole WAV.", **_WAV},
        206: {"description": "The requested byte range of the WAV.", **_WAV},
        304: {"description": "If-None-Match matched: the client's copy is current."},
    },
)
async def get_file(job_id: JobIdPath, request: Request, service: Service) -> Response:
    """The WAV of a completed job, verified against the sha256 recorded when it was written.

    Supports a single `Range: bytes=a-b` (206, or 416 when it lies outside the file) and `If-None-Match`
    with the ETag (the sha256)."""
    job = await _completed(service, job_id)
    assert job.audio is not None
    etag = f'"{job.audio.sha256}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, max-age=0, must-revalidate",
        "Content-Disposition": f'inline; filename="{job.job_id}.wav"',
    }
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    data = await _verified_audio(service, job_id)
    wanted = request.headers.get("range")
    if wanted is None or request.headers.get("if-range", etag) != etag:
        return Response(data, media_type="audio/wav", headers=headers)
    start, end = _byte_range(wanted, len(data))
    headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
    return Response(data[start : end + 1], status_code=206, media_type="audio/wav", headers=headers)


def _byte_range(header: str, size: int) -> tuple[int, int]:
    """The first inclusive range of a ``Range`` header (one range is all a media element asks for)."""
    match = _RANGE.fullmatch(header.split(",")[0].strip())
    if match is None or match.groups() == ("", ""):
        raise ProblemError(416, f"Range {header!r} is not bytes=START-END", "range", **_unsatisfied(size))
    first, last = match.groups()
    if first == "":  # the last N bytes
        start, end = max(0, size - int(last)), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise ProblemError(
            416, f"Range {header!r} lies outside the {size} bytes", "range", **_unsatisfied(size)
        )
    return start, end


def _unsatisfied(size: int) -> dict[str, str]:
    return {"Content-Range": f"bytes */{size}"}


@router.get("/{job_id}/peaks", response_model=Peaks)
async def get_peaks(
    job_id: JobIdPath,
    service: Service,
    points: Annotated[int, Query(ge=16, le=4000, description="How many min/max pairs (16-4000).")] = 800,
) -> Peaks:
    """The waveform of a completed job's WAV, reduced to `points` min/max pairs for drawing."""
    job = await _completed(service, job_id)
    data = await _verified_audio(service, job_id)
    low, high, rate, channels = await anyio.to_thread.run_sync(_peaks, data, points)
    assert job.audio is not None
    return Peaks(
        job_id=job_id,
        sample_rate=rate,
        channels=channels,
        duration_s=job.audio.duration_s,
        points=len(low),
        min=low,
        max=high,
    )


def _peaks(wav: bytes, points: int) -> tuple[list[float], list[float], int, int]:
    samples, rate = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    frames = samples.shape[0]
    points = max(1, min(points, frames))
    edges = np.linspace(0, frames, points + 1).astype(int)
    low = np.minimum.reduceat(samples.min(axis=1), edges[:-1])
    high = np.maximum.reduceat(samples.max(axis=1), edges[:-1])
    return [round(float(v), 4) for v in low], [round(float(v), 4) for v in high], rate, samples.shape[1]


async def _verified_audio(service: JobService, job_id: str) -> bytes:
    """The WAV bytes; a file missing or changed on disk is the server's fault (500, saying how to repair)."""
    try:
        return await service.audio(job_id)
    except UnknownJob:
        raise
    except ServiceError as exc:
        raise ProblemError(500, str(exc)) from None


async def _completed(service: JobService, job_id: str) -> Job:
    job = await service.job(job_id)
    if job.audio is None:
        raise ProblemError(
            409, f"job_id {job_id!r} is {job.status}; audio exists only for completed jobs", "job_id"
        )
    return job
