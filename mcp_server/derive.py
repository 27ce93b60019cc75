"""Requests across model families and from other generations, over the job service (MCP, REST and CLI).

- ``generate``: generate_music's arguments checked against the chosen model's family (a parameter of the
  other family is refused by name), turned into one job per variation (``generation_jobs``), and queued,
  continuing ``continue_from``'s audio or following ``melody_from``'s tune when given (MusicGen; melody
  only on MusicGen-Melody checkpoints, which continue audio too; not both at once);
- ``edit`` / ``remix``: an ACE-Step job whose parent is a completed generation (any family);
- ``separate``: one stem job per stem of the separator, created together with their lineage;
- ``family`` and ``delete``: a piece with everything derived from it.

Every check that can be made without the model runs here, so a client gets a tool error at once; the
worker's ``backend.validate`` checks again with the loaded checkpoint and fails the job with its reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from engine import demucs
from engine.acestep import request as song_request
from engine.backend import InvalidRequest
from engine.musicgen.loading import conditions_on_melody
from mcp_server import families
from mcp_server.schemas import Job
from mcp_server.service import SEED_SPACE, JobService, ServiceError, _in_thread
from mcp_server.song_args import ACESTEP_ONLY
from storage import HasChildren, Lineage, NotFound, Operation

# generate_music's arguments ACE-Step refuses by name: MusicGen's sampling, continuation and melody
MUSICGEN_ARGUMENTS = song_request.MUSICGEN_ONLY | {"context_seconds", "continue_from", "melody_from"}
# What validation can know before the checkpoint is loaded: it may use CFG and may remix (checked again).
_PREVIEW_TRAITS = song_request.CheckpointTraits("preview", uses_cfg=True, default_steps=8, can_remix=True)
_PREVIEW_RATE = 8_000  # a silent stand-in for the source when checking an edit's section


async def generate(
    service: JobService,
    model: str | None,
    variations: int,
    params: dict[str, Any],
    continue_from: str | None = None,
    melody_from: str | None = None,
) -> list[Job]:
    """Queue generate_music's jobs (``params``: its arguments, null = the family's default), continuing
    ``continue_from``'s audio or following ``melody_from``'s tune when given."""
    if continue_from is not None and melody_from is not None:
        # As audiocraft's MusicGen, whose generate_continuation takes no melody: a continuation on a melody
        # checkpoint is conditioned on the text alone.
        raise ServiceError(
            "melody_from: give continue_from or melody_from, not both: a piece either continues audio or "
            "follows a tune; to lengthen a melody piece, continue it alone (extend_music)"
        )
    sources = {"continue_from": continue_from, "melody_from": melody_from}
    model_id, prepared = generation_jobs(
        service, model, variations, params, sources={k for k, v in sources.items() if v is not None}
    )
    continued = await service.source(continue_from)  # None when not given
    melody = await service.source(melody_from, "melody_from")
    return await service.submit_jobs(model_id, prepared, continue_from=continued, melody_from=melody)


def generation_jobs(
    service: JobService,
    model: str | None,
    variations: int,
    params: dict[str, Any],
    *,
    sources: frozenset[str] | set[str] = frozenset(),
) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    """(model id, [(prompt, params)] per variation) for generate_music; ``params`` holds the given ones,
    ``sources`` the names of the audio arguments given (continue_from, melody_from)."""
    model_id = service.resolve_model(model)
    family = families.family_of(model_id)
    # null = the family's default, except loudness_lufs, where null means "keep the level as generated"
    given = {name: value for name, value in params.items() if value is not None or name == "loudness_lufs"}
    if family == "demucs":
        raise ServiceError(f"model: {model_id!r} is a stem separator; use separate_stems(job_id, model=...)")
    if family == "musicgen":
        why = (
            f"an ACE-Step parameter; MusicGen ({model_id}) makes instrumentals without it: use "
            "model='ace-step' for songs with lyrics, bpm, key and time signature"
        )
        _refuse(given, ACESTEP_ONLY, why)
        _check_conditioning(model_id, sources)
        requests = service.build_requests(variations, **given)
        return model_id, [(r.prompt, r.model_dump(exclude={"prompt"})) for r in requests]
    why = (
        f"a MusicGen-only argument; ACE-Step ({model_id}) is a diffusion model: use steps, guidance_scale "
        "(CFG checkpoints) and seed; to change part of a song use edit_music, to restyle it remix"
    )
    _refuse(given | dict.fromkeys(sources, True), MUSICGEN_ARGUMENTS, why)
    checked = _validate_song("generate", given)
    stored = {**given, "duration": checked.duration}
    seed = given.get("seed")
    takes = [
        {**stored, **({} if seed is None else {"seed": (seed + i) % SEED_SPACE})} for i in range(variations)
    ]
    prompt = stored.pop("prompt")
    for take in takes:
        take.pop("prompt")
    return model_id, [(prompt, take) for take in takes]


async def edit(
    service: JobService,
    job_id: str,
    start_s: float,
    end_s: float,
    *,
    prompt: str | None = None,
    lyrics: str | None = None,
    model: str | None = None,
    crossfade_s: float | None = None,
    seed: int | None = None,
    steps: int | None = None,
) -> Job:
    """Regenerate ``start_s``-``end_s`` of a completed generation; everything outside stays as it was."""
    parent = await _completed(service, job_id, "edit")
    model_id = _song_model(service, model)
    options = {"start_s": start_s, "end_s": end_s, "crossfade_s": crossfade_s, "seed": seed, "steps": steps}
    params: dict[str, Any] = {name: value for name, value in options.items() if value is not None}
    lyrics = lyrics if lyrics is not None else parent.params.model_dump().get("lyrics")
    if lyrics:
        params["lyrics"] = lyrics
    text = prompt or parent.prompt
    assert parent.audio is not None
    _validate_song("edit", {"prompt": text, **params, **_stand_in(parent.audio.duration_s)})
    lineage = Lineage(Operation.EDIT, parent_id=parent.job_id, section_start_s=start_s, section_end_s=end_s)
    [job] = await service.submit_jobs(model_id, [(text, params)], [lineage])
    return job


async def remix(
    service: JobService,
    job_id: str,
    prompt: str,
    strength: float,
    *,
    model: str | None = None,
    seed: int | None = None,
) -> Job:
    """A new take of a completed generation in the style of ``prompt`` (ACE-Step's cover task)."""
    parent = await _completed(service, job_id, "remix")
    model_id = _song_model(service, model)
    params: dict[str, Any] = {"strength": strength, **({} if seed is None else {"seed": seed})}
    assert parent.audio is not None
    _validate_song("remix", {"prompt": prompt, **params, **_stand_in(parent.audio.duration_s)})
    lineage = Lineage(Operation.REMIX, parent_id=parent.job_id)
    [job] = await service.submit_jobs(model_id, [(prompt, params)], [lineage])
    return job


async def separate(
    service: JobService, job_id: str, model: str | None = None, *, local_paths: bool = False
) -> list[Job]:
    """One stem job per stem of the separator, linked to the source, queued in one transaction."""
    name = model or service.settings.separator
    model_id = service.resolve_model(name, local_paths=local_paths)
    if families.family_of(model_id) != "demucs":
        try:
            demucs.resolve_separator(model_id)
        except demucs.UnknownSeparatorError as exc:
            raise ServiceError(str(exc)) from None
        raise ServiceError(
            f"model: {name!r} is not a Demucs separator; use htdemucs, htdemucs_6s or htdemucs_ft"
        )
    source = await _completed(service, job_id, "separate")
    stems = stem_names(model_id)
    jobs: list[tuple[str, dict[str, Any]]] = [(f"{source.prompt} ({stem})", {}) for stem in stems]
    lineages = [Lineage(Operation.STEMS, parent_id=source.job_id, stem=stem) for stem in stems]
    return await service.submit_jobs(model_id, jobs, lineages)


def stem_names(model_id: str) -> tuple[str, ...]:
    """The stems a separator makes, without loading it (its published list, or its weights' metadata)."""
    published = demucs.PUBLISHED.get(model_id.lower())
    if published is not None:
        return published.sources
    from safetensors import safe_open

    for weights in sorted(Path(model_id).glob("*.safetensors")):
        with safe_open(str(weights), framework="numpy") as handle:
            kwargs = json.loads((handle.metadata() or {}).get("kwargs", "{}"))
        if kwargs.get("sources"):
            return tuple(str(source) for source in kwargs["sources"])
    raise ServiceError(f"model: {model_id} holds no demucs model that names its sources (stems)")


async def family(service: JobService, job_id: str) -> list[Job]:
    """The piece ``job_id`` belongs to: its root and every generation derived from it, parents first."""
    root = await service.job(job_id)
    generations = await _in_thread(service.store.family, root.job_id)
    return [await service.job(generation.id) for generation in generations]


async def delete(service: JobService, job_id: str, delete_family: bool = False) -> list[str]:
    """Delete a generation (and, with ``delete_family``, all derived from it); returns the deleted ids."""
    job = await service.job(job_id)
    if job.status in ("pending", "processing"):
        raise ServiceError(f"job_id {job.job_id!r} is {job.status}; cancel it first (cancel_job)")
    try:
        return await _in_thread(service.store.delete, job.job_id, with_descendants=delete_family)
    except HasChildren as exc:
        if exc.as_source:
            raise ServiceError(f"job_id: {exc}") from None
        raise ServiceError(
            f"job_id {job.job_id!r} has {len(exc.dependants)} generation(s) derived from it "
            f"({', '.join(exc.dependants[:5])}); pass delete_family=true to delete them too, or delete those "
            "first (list_history(family_of=job_id) shows them)"
        ) from None
    except NotFound:
        raise ServiceError(f"job_id {job_id!r} not found") from None


def _refuse(given: dict[str, Any], names: frozenset[str], why: str) -> None:
    foreign = sorted(set(given) & names)
    if foreign:
        raise ServiceError("; ".join(f"{name}: is {why}" for name in foreign))


def _check_conditioning(model_id: str, sources: frozenset[str] | set[str]) -> None:
    """What a MusicGen checkpoint can do with audio, known before it is loaded (the loaded backend checks
    again): melody_from only on MusicGen-Melody checkpoints."""
    if "melody_from" in sources and not conditions_on_melody(model_id):
        raise ServiceError(
            f"melody_from: model {model_id!r} has no melody conditioning; use model='melody' "
            "(facebook/musicgen-melody) or 'melody-large', or leave melody_from out"
        )


def _validate_song(operation: str, params: dict[str, Any]) -> song_request.SongRequest:
    try:
        return song_request.validate(operation, params, _PREVIEW_TRAITS)
    except InvalidRequest as exc:
        raise ServiceError(str(exc)) from None


def _stand_in(seconds: float) -> dict[str, Any]:
    silence = np.zeros((1, max(1, round(seconds * _PREVIEW_RATE))), dtype=np.float32)
    return {"source_audio": silence, "source_sample_rate": _PREVIEW_RATE}


def _song_model(service: JobService, model: str | None) -> str:
    model_id = service.resolve_model(model or service.settings.edit_model)
    if families.family_of(model_id) != "acestep":
        raise ServiceError(
            f"model: {model_id!r} is not an ACE-Step model; edits and remixes use ACE-Step 1.5 (ace-step, "
            "ace-step-base, or the operator's DGX_MUSIC_EDIT_MODEL)"
        )
    return model_id


async def _completed(service: JobService, job_id: str, what: str) -> Job:
    job = await service.job(job_id)
    if job.status != "completed" or job.audio is None:
        raise ServiceError(
            f"job_id {job.job_id!r} is {job.status}; only a completed generation can be used to {what} "
            "(wait for it with job_status)"
        )
    return job
