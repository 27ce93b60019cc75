"""The model catalogue: every model a client can name, what it does and takes, and whether it can run here.

One entry per distinct model the aliases resolve to (MusicGen's published checkpoints, ACE-Step 1.5's,
Demucs' separators, and whatever the operator mapped or made the default), read without loading anything:
the parameters and bounds come from the families' own validation tables (``engine.request``,
``engine.acestep.request``), the facts of a checkpoint from its files when they are on disk (a local
directory or the Hugging Face cache), and "present" is the same cache look-up ``dgx-music pull`` and the
worker make. ``GET /api/v1/models`` and the MCP resource ``dgx-music://models`` both return ``catalogue``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from engine import acestep, demucs
from engine import models as musicgen_names
from engine.acestep import request as song_request
from engine.backend import Parameter
from engine.models import looks_like_path
from engine.musicgen.loading import conditions_on_melody
from engine.musicgen.windows import MAX_PIECE_SECONDS
from engine.request import request_parameters
from mcp_server import families
from mcp_server.config import Settings

CATALOGUE_URI = "dgx-music://models"
Task = Literal["instrumental", "song", "stems"]
TASKS: dict[families.Family, Task] = {"musicgen": "instrumental", "acestep": "song", "demucs": "stems"}
Role = Literal["generate", "edit", "stems"]


class ParameterInfo(BaseModel):
    """One argument generate_music takes for this model: its type, default and allowed range."""

    name: str
    kind: Literal["string", "number", "integer", "boolean"]
    description: str
    default: Any = Field(None, description="What an absent (null) argument means; null = the model chooses.")
    minimum: float | None = Field(None, description="Lowest allowed value (for strings: their length).")
    maximum: float | None = None
    exclusive_minimum: bool = Field(False, description="The minimum itself is not allowed.")
    nullable: bool = False
    choices: list[str | int] = Field(default_factory=list, description="The only values allowed, if listed.")


class ModelEntry(BaseModel):
    """One model: pass ``alias`` (or ``id``) as generate_music's ``model`` (separators: separate_stems')."""

    id: str = Field(description="The model id jobs record: a hub id, separator name or local directory.")
    alias: str = Field(description="The short name to ask for it by.")
    aliases: list[str] = Field(description="Every name that selects it.")
    family: families.Family
    task: Task = Field(description="instrumental (MusicGen), song with lyrics (ACE-Step) or stems (Demucs).")
    summary: str
    operations: list[str] = Field(
        description="What it does: generate, continue (continue_from / extend), melody (melody_from), "
        "edit, remix, stems."
    )
    min_duration_s: float | None = Field(description="Shortest piece it generates; null for separators.")
    max_duration_s: float | None = Field(
        description="Longest piece it generates (separators: longest source); null when unknown here."
    )
    sample_rate: int | None = Field(description="Hz of its audio; null = the source's (separators).")
    channels: int | None = Field(description="1 mono, 2 stereo; null = the source's (separators).")
    parameters: list[ParameterInfo] = Field(description="The generate_music arguments it accepts.")
    melody: bool = Field(description="Conditions on a tune (melody_from).")
    stems: list[str] = Field(default_factory=list, description="Separators: the stems it makes.")
    licence: str
    commercial_use: bool | None = Field(description="Its licence allows commercial use; null = unknown.")
    weights_present: bool = Field(description="Its weights are here (a local directory or cached).")
    pull_command: str | None = Field(description="What fetches its weights, when they are not present.")
    missing_extra: str | None = Field(description="Why it cannot run in this install (a pip extra), or null.")
    operator: bool = Field(description="A local directory the operator configured.")
    default_for: list[Role] = Field(
        description="The server's default for generate (model=null), edit/remix, or stems."
    )


class Catalogue(BaseModel):
    default_model: str = Field(description="The model generate_music uses when model is null.")
    edit_model: str = Field(description="The ACE-Step model edit_music and remix use when model is null.")
    separator: str = Field(description="The separator separate_stems uses when model is null.")
    models: list[ModelEntry]


def catalogue(settings: Settings) -> Catalogue:
    """Every model this server knows by name, in family order, with the server's defaults marked."""
    defaults: dict[Role, str] = {
        "generate": families.resolve(settings.model, settings),
        "edit": families.resolve(settings.edit_model, settings),
        "stems": families.resolve(settings.separator, settings),
    }
    names = [
        *musicgen_names.ALIASES,  # short names first: "small" before "musicgen-small"
        *acestep.ALIASES,
        *demucs.PUBLISHED,
        *settings.model_directories,
    ]
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(families.resolve(name, settings), []).append(name)
    for role, configured in (("generate", settings.model), ("edit", settings.edit_model)):
        groups.setdefault(defaults[role], [configured])  # type: ignore[index]
    models = [_entry(model_id, aliases, settings, defaults) for model_id, aliases in groups.items()]
    return Catalogue(
        default_model=defaults["generate"],
        edit_model=defaults["edit"],
        separator=defaults["stems"],
        models=models,
    )


