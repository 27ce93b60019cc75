"""Generations made from other generations, and families: section edits, remixes, stems, a piece with its
family, deletion. Thin calls into ``mcp_server.derive``, the same functions the MCP tools use."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict

from mcp_server import derive, song_args
from mcp_server.rest.deps import get_service
from mcp_server.rest.problems import ERRORS, ProblemError
from mcp_server.schemas import DeleteResult, GenerateResult, HistoryPage, Job, Seed
from mcp_server.service import JobService, ServiceError, UnknownJob

router = APIRouter(prefix="/api/v1", tags=["derived"], responses=ERRORS)

Service = Annotated[JobService, Depends(get_service)]
JobIdPath = Annotated[str, Path(min_length=1, max_length=64, description="A completed job's job_id.")]


class EditRequest(BaseModel):
    """The arguments of the edit_music tool, minus job_id (in the path) and the wait."""

    model_config = ConfigDict(extra="forbid")

    start_s: song_args.SectionStart
    end_s: song_args.SectionEnd
    prompt: song_args.EditPrompt = None
    lyrics: song_args.Lyrics = None
    model: song_args.AceStepModel = None
    crossfade_s: song_args.Crossfade = None
    seed: Seed = None
    steps: song_args.Steps = None


class RemixRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: song_args.RemixPrompt
    strength: song_args.Strength = 0.5
    model: song_args.AceStepModel = None
    seed: Seed = None


class StemsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: song_args.SeparatorName = None


@router.post("/jobs/{job_id}/edit", status_code=202, response_model=Job)
async def edit(job_id: JobIdPath, body: EditRequest, service: Service) -> Job:
    """Queue a section edit of a completed generation (ACE-Step repaint); poll it like any job."""
    return await derive.edit(service, job_id, **body.model_dump())


@router.post("/jobs/{job_id}/remix", status_code=202, response_model=Job)
async def remix(job_id: JobIdPath, body: RemixRequest, service: Service) -> Job:
    """Queue a remix (ACE-Step cover) of a completed generation."""
    return await derive.remix(service, job_id, body.prompt, body.strength, model=body.model, seed=body.seed)


@router.post("/jobs/{job_id}/stems", status_code=202, response_model=GenerateResult)
async def stems(job_id: JobIdPath, body: StemsRequest, service: Service) -> GenerateResult:
    """Queue one stem job per stem of the separator (Demucs), linked to the source."""
    return GenerateResult(jobs=await derive.separate(service, job_id, body.model))


@router.get("/jobs/{job_id}/family", response_model=HistoryPage)
async def family(job_id: JobIdPath, service: Service) -> HistoryPage:
    """The piece this job belongs to: its root and everything derived from it, parents first."""
    return HistoryPage(items=await derive.family(service, job_id), next_cursor=None)


@router.delete("/generations/{job_id}", response_model=DeleteResult)
async def delete(
    job_id: JobIdPath,
    service: Service,
    delete_family: Annotated[bool, Query(description="Also delete everything derived from it.")] = False,
) -> DeleteResult:
    """Delete a finished generation and its WAV; refused (409) while others derive from it, unless
    delete_family=true, or while it is pending or processing."""
    try:
        return DeleteResult(deleted=await derive.delete(service, job_id, delete_family))
    except UnknownJob:
        raise
    except ServiceError as exc:
        raise ProblemError(409, str(exc), "job_id") from None
