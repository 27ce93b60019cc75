"""Where the audio a generation continues (``continue_from``) or follows (``melody_from``) comes from, checked
before anything is queued.

A source is one of: a completed job's id (or unique prefix); a file under the allowed input directories
(``Settings.input_directories``: symlinks and ``..`` resolved, anything outside refused); or inline base64 WAV
or FLAC (at most 10 MiB), which is kept as a file under ``DGX_MUSIC_HOME/inputs/inline`` named by its sha256,
so the worker (possibly another process) reads it like any other input.

The service resolves and decodes the source when the request arrives (so a bad one is a tool error naming the
argument and nothing is queued), records it in the job's lineage (parent job, or file name and sha256) and
its path in the job's metadata; the worker turns that back into the engine's ``continue`` or ``melody`` call.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.backend import InvalidRequest
from engine.conditioning import decode_inline_audio, read_audio_file
from engine.musicgen.prefix import MAX_TUNE_SECONDS
from engine.musicgen.windows import MAX_PROMPT_SECONDS
from mcp_server.config import Settings
from mcp_server.inputs import InputPathError, resolve_input
from mcp_server.schemas import all_params
from storage import AmbiguousId, Generation, Lineage, NotFound, Operation, Store

INLINE_DIR = Path("inputs") / "inline"
SOURCE_KEY = "continue_source"  # metadata: the absolute path of the audio to continue
MELODY_KEY = "melody_source"  # metadata: the absolute path of the tune to follow
_INLINE_MIN_CHARS = 256  # shorter values are ids or paths: a base64 WAV of 1 s is far longer


class SourceError(ValueError):
    """A source that cannot be used; the message starts with the argument's name."""


@dataclass(frozen=True)
class Source:
    """A resolved conditioning source: the audio file to read and how the lineage names it."""

    path: Path
    seconds: float  # the length of the source audio
    job_id: str | None = None
    file_name: str | None = None
    sha256: str | None = None

    def lineage(self, operation: Operation) -> Lineage:
        if self.job_id is not None:
            return Lineage(operation=operation, parent_id=self.job_id)
        return Lineage(operation=operation, source_file_name=self.file_name, source_file_sha256=self.sha256)

    def note(self, operation: Operation = Operation.CONTINUE) -> str | None:
        """What the result will say when the source is longer than a continuation prompt (or a melody)
        may be."""
        if operation == Operation.MELODY:
            if self.seconds <= MAX_TUNE_SECONDS:
                return None
            return (
                f"the tune is {self.seconds:.1f} s long; only its first {MAX_TUNE_SECONDS:g} s (the longest "
                "piece) condition the melody"
            )
        if self.seconds <= MAX_PROMPT_SECONDS:
            return None
        return (
            f"the source is {self.seconds:.1f} s long; only its last {MAX_PROMPT_SECONDS:g} s prompt the "
            "continuation (the window less 1 s), and the result starts there"
        )


def resolve_source(value: str, argument: str, settings: Settings, store: Store) -> Source:
    """The ``Source`` ``value`` names; ``SourceError`` (naming ``argument``) for anything unusable."""
    text = value.strip()
    try:
        if len(text) >= _INLINE_MIN_CHARS or text.startswith("data:"):
            return _inline(text, argument, settings)
        if "/" not in text and "." not in text:
            try:
                return _job(text, argument, store)
            except SourceError:
                if not _names_an_input(text, settings):
                    raise
        path = resolve_input(text, settings.input_directories, argument)
        read_audio_file(path, argument, max_seconds=MAX_PROMPT_SECONDS)  # what the prompt will use, readable
        return _file(path, path.name, argument)
    except (InvalidRequest, InputPathError) as error:
        raise SourceError(str(error)) from None


def _names_an_input(name: str, settings: Settings) -> bool:
    """Whether ``name`` (not a job) is a file in the input directories, e.g. one without an extension."""
    try:
        resolve_input(name, settings.input_directories, "continue_from")
    except InputPathError:
        return False
    return True


def _job(job_id: str, argument: str, store: Store) -> Source:
    try:
        generation = store.get(job_id)
    except NotFound:
        raise SourceError(
            f"{argument}: no job {job_id!r} (and it is not a file path or base64 audio); give a completed "
            "job_id from list_history, a file under the input directories, or inline base64 WAV/FLAC"
        ) from None
    except AmbiguousId as error:
        raise SourceError(
            f"{argument}: {job_id!r} is the start of several jobs ({', '.join(error.matches)}); give more "
            "characters of the id"
        ) from None
    if generation.status != "completed" or generation.file_path is None:
        raise SourceError(
            f"{argument}: job {generation.id} is {generation.status}; only a completed job's audio can be "
            "continued (wait with job_status)"
        )
    return Source(path=generation.file_path, seconds=float(generation.duration_s or 0), job_id=generation.id)


def _file(path: Path, name: str, argument: str) -> Source:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    import soundfile

    seconds = float(soundfile.info(str(path)).duration)
    return Source(path=path, seconds=seconds, file_name=name, sha256=digest)


def _inline(text: str, argument: str, settings: Settings) -> Source:
    import base64
    import re

    decode_inline_audio(text, argument, max_seconds=MAX_PROMPT_SECONDS)  # WAV/FLAC, >= 1 s, <= 10 MiB
    raw = base64.b64decode("".join(re.sub(r"^data:[^,]*,", "", text).split()))
    digest = hashlib.sha256(raw).hexdigest()
    folder = settings.home / INLINE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{digest}.audio"
    if not path.exists():
        partial = path.with_suffix(".partial")
        partial.write_bytes(raw)
        partial.replace(path)
    return _file(path, f"inline-{digest[:12]}", argument)


def engine_call(generation: Generation) -> tuple[str, dict[str, Any]]:
    """The engine operation and parameters of a claimed generation job: ``generate``; ``continue`` with the
    source audio decoded (its last ``MAX_PROMPT_SECONDS`` only); or ``melody`` with the tune (its first
    ``MAX_TUNE_SECONDS``)."""
    params: dict[str, Any] = {"prompt": generation.prompt, **all_params(generation)}
    if generation.params.get("loudness_lufs") is None:
        params["loudness_lufs"] = None  # asked for: keep the level as generated (not the default target)
    metadata = generation.metadata or {}
    tune = metadata.get(MELODY_KEY)
    if tune is not None:
        params["source_audio"] = read_audio_file(
            Path(tune), "melody_from", max_seconds=MAX_TUNE_SECONDS, keep="start"
        )
        return "melody", params
    source = metadata.get(SOURCE_KEY)
    if source is None:
        return "generate", params
    params["source_audio"] = read_audio_file(
        Path(source), "continue_from", max_seconds=MAX_PROMPT_SECONDS, keep="end"
    )
    return "continue", params