def _entry(model_id: str, aliases: list[str], settings: Settings, defaults: dict[Role, str]) -> ModelEntry:
    family = families.family_of(model_id)
    files = _checkpoint_files(model_id)
    if family == "musicgen":
        facts = _musicgen(model_id, files)
    elif family == "acestep":
        facts = _acestep(model_id, files)
    else:
        facts = _demucs(model_id)
    licence = acestep.licence_of(model_id) if family == "acestep" else None
    return ModelEntry(
        id=model_id,
        alias=aliases[0],
        aliases=aliases,
        family=family,
        task=TASKS[family],
        licence=families.licence_of(model_id),
        commercial_use=licence.commercial_use if licence else family == "demucs",
        weights_present=files is not None,
        pull_command=None if files is not None else _pull_command(model_id, aliases[0], family),
        missing_extra=families.missing_extra(model_id, "model"),
        operator=families.is_operator_model(model_id, settings),
        default_for=[role for role, default in defaults.items() if default == model_id],
        **facts,
    )


def _checkpoint_files(model_id: str) -> Path | None:
    """The directory holding the model's files on this machine (local, or its cached hub snapshot)."""
    published = demucs.PUBLISHED.get(model_id.lower())
    repo = published.repo_id if published is not None else model_id
    if looks_like_path(repo):
        directory = Path(repo).expanduser()
        return directory if directory.is_dir() and any(directory.iterdir()) else None
    from mcp_server.pull import cached_snapshot

    try:
        return cached_snapshot(repo)
    except ValueError:  # not a valid hub id (HFValidationError)
        return None


def _pull_command(model_id: str, alias: str, family: families.Family) -> str | None:
    if looks_like_path(model_id):
        return None  # a directory the operator named: nothing to download, the operator must fix it
    return acestep.pull_command(model_id) if family == "acestep" else f"dgx-music pull {alias}"


def _parameters(table: dict[str, Parameter], **overrides: dict[str, Any]) -> list[ParameterInfo]:
    """The family's parameters that generate_music takes, in its table's order."""
    from mcp_server.rest.models import GenerateRequest  # here: the REST package imports this module

    accepted = GenerateRequest.model_fields
    return [
        ParameterInfo(**{**_fields(parameter), **overrides.get(name, {})})
        for name, parameter in table.items()
        if name in accepted
    ]


def _fields(parameter: Parameter) -> dict[str, Any]:
    return {
        "name": parameter.name,
        "kind": parameter.kind,
        "description": parameter.description,
        "default": parameter.default,
        "minimum": parameter.minimum,
        "maximum": parameter.maximum,
        "exclusive_minimum": parameter.exclusive_minimum,
        "nullable": parameter.nullable,
        "choices": list(parameter.choices),
    }


