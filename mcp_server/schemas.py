"""The pydantic models of every tool's arguments and results: what MCP clients see as JSON schemas.

Generation arguments take their description, default and bounds from ``engine.GenerationRequest`` so the
schema an agent reads and the check that runs cannot drift apart. They are enforced constraints, so one
validation pass reports every bad argument of a call (worded by ``mcp_server.arguments``); the engine checks
again, for the CLI and any other caller.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine import GenerationRequest

JobStatus = Literal["pending", "processing", "completed", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled"})

AUDIO_URI = "music://generations/{job_id}/audio"
JOB_URI = "music://generations/{job_id}"

_REQUEST_SCHEMA: dict[str, Any] = GenerationRequest.model_json_schema()["properties"]
# JSON Schema bound -> the pydantic constraint that enforces it when the SDK validates a call's arguments.
_CONSTRAINTS = {
    "minimum": "ge",
    "maximum": "le",
    "exclusiveMinimum": "gt",
    "minLength": "min_length",
    "maxLength": "max_length",
}


# The engine's default of every generation parameter.
REQUEST_DEFAULTS: dict[str, Any] = {
    name: info.default for name, info in GenerationRequest.model_fields.items() if name != "prompt"
}


def _request_field(name: str, **extra: Any) -> Any:
    """A Field with the engine's description and bounds, as enforced constraints: the SDK checks every
    argument of a call in one pass and reports all that are out of range together (the engine checks
    again)."""
    prop = _REQUEST_SCHEMA[name]
    bounds = {_CONSTRAINTS[key]: prop[key] for key in _CONSTRAINTS if key in prop}
    return Field(description=prop.get("description"), **bounds, **extra)


# --- tool arguments ---------------------------------------------------------------------------------------

Prompt = Annotated[str, _request_field("prompt", pattern=r"\S")]  # not blank
Duration = Annotated[
    float,
    Field(
        ge=1,
        le=600,
        description="Length in seconds. MusicGen: 1-300 (melody checkpoints too); ACE-Step: 10-600 (songs "
        "up to 10 minutes).",
    ),
]
Seed = Annotated[int | None, _request_field("seed")]
Temperature = Annotated[float, _request_field("temperature")]
TopK = Annotated[int, _request_field("top_k")]
TopP = Annotated[float, _request_field("top_p")]
GuidanceScale = Annotated[float, _request_field("guidance_scale")]
LoudnessLufs = Annotated[float | None, _request_field("loudness_lufs")]
ContextSeconds = Annotated[float, _request_field("context_seconds")]
ContinueFrom = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=14_000_000,
        description="Audio to continue: a completed job_id, a file under the server's input directories "
        "(DGX_MUSIC_INPUT_DIRS, default DGX_MUSIC_HOME/inputs and /sessions), or inline base64 WAV/FLAC "
        "(at most 10 MiB). duration then means seconds added; the result is the whole piece (the "
        "original kept exactly up to the join). Sources longer than 29 s are used from their last 29 s. "
        "null = a new piece.",
    ),
]
MelodyFrom = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=14_000_000,
        description="A tune to follow (melody checkpoints only: model='melody' or 'melody-large'): a "
        "completed job_id, a file under the server's input directories, or inline base64 WAV/FLAC (at "
        "most 10 MiB), e.g. a hummed or played melody. Its chroma (pitch classes over time) conditions "
        "the piece along with the prompt; a piece over 30 s follows it window by window (each 30 s "
        "window the tune's matching 30 s, the tune looped when shorter than the piece); at most its first "
        "300 s count. Not with continue_from. null = text only.",
    ),
]
ExtendSeconds = Annotated[
    float,
    Field(ge=1, le=300, description="Seconds to add after the end of the job's audio (1-300)."),
]
Variations = Annotated[
    int,
    Field(ge=1, le=4, description="How many takes of the prompt (1-4); take i uses seed + i when seeded."),
]
ModelName = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=500,
        description="Model alias (small, medium, large, stereo-small, ...) or hub id; null = the server's "
        "default (which may be a local checkpoint the operator configured). A model other than the "
        "loaded one is loaded first (slow).",
    ),
]
WaitSeconds = Annotated[
    float,
    Field(
        ge=0, le=300, description="Seconds to wait for the result (0-300) before returning the job as it is."
    ),
]
JobId = Annotated[
    str,
    Field(min_length=1, max_length=64, description="A job_id returned by generate_music or list_history."),
]
JobIds = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=64)]],
    Field(
        min_length=1, max_length=32, description="1-32 ids of completed jobs, one track each, in this order."
    ),
]
Query = Annotated[
    str | None,
    Field(
        max_length=500, description='Full-text search over prompts (words, "phrases", prefix*); null = all.'
    ),
]
Limit = Annotated[int, Field(ge=1, le=100, description="Page size, 1-100.")]
Cursor = Annotated[
    str | None, Field(max_length=500, description="next_cursor from the previous page; null = first page.")
]
SessionName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=100,
        description="Name of the new Ardour session (1-100 characters); unsafe characters are replaced and "
        "an existing name gets a numeric suffix.",
    ),
]
Arrangement = Annotated[
    Literal["sequential", "stacked", "song"],
    Field(
        description="sequential: one clip after another on the timeline; stacked: all clips start at 0; "
        "song: a piece and its parts by lineage - the mix (muted when stems are present) and its stems at 0, "
        "edits at their section's offset with markers at its bounds, other takes in a Variations group."
    ),
]
GapSeconds = Annotated[
    float, Field(ge=0, le=60, description="Silence between clips in the sequential arrangement (0-60 s).")
]
Bpm = Annotated[float | None, Field(ge=20, le=300, description="Session tempo (20-300); null = 120.")]


# --- results ----------------------------------------------------------------------------------------------


class JobParams(BaseModel):
    """The parameters a job was queued with: its family's (MusicGen: temperature, top_k, top_p; ACE-Step:
    lyrics, bpm, key, ...; edit: start_s, end_s; stems: none). Absent ones took the model's default."""

    model_config = ConfigDict(extra="allow")

    duration: float | None = Field(None, description="Requested length in seconds (the source's for edits).")
    seed: int | None = Field(None, description="The seed used (the requested one until the job completes).")
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    guidance_scale: float | None = None
    loudness_lufs: float | None = Field(
        None, description="Requested integrated loudness target; null = as generated."
    )
    context_seconds: float | None = Field(
        None, description="MusicGen: seconds of context that prompt each next 30 s window."
    )


