"""Request and response bodies of the REST API that the MCP tools do not have: built from the same argument
types (``mcp_server.schemas``), so a bound or description changes in one place for both surfaces."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mcp_server import song_args
from mcp_server.schemas import (
    REQUEST_DEFAULTS,
    Arrangement,
    Bpm,
    ContextSeconds,
    ContinueFrom,
    Duration,
    ExtendSeconds,
    GapSeconds,
    GuidanceScale,
    JobIds,
    LoudnessLufs,
    MelodyFrom,
    ModelName,
    Prompt,
    Seed,
    SessionName,
    Temperature,
    TopK,
    TopP,
    Variations,
)

GENERATION_FIELDS = ("prompt", "duration", "seed", "temperature", "top_k", "top_p", "guidance_scale")


class GenerateRequest(BaseModel):
    """The arguments of the generate_music tool, minus the wait (use GET /api/v1/jobs/{id}?wait=)."""

    model_config = ConfigDict(extra="forbid")

    prompt: Prompt
    duration: Duration | None = None
    seed: Seed = REQUEST_DEFAULTS["seed"]
    temperature: Temperature | None = None
    top_k: TopK | None = None
    top_p: TopP | None = None
    guidance_scale: GuidanceScale | None = None
    variations: Variations = 1
    loudness_lufs: LoudnessLufs = REQUEST_DEFAULTS["loudness_lufs"]
    model: ModelName = None
    lyrics: song_args.Lyrics = None
    bpm: song_args.SongBpm = None
    key: song_args.Key = None
    time_signature: song_args.TimeSignature = None
    vocal_language: song_args.VocalLanguage = None
    steps: song_args.Steps = None
    continue_from: ContinueFrom = None
    context_seconds: ContextSeconds | None = None
    melody_from: MelodyFrom = None

    def generation_params(self) -> dict[str, Any]:
        """The generation's arguments (null = the model family's default)."""
        return self.model_dump(exclude={"variations", "model", "continue_from", "melody_from"})


class ExtendRequest(BaseModel):
    """The arguments of the extend_music tool, minus the job (in the path) and the wait."""

    model_config = ConfigDict(extra="forbid")

    seconds: ExtendSeconds
    prompt: Prompt | None = None


class ExportRequest(BaseModel):
    """The arguments of the export_to_ardour tool."""

    model_config = ConfigDict(extra="forbid")

    job_ids: JobIds
    session_name: SessionName
    arrangement: Arrangement = "sequential"
    gap_seconds: GapSeconds = 0.0
    bpm: Bpm = None
    enable_osc: bool = False
    include_mix: song_args.IncludeMix = True


class Peaks(BaseModel):
    """A waveform for drawing: per point, the lowest and highest sample over all channels (-1 to 1)."""

    job_id: str
    sample_rate: int
    channels: int
    duration_s: float
    points: int
    min: list[float]
    max: list[float]


class Health(BaseModel):
    status: Literal["ok", "unavailable"] = Field(description="unavailable (HTTP 503) while jobs cannot run.")
    version: str
    worker: str = Field(
        description="ready, standby (another process on this data directory runs the jobs), loading MODEL, "
        "load failed: WHY, or not started."
    )
    queue_depth: int = Field(description="Pending jobs.")
    running: int = Field(description="Jobs being decoded now.")
    model: str = Field(description="The default model jobs use.")
    loaded_model: str | None = Field(description="The model resident in this process's worker, if any.")
    device: str | None
    dtype: str | None
