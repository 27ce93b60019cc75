"""What a claimed job asks its backend for, and which audio each job stores, by lineage operation.

- generate / continue: the prompt and the stored parameters (and the audio continued, see
  ``conditioning_sources``);
- edit / remix: the stored parameters plus the parent's audio, read back from the parent's WAV (verified
  against its sha256) at the parent's own rate: ACE-Step resamples it to 48 kHz stereo itself;
- stems: the parent's audio and rate; the stem jobs of one source claimed together share one separation, and
  each stores its own stem. Stems are loudness-preserving (their sum stays the mix): none is normalised, and
  when one would clip in the 24-bit file every stem of that source is scaled by one shared factor.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.audio import integrated_loudness, peak_dbfs
from engine.backend import GenerationResult
from mcp_server.conditioning_sources import engine_call
from mcp_server.families import licence_of
from mcp_server.schemas import all_params
from storage import Generation, Operation, StorageError, Store

log = logging.getLogger(__name__)

CLIP_CEILING = 0.999  # the largest sample a stem may keep unscaled (24-bit PCM clips at 1.0)
LYRICS_IN_BEXT = 300  # characters of lyrics in the Broadcast WAV's coding history


class SourceUnavailable(Exception):
    """The parent's audio cannot be read (deleted, replaced on disk): the job fails with this message."""


@dataclass(frozen=True)
class Output:
    audio: np.ndarray
    loudness_lufs: float | None
    peak_dbfs: float | None
    note: str = ""  # said in the WAV's coding history (e.g. a shared gain applied to avoid clipping)


def group_stems(claimed: Iterable[Generation]) -> list[list[Generation]]:
    """Claimed jobs as requests: each job alone, except stem jobs of one source, which go together."""
    groups: list[list[Generation]] = []
    by_source: dict[str, list[Generation]] = {}
    for generation in claimed:
        lineage = generation.lineage
        if lineage.operation == Operation.STEMS and lineage.parent_id is not None:
            if lineage.parent_id in by_source:
                by_source[lineage.parent_id].append(generation)
                continue
            by_source[lineage.parent_id] = [generation]
            groups.append(by_source[lineage.parent_id])
        else:
            groups.append([generation])
    return groups


def backend_params(generation: Generation, store: Store) -> tuple[str, dict[str, Any]]:
    """(operation, parameters) for ``backend.validate``."""
    lineage = generation.lineage
    operation = str(lineage.operation)
    if lineage.operation == Operation.STEMS:
        audio, rate = parent_audio(generation, store)
        return "stems", {"audio": audio, "sample_rate": rate}
    if lineage.operation in (Operation.EDIT, Operation.REMIX):
        audio, rate = parent_audio(generation, store)
        return operation, {
            "prompt": generation.prompt,
            **all_params(generation),
            "source_audio": audio,
            "source_sample_rate": rate,
        }
    return engine_call(generation)  # generate, or continue an input / a job's audio


def parent_audio(generation: Generation, store: Store) -> tuple[np.ndarray, int]:
    """The parent's samples as float32 (channels x samples) and its rate."""
    import soundfile

    parent_id = generation.lineage.parent_id
    if parent_id is None:
        raise SourceUnavailable(f"job {generation.id} has no parent to read audio from")
    try:
        data = store.open_audio(parent_id)
    except StorageError as exc:
        raise SourceUnavailable(f"the source job {parent_id}'s audio cannot be read: {exc}") from None
    samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return np.ascontiguousarray(samples.T), int(rate)


def outputs(members: list[Generation], result: GenerationResult) -> dict[str, Output]:
    """The audio each job of a finished request stores."""
    if not result.stems:
        return {members[0].id: Output(result.audio, result.loudness_lufs, result.peak_dbfs)}
    peak = max(float(np.max(np.abs(stem))) if stem.size else 0.0 for stem in result.stems.values())
    scale = CLIP_CEILING / peak if peak > CLIP_CEILING else 1.0
    note = ""
    if scale < 1.0:
        gain = 20 * np.log10(scale)
        note = f"all stems of this source scaled by {gain:.2f} dB together so none clips"
        log.info("stems of %s: %s", members[0].lineage.parent_id, note)
    stored = {}
    for member in members:
        stem = result.stems.get(member.lineage.stem or "")
        if stem is None:
            continue  # a stem the separator does not make: the job fails (see missing_stems)
        audio = (stem * scale).astype(np.float32) if scale < 1.0 else stem
        stored[member.id] = Output(
            audio, integrated_loudness(audio, result.sample_rate), peak_dbfs(audio), note
        )
    return stored


def coding_history(generation: Generation, device: str, seed: int | None, note: str = "") -> str:
    """The bext coding history: model and its licence, device, seed, how it was derived, lyrics (cut)."""
    model = generation.model_name
    parts = [f"{model} (licence {licence_of(model)}) on {device}, seed {seed}"]
    lineage = generation.lineage
    if lineage.operation != Operation.GENERATE:
        derived = f"{lineage.operation} of {lineage.parent_id or lineage.source_file_name}"
        if lineage.stem:
            derived += f" stem {lineage.stem}"
        if lineage.section_start_s is not None and lineage.section_end_s is not None:
            derived += f" section {lineage.section_start_s:g}-{lineage.section_end_s:g} s"
        parts.append(derived)
    if note:
        parts.append(note)
    lyrics = str(all_params(generation).get("lyrics") or "").strip()
    if lyrics:
        cut = lyrics if len(lyrics) <= LYRICS_IN_BEXT else lyrics[: LYRICS_IN_BEXT - 3] + "..."
        parts.append("lyrics: " + " / ".join(line.strip() for line in cut.splitlines() if line.strip()))
    return "; ".join(parts)