class LineageInfo(BaseModel):
    """How a generation was derived: from a prompt alone (generate), or from another generation or an input
    file (continue, melody, edit, stems, remix)."""

    operation: Literal["generate", "continue", "melody", "edit", "stems", "remix"]
    parent_id: str | None = Field(description="The generation this one was derived from; null for a new one.")
    source_job_id: str | None = Field(None, description="The job whose audio conditioned this one.")
    source_file_name: str | None = Field(None, description="The input file that conditioned this one.")
    source_file_sha256: str | None = None
    stem: str | None = Field(None, description="stems: which stem (drums, bass, other, vocals, ...).")
    section_start_s: float | None = Field(None, description="edit: start of the regenerated section (s).")
    section_end_s: float | None = Field(None, description="edit: end of the regenerated section (s).")


class AudioInfo(BaseModel):
    path: str = Field(description="Absolute path of the WAV on the server's machine.")
    uri: str = Field(description="MCP resource URI of the WAV (audio/wav); read it to get the bytes.")
    sample_rate: int
    channels: int
    duration_s: float
    loudness_lufs: float | None = Field(description="Measured integrated loudness; null for silence.")
    peak_dbfs: float | None
    sha256: str


class Job(BaseModel):
    """One generation: one prompt, one set of parameters, one WAV."""

    job_id: str
    status: JobStatus
    progress: float = Field(ge=0, le=1, description="Share of decode steps done, 0-1.")
    queue_position: int | None = Field(description="1 = next to start; null unless pending.")
    prompt: str
    params: JobParams
    model: str
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    error: str | None = Field(description="Why the job failed, and what to do about it.")
    stage: str | None = Field(
        None,
        description="What an unfinished job is doing: queued, loading model ..., waiting for memory, "
        "decoding, decoding audio; null once it has ended.",
    )
    audio: AudioInfo | None = Field(description="The result; present once status is completed.")
    lineage: LineageInfo | None = Field(
        None, description="How it was derived: operation, parent, conditioning source, stem, section."
    )
    note: str | None = Field(None, description="Something about the result to know (e.g. a trimmed source).")


