"""ACE-Step's request parameters: one table for the schema, the defaults and the checks.

``validate`` turns the parameters of one job into a ``SongRequest`` or raises ``InvalidRequest`` with one
``FieldError`` per bad field, each naming the field, what is allowed and what was given. Parameters of the
other family (MusicGen's token sampling) are refused by name, so an agent learns which model takes what.

Operations: ``generate`` (text to music, optionally with lyrics), ``edit`` (ACE-Step's repaint task: one
section of a source regenerated, the rest kept), ``remix`` (the cover task: new audio that follows the
source's structure). ``edit`` and ``remix`` also take ``source_audio`` (float32, channels × samples or mono
samples, any rate) and ``source_sample_rate``: the worker passes the parent generation's audio there; they
are not listed among the schema parameters because a tool takes a job id instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from engine import audio
from engine.backend import FieldError, InvalidRequest, Parameter

Operation = Literal["generate", "edit", "remix"]
OPERATIONS: tuple[Operation, ...] = ("generate", "edit", "remix")

SAMPLE_RATE = 48_000
CHANNELS = 2
MAX_PROMPT_CHARS = 2_000
MAX_LYRICS_CHARS = 4_000
MIN_DURATION_S = 10.0
MAX_DURATION_S = 600.0
MIN_SOURCE_S = 1.0  # an edit's or remix's source (a MusicGen clip may be short)
MIN_SECTION_S = 0.5
MAX_CROSSFADE_S = 2.0
DEFAULT_CROSSFADE_S = 0.1

_TONICS = ("C", "C#", "Db", "D", "D#", "Eb", "E", "F", "F#", "Gb", "G", "G#", "Ab", "A", "A#", "Bb", "B")
KEYS: tuple[str, ...] = tuple(f"{tonic} {mode}" for tonic in _TONICS for mode in ("major", "minor"))
TIME_SIGNATURES: tuple[int, ...] = (2, 3, 4, 6)  # beats per bar, as ACE-Step's metadata writes them
# ISO 639-1 codes of the languages ACE-Step 1.5 was trained to sing, and "unknown" for instrumental pieces.
VOCAL_LANGUAGES: tuple[str, ...] = (
    "en", "zh", "ja", "ko", "es", "fr", "de", "it", "pt", "ru", "ar", "hi", "nl", "pl", "tr", "vi", "th",
    "id", "ms", "sv", "no", "da", "fi", "cs", "el", "he", "hu", "ro", "uk", "fa", "bn", "ta", "ur", "tl",
    "unknown",
)  # fmt: skip
MUSICGEN_ONLY = frozenset({"top_k", "top_p", "temperature"})
SOURCE_FIELDS = ("source_audio", "source_sample_rate")

_SECTION_TAG = re.compile(r"^\[[^\[\]]+\]$")


@dataclass(frozen=True)
class CheckpointTraits:
    """What validation needs to know about the loaded checkpoint."""

    model_id: str
    uses_cfg: bool  # base checkpoints; turbo ones are guidance-distilled
    default_steps: int
    can_remix: bool  # has the audio tokenizer/detokenizer the cover task needs


@dataclass(frozen=True, eq=False)
class SongRequest:
    """One validated ACE-Step job. ``source`` is 48 kHz stereo float32 for edit and remix, else None."""

    operation: Operation
    prompt: str
    lyrics: str
    duration: float  # seconds of audio out (the source's length for edit and remix)
    bpm: int | None
    key: str | None
    time_signature: int | None
    vocal_language: str
    steps: int
    guidance_scale: float  # 1.0: no guidance
    seed: int | None
    loudness_lufs: float | None  # edit keeps the source's level and ignores it
    source: np.ndarray | None = None
    start_s: float = 0.0
    end_s: float = 0.0
    crossfade_s: float = DEFAULT_CROSSFADE_S
    strength: float = 1.0

    @property
    def samples(self) -> int:
        return round(self.duration * SAMPLE_RATE)

    @property
    def task(self) -> str:
        """The pipeline's task type."""
        return {"generate": "text2music", "edit": "repaint", "remix": "cover"}[self.operation]


