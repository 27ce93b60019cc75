"""The public data types: what goes in (Clip) and what comes out (SessionManifest)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

# A path in results: a plain JSON string. pydantic's own schema for Path says `format: "path"`, which is not a
# JSON Schema format; strict validators in MCP clients (Claude Code's ajv) warn about it on every listing.
PathString = Annotated[Path, WithJsonSchema({"type": "string"})]


class Clip(BaseModel):
    """One audio file that becomes one track. `start_s` is used by the "explicit" arrangement only;
    `role` and `section` by the "song" arrangement (other arrangements record the role in the manifest)."""

    model_config = ConfigDict(frozen=True)

    path: Path
    name: str
    start_s: float | None = Field(default=None, ge=0.0, le=86_400.0, allow_inf_nan=False)
    gain_db: float = Field(default=0.0, ge=-60.0, le=24.0, allow_inf_nan=False)
    comment: str = Field(default="", max_length=20_000)
    role: str | None = Field(
        default=None,
        description="'mix' (the song), 'stem:NAME' (e.g. 'stem:drums'), 'edit' (a section regenerated) or "
        "'variation' (another take of the song)",
    )
    section: tuple[float, float] | None = Field(
        default=None,
        description="role 'edit': the regenerated section (start_s, end_s) in the clip's own time, which is "
        "the song's time",
    )


class TrackInfo(BaseModel):
    strip_id: int = Field(
        description="1-based order of the track among the session's strips (ardour-mcp's ssid)"
    )
    name: str
    file: PathString = Field(description="the WAV inside interchange/NAME/audiofiles/")
    source_file: PathString = Field(description="the clip's original audio file")
    channels: int
    source_sample_rate: int
    resampled: bool
    gain_db: float
    start_samples: int
    length_samples: int
    start_s: float
    length_s: float
    role: str | None = Field(default=None, description="mix, stem:NAME, edit or variation (from the clip)")
    muted: bool = False
    group: str | None = Field(default=None, description="the route group holding the track")
    source_offset_samples: int = Field(default=0, description="where in the file the region begins")


class MarkerInfo(BaseModel):
    name: str
    start_samples: int
    start_s: float


class SessionManifest(BaseModel):
    requested_name: str
    session_name: str = Field(description="the name actually used (sanitised, and numbered if it existed)")
    renamed: bool = Field(description="True when the name differs from requested_name")
    notes: list[str] = Field(description="why the name changed, in words")
    session_dir: PathString
    ardour_file: PathString
    manifest_file: PathString
    sample_rate: int
    bpm: float
    meter: tuple[int, int]
    length_samples: int
    length_s: float
    tracks: list[TrackInfo]
    markers: list[MarkerInfo]
    metadata: dict[str, str]
    open_command: str
    osc_enabled: bool