class GenerateResult(BaseModel):
    jobs: list[Job] = Field(description="One job per variation; poll unfinished ones with job_status.")


class DeleteResult(BaseModel):
    deleted: list[str] = Field(description="The ids deleted, the given one first.")


class HistoryPage(BaseModel):
    items: list[Job]
    next_cursor: str | None = Field(description="Pass as cursor for the next page; null on the last page.")


def audio_info(job_id: str, home: Path, generation: Any) -> AudioInfo | None:
    """The audio facts of a completed ``storage.Generation``; None before it completes."""
    if generation.status != "completed" or generation.file_path is None:
        return None
    path = Path(generation.file_path)
    return AudioInfo(
        path=str(path if path.is_absolute() else home / path),
        uri=AUDIO_URI.format(job_id=job_id),
        sample_rate=generation.sample_rate,
        channels=generation.channels,
        duration_s=generation.duration_s,
        loudness_lufs=generation.loudness_lufs,
        peak_dbfs=generation.peak_dbfs,
        sha256=generation.sha256,
    )


def job_from_generation(
    generation: Any, home: Path, progress: float, queue_position: int | None, stage: str | None = None
) -> Job:
    """The public view of one ``storage.Generation`` row."""
    status = str(generation.status)
    return Job(
        job_id=generation.id,
        status=status,  # type: ignore[arg-type]  # storage.Status is a StrEnum of exactly these values
        progress=1.0 if status == "completed" else progress,
        queue_position=queue_position if status == "pending" else None,
        prompt=generation.prompt,
        params=JobParams(**all_params(generation)),
        model=generation.model_name,
        created_at=generation.created_at,
        started_at=generation.started_at,
        completed_at=generation.completed_at,
        error=generation.error,
        stage=stage,
        audio=audio_info(generation.id, home, generation),
        lineage=_lineage_info(generation),
        note=(generation.metadata or {}).get("note"),
    )


def all_params(generation: Any) -> dict[str, Any]:
    """A job's parameters: the common ones (database columns) that were given, and its family's own
    (lyrics, bpm, key, section, strength, context_seconds, ...) kept in its metadata under "params"."""
    metadata = generation.metadata or {}
    common = {name: value for name, value in generation.params.items() if value is not None}
    # jobs queued before family parameters moved under "params" kept context_seconds at the top level
    legacy = {"context_seconds": metadata["context_seconds"]} if "context_seconds" in metadata else {}
    return common | legacy | dict(metadata.get("params") or {})


def _lineage_info(generation: Any) -> LineageInfo | None:
    lineage = getattr(generation, "lineage", None)
    if lineage is None:
        return None
    return LineageInfo(
        operation=str(lineage.operation),  # type: ignore[arg-type]  # storage.Operation: these values
        parent_id=lineage.parent_id,
        source_job_id=lineage.source_job_id,
        source_file_name=lineage.source_file_name,
        source_file_sha256=lineage.source_file_sha256,
        stem=lineage.stem,
        section_start_s=lineage.section_start_s,
        section_end_s=lineage.section_end_s,
    )