def parameters(traits: CheckpointTraits) -> dict[str, Parameter]:
    """Every parameter the checkpoint accepts, for the MCP schema and the docs."""
    table = [
        Parameter("prompt", "string", "Style of the song: genre, instruments, mood, voice.", None,
                  1, MAX_PROMPT_CHARS),
        Parameter("lyrics", "string", "Lyrics with section tags on their own lines ([verse], [chorus], "
                  "[bridge], ...); empty for an instrumental.", "", 0, MAX_LYRICS_CHARS),
        Parameter("duration", "number", "Length of the song in seconds (generate only).", 30.0,
                  MIN_DURATION_S, MAX_DURATION_S),
        Parameter("bpm", "integer", "Tempo in beats per minute; null lets the model choose.", None, 30, 300,
                  nullable=True),
        Parameter("key", "string", "Key and mode, e.g. 'A minor'; null lets the model choose.", None,
                  nullable=True, choices=KEYS),
        Parameter("time_signature", "integer", "Beats per bar (2, 3, 4 or 6); null lets the model choose.",
                  None, 2, 6, nullable=True),
        Parameter("vocal_language", "string", "Language of the lyrics.", "en", choices=VOCAL_LANGUAGES),
        Parameter("steps", "integer", "Denoising steps; more is slower and can be cleaner.",
                  traits.default_steps, 1, 100),
        Parameter("seed", "integer", "Random seed; the same seed and parameters give the same audio.", None,
                  0, 2**32 - 1, nullable=True),
        Parameter("loudness_lufs", "number", "Integrated loudness of the result (generate, remix); null "
                  "keeps the level as generated.", -14.0, -40, -6, nullable=True),
        Parameter("start_s", "number", "Edit only: start of the section to regenerate, in seconds.", None, 0),
        Parameter("end_s", "number", "Edit only: end of the section to regenerate, in seconds.", None, 0),
        Parameter("crossfade_s", "number", "Edit only: cross-fade outside each edge of the section.",
                  DEFAULT_CROSSFADE_S, 0, MAX_CROSSFADE_S),
    ]  # fmt: skip
    if traits.uses_cfg:
        table.append(
            Parameter(
                "guidance_scale",
                "number",
                "Classifier-free guidance; higher follows the prompt more closely, 1 turns it off.",
                7.0,
                1,
                15,
            )
        )
    if traits.can_remix:
        table.append(
            Parameter(
                "strength",
                "number",
                "Remix only: how closely the remix follows the source's "
                "structure (1) or the prompt (towards 0).",
                1.0,
                0,
                1,
            )
        )
    return {parameter.name: parameter for parameter in table}


def operations(traits: CheckpointTraits) -> frozenset[str]:
    return frozenset(("generate", "edit", "remix") if traits.can_remix else ("generate", "edit"))