def _musicgen(model_id: str, files: Path | None) -> dict[str, Any]:
    melody = conditions_on_melody(model_id)
    config = _json(files / "config.json") if files is not None else {}
    # the published checkpoints' EnCodec runs at 32 kHz; stereo ones are named so
    from engine.musicgen.checkpoints import SAMPLE_RATE

    rate = int(config.get("audio_encoder", {}).get("sampling_rate", SAMPLE_RATE))
    stereo = "stereo" in model_id.rsplit("/", 1)[-1].lower()
    channels = int(config.get("decoder", {}).get("audio_channels", 2 if stereo else 1))
    longest = MAX_PIECE_SECONDS  # melody checkpoints too: each window follows its slice of the tune
    table = request_parameters()
    what = (
        "follows a tune (melody_from) and the prompt, and continues audio (continue_from)"
        if melody
        else "continues audio (continue_from)"
    )
    return {
        "summary": f"MusicGen: instrumental music from text, up to {longest:g} s at {rate / 1000:g} kHz "
        f"{'stereo' if channels == 2 else 'mono'}; {what}",
        "operations": ["generate", "continue", "melody"] if melody else ["generate", "continue"],
        "min_duration_s": table["duration"].minimum,
        "max_duration_s": longest,
        "sample_rate": rate,
        "channels": channels,
        "parameters": _parameters(table, duration={"maximum": longest}),
        "melody": melody,
    }


def _song_traits(model_id: str, files: Path | None) -> song_request.CheckpointTraits:
    """Turbo or CFG, and whether it can remix, from its files when present, else from its published id."""
    from engine.acestep.backend import BASE_STEPS, TURBO_STEPS

    index = _json(files / "model_index.json") if files is not None else {}
    if files is not None:
        turbo = bool(_json(files / "transformer" / "config.json").get("is_turbo", False))
    else:
        turbo = model_id != acestep.BASE
    components = ("audio_tokenizer", "audio_token_detokenizer")
    can_remix = all(isinstance(index.get(name), list) and None not in index[name] for name in components)
    return song_request.CheckpointTraits(
        model_id, uses_cfg=not turbo, default_steps=TURBO_STEPS if turbo else BASE_STEPS, can_remix=can_remix
    )


def _acestep(model_id: str, files: Path | None) -> dict[str, Any]:
    traits = _song_traits(model_id, files)
    table = song_request.parameters(traits)
    published = acestep.PUBLISHED.get(model_id)
    kind = "turbo (guidance-distilled)" if not traits.uses_cfg else "with classifier-free guidance"
    summary = published.summary if published else f"ACE-Step 1.5 {kind}: songs with lyrics"
    return {
        "summary": summary,
        "operations": [name for name in song_request.OPERATIONS if name in song_request.operations(traits)],
        "min_duration_s": song_request.MIN_DURATION_S,
        "max_duration_s": song_request.MAX_DURATION_S,
        "sample_rate": song_request.SAMPLE_RATE,
        "channels": song_request.CHANNELS,
        "parameters": _parameters(table, time_signature={"choices": list(song_request.TIME_SIGNATURES)}),
        "melody": False,
    }


def _demucs(model_id: str) -> dict[str, Any]:
    from mcp_server.derive import stem_names
    from mcp_server.service import ServiceError

    published = demucs.PUBLISHED.get(model_id.lower())
    try:
        stems = list(stem_names(model_id))
    except (ServiceError, OSError):  # a mapped directory without readable weights
        stems = []
    longest = None
    if families.missing_extra(model_id) is None:
        from engine.demucs.separator import MAX_SECONDS

        longest = MAX_SECONDS
    return {
        "summary": (published.description if published else f"Demucs separator: {', '.join(stems)}"),
        "operations": ["stems"],
        "min_duration_s": None,
        "max_duration_s": longest,
        "sample_rate": None,
        "channels": None,
        "parameters": [],
        "melody": False,
        "stems": stems,
    }


def _json(path: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}