def validate(operation: str, params: Mapping[str, Any], traits: CheckpointTraits) -> SongRequest:
    """A ``SongRequest`` for ``operation``, or ``InvalidRequest`` naming every bad field."""
    errors: list[FieldError] = []
    if operation not in OPERATIONS:
        raise InvalidRequest(
            [FieldError("operation", f"must be one of {', '.join(OPERATIONS)} (got {operation!r})")]
        )
    if operation == "remix" and not traits.can_remix:
        message = (
            f"remix (ACE-Step's cover task) needs the audio tokenizer and detokenizer components, which "
            f"{traits.model_id} does not have; load a diffusers ACE-Step checkpoint whose model_index.json "
            "lists audio_tokenizer and audio_token_detokenizer (Runware/acestep-v15-xl-sft-diffusers does)"
        )
        raise InvalidRequest([FieldError("operation", message)])
    table = parameters(traits)
    allowed = _allowed(operation, table)
    for name in params:
        if name in allowed or (operation != "generate" and name in SOURCE_FIELDS):
            continue
        errors.append(FieldError(name, _unknown_message(name, operation, table, traits)))
    fields = _Fields(params, errors)
    prompt = fields.text("prompt", MAX_PROMPT_CHARS, required=operation == "generate")
    lyrics = fields.lyrics()
    bpm = fields.integer("bpm", 30, 300)
    key = fields.choice("key", KEYS)
    time_signature = fields.time_signature()
    language = fields.choice("vocal_language", VOCAL_LANGUAGES) or "en"
    steps = fields.integer("steps", 1, 100)
    seed = fields.integer("seed", 0, 2**32 - 1)
    guidance = fields.number("guidance_scale", 1, 15) if traits.uses_cfg else None
    # An explicit null keeps the level as generated; absent means the default target.
    loudness = (
        None
        if "loudness_lufs" in params and params["loudness_lufs"] is None
        else (fields.number("loudness_lufs", -40, -6, default=-14.0))
    )
    source = None
    duration = 30.0
    start_s = end_s = 0.0
    crossfade = DEFAULT_CROSSFADE_S
    strength = 1.0
    if operation == "generate":
        duration = fields.number("duration", MIN_DURATION_S, MAX_DURATION_S, default=30.0) or 30.0
    else:
        source = fields.source()
        duration = source.shape[1] / SAMPLE_RATE if source is not None else 0.0
    if operation == "edit":
        start_s, end_s, crossfade = fields.section(duration if source is not None else None)
        loudness = None
    if operation == "remix":
        strength = fields.number("strength", 0, 1, default=1.0) or 0.0
    if errors:
        raise InvalidRequest(errors)
    return SongRequest(
        operation=operation,
        prompt=prompt,
        lyrics=lyrics,
        duration=duration,
        bpm=bpm,
        key=key,
        time_signature=time_signature,
        vocal_language=language,
        steps=steps or traits.default_steps,
        guidance_scale=guidance if guidance is not None else (7.0 if traits.uses_cfg else 1.0),
        seed=seed,
        loudness_lufs=loudness,
        source=source,
        start_s=start_s,
        end_s=end_s,
        crossfade_s=crossfade,
        strength=strength,
    )


def _allowed(operation: str, table: Mapping[str, Parameter]) -> set[str]:
    only = {"duration": "generate", "start_s": "edit", "end_s": "edit", "crossfade_s": "edit",
            "strength": "remix", "loudness_lufs": "generate remix"}  # fmt: skip
    return {name for name in table if operation in only.get(name, operation)}


def _unknown_message(
    name: str, operation: str, table: Mapping[str, Parameter], traits: CheckpointTraits
) -> str:
    if name in MUSICGEN_ONLY:
        return "is a MusicGen parameter; ACE-Step does not sample tokens (use a MusicGen model for it)"
    if name == "guidance_scale" and not traits.uses_cfg:
        return (
            f"{traits.model_id} is guidance-distilled (turbo) and runs without guidance; use ace-step-base "
            "for classifier-free guidance"
        )
    if name in table:
        return f"does not apply to {operation}"
    if name in SOURCE_FIELDS:
        return "only edit and remix take source audio"
    accepted = ", ".join(sorted(_allowed(operation, table)))
    return f"is not an ACE-Step parameter (accepted for {operation}: {accepted})"


class _Fields:
    """Reads one parameter at a time, recording a ``FieldError`` instead of raising."""

    def __init__(self, params: Mapping[str, Any], errors: list[FieldError]) -> None:
        self.params = params
        self.errors = errors

    def fail(self, name: str, message: str) -> None:
        self.errors.append(FieldError(name, message))

    def text(self, name: str, limit: int, required: bool) -> str:
        value = self.params.get(name)
        if value is None:
            if required:
                self.fail(name, f"is required: 1 to {limit:,} characters describing the music")
            return ""
        if not isinstance(value, str) or (required and not value.strip()) or len(value) > limit:
            shown = f"{len(value):,} characters" if isinstance(value, str) else type(value).__name__
            self.fail(
                name, f"must be {'1' if required else '0'} to {limit:,} characters, not blank (got {shown})"
            )
            return ""
        return value

    def lyrics(self) -> str:
        value = self.text("lyrics", MAX_LYRICS_CHARS, required=False)
        for number, line in enumerate(value.splitlines(), start=1):
            stripped = line.strip()
            if (stripped.startswith("[") or stripped.endswith("]")) and not _SECTION_TAG.match(stripped):
                self.fail(
                    "lyrics",
                    f"line {number} ({stripped[:40]!r}) is not a section tag: tags stand alone on a line "
                    "in square brackets, like [verse] or [chorus]",
                )
                break
        return value

    def _present(self, name: str) -> Any:
        return self.params.get(name)

    def number(self, name: str, low: float, high: float, default: float | None = None) -> float | None:
        value = self._present(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            self.fail(name, f"must be a number in [{low:g}, {high:g}] (got {value!r})")
            return default
        return float(value)

    def integer(self, name: str, low: int, high: int) -> int | None:
        value = self._present(name)
        if value is None:
            return None
        whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        if isinstance(value, bool) or not whole or not low <= value <= high:
            self.fail(name, f"must be a whole number in [{low}, {high}] (got {value!r})")
            return None
        return int(value)

    def choice(self, name: str, choices: tuple[str, ...]) -> str | None:
        value = self._present(name)
        if value is None:
            return None
        by_folded = {choice.casefold(): choice for choice in choices}
        folded = " ".join(value.split()).casefold() if isinstance(value, str) else None
        if folded not in by_folded:
            shown = ", ".join(choices[:8]) + (", ..." if len(choices) > 8 else "")
            self.fail(name, f"must be one of {shown} ({len(choices)} in all; got {value!r})")
            return None
        return by_folded[folded]

    def time_signature(self) -> int | None:
        value = self._present("time_signature")
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if value is None or (
            isinstance(value, int) and not isinstance(value, bool) and value in TIME_SIGNATURES
        ):
            return value
        self.fail("time_signature", f"must be one of 2, 3, 4, 6 beats per bar (got {value!r})")
        return None

    def source(self) -> np.ndarray | None:
        samples = self._present("source_audio")
        rate = self._present("source_sample_rate")
        if samples is None:
            self.fail("source_audio", "is required: the audio to edit or remix")
            return None
        if isinstance(rate, bool) or not isinstance(rate, int) or not 8_000 <= rate <= 384_000:
            self.fail("source_sample_rate", f"must be a sample rate in [8000, 384000] Hz (got {rate!r})")
            return None
        array = np.asarray(samples, dtype=np.float32)
        if array.ndim == 1:
            array = array[np.newaxis]
        if array.ndim != 2 or array.shape[0] not in (1, 2):
            self.fail("source_audio", f"must be mono or stereo, channels × samples (got shape {array.shape})")
            return None
        seconds = array.shape[1] / rate
        if not MIN_SOURCE_S <= seconds <= MAX_DURATION_S:
            self.fail(
                "source_audio", f"must last {MIN_SOURCE_S:g} to {MAX_DURATION_S:g} s (got {seconds:.2f} s)"
            )
            return None
        if not np.isfinite(array).all():
            self.fail("source_audio", "contains non-finite samples (NaN or infinity)")
            return None
        stereo = np.repeat(array, 2, axis=0) if array.shape[0] == 1 else array
        converted = audio.resample(stereo, rate, SAMPLE_RATE)
        return audio.fit_length(converted, round(seconds * SAMPLE_RATE))

    def section(self, length: float | None) -> tuple[float, float, float]:
        start = self.number("start_s", 0, math.inf)
        end = self.number("end_s", 0, math.inf)
        crossfade = self.number("crossfade_s", 0, MAX_CROSSFADE_S, default=DEFAULT_CROSSFADE_S)
        for name, value in (("start_s", start), ("end_s", end)):
            if value is None and name not in {error.field for error in self.errors}:
                self.fail(name, "is required for edit: the section to regenerate, in seconds")
        if start is None or end is None or length is None:
            return 0.0, 0.0, crossfade or 0.0
        if end > length + 1e-9:
            self.fail("end_s", f"must be at most the source's length, {length:.2f} s (got {end:g})")
        elif end - start < MIN_SECTION_S:
            self.fail(
                "end_s", f"must be at least {MIN_SECTION_S:g} s after start_s ({start:g}) (got {end:g})"
            )
        return start, min(end, length), crossfade if crossfade is not None else DEFAULT_CROSSFADE_S
