"""The validated input of one generation.

Bounds live in one table so that the error message, the JSON schema an MCP client sees and the check itself
cannot drift apart. Messages name the field, its allowed range and the rejected value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

if TYPE_CHECKING:
    from engine.backend import Parameter

MAX_PROMPT_CHARS = 2000


@dataclass(frozen=True)
class Bound:
    low: float
    high: float
    low_open: bool = False
    unit: str = ""

    def contains(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        return above and value <= self.high  # NaN fails both comparisons

    def __str__(self) -> str:
        opening = "(" if self.low_open else "["
        return f"{opening}{_number(self.low)}, {_number(self.high)}]{self.unit}"

    def schema(self) -> dict[str, float]:
        low_key = "exclusiveMinimum" if self.low_open else "minimum"
        return {low_key: self.low, "maximum": self.high}


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


BOUNDS: dict[str, Bound] = {
    "duration": Bound(1, 300, unit=" seconds"),
    "seed": Bound(0, 2**32 - 1),
    "temperature": Bound(0, 2, low_open=True),
    "top_k": Bound(0, 2048),
    "top_p": Bound(0, 1),
    "guidance_scale": Bound(0, 10),
    "loudness_lufs": Bound(-40, -6, unit=" LUFS"),
    "context_seconds": Bound(2, 20, unit=" seconds"),
}


def _add_bounds_to_schema(schema: dict[str, Any]) -> None:
    for name, bound in BOUNDS.items():
        schema["properties"][name].update(bound.schema())
    schema["properties"]["prompt"].update(minLength=1, maxLength=MAX_PROMPT_CHARS)


class GenerationRequest(BaseModel):
    """One piece of music to generate. Out-of-range values raise ``pydantic.ValidationError``."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_add_bounds_to_schema)

    prompt: str = Field(description="What the music should sound like.")
    duration: float = Field(
        default=10.0,
        description="Length of the piece in seconds (MusicGen, melody checkpoints included: up to 300, in "
        "30 s windows). When continuing audio: the seconds added after it.",
    )
    seed: int | None = Field(
        default=None, description="Random seed; the same seed and parameters give the same audio."
    )
    temperature: float = Field(default=1.0, description="Sampling temperature; higher is more varied.")
    top_k: int = Field(default=250, description="Sample from the k most likely tokens; 0 turns top-k off.")
    top_p: float = Field(default=0.0, description="Nucleus sampling threshold; 0 turns top-p off.")
    guidance_scale: float = Field(
        default=3.0,
        description="Classifier-free guidance; higher follows the prompt more closely, 1 or less is off.",
    )
    loudness_lufs: float | None = Field(
        default=-14.0,
        description="Integrated loudness target of the result; null leaves the level as generated.",
    )
    context_seconds: float = Field(
        default=10.0,
        description="Pieces longer than one 30 s window: seconds of the piece so far (2-20) that prompt each "
        "next window. More keeps the music more coherent, less generates more per window (faster).",
    )

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip() or len(value) > MAX_PROMPT_CHARS:
            raise ValueError(
                f"prompt must be 1 to {MAX_PROMPT_CHARS:,} characters and not blank (got {len(value):,} "
                "characters)"
            )
        return value

    @field_validator(*BOUNDS)
    @classmethod
    def _within_bounds(cls, value: float | None, info: ValidationInfo) -> float | None:
        assert info.field_name is not None
        bound = BOUNDS[info.field_name]
        if value is not None and not bound.contains(value):
            raise ValueError(f"{info.field_name} must be in {bound} (got {value!r})")
        return value


def field_errors(error: ValidationError) -> list[tuple[str, str]]:
    """(field, message) for every problem pydantic found, the message without the field's name in front:
    ``("duration", "must be in [1, 30] seconds (got 45.0)")``."""
    found = []
    for problem in error.errors():
        name = ".".join(str(part) for part in problem["loc"]) or "request"
        message = str(problem["msg"]).removeprefix("Value error, ").removeprefix(f"{name} ")
        found.append((name, message[:1].lower() + message[1:]))
    return found


def request_parameters() -> dict[str, Parameter]:
    """The parameters of ``GenerationRequest`` as a family's ``Capabilities`` lists them."""
    from engine.backend import Parameter

    kinds = {"prompt": "string", "seed": "integer", "top_k": "integer"}
    parameters = {}
    for name, info in GenerationRequest.model_fields.items():
        bound = BOUNDS.get(name)
        parameters[name] = Parameter(
            name=name,
            kind=kinds.get(name, "number"),  # type: ignore[arg-type]
            description=info.description or "",
            default=None if info.is_required() else info.default,
            minimum=bound.low if bound else (1 if name == "prompt" else None),
            maximum=bound.high if bound else (MAX_PROMPT_CHARS if name == "prompt" else None),
            exclusive_minimum=bool(bound and bound.low_open),
            nullable=name in ("seed", "loudness_lufs"),
        )
    return parameters


def validate_generation(
    operation: str,
    params: Mapping[str, Any],
    *,
    operations: tuple[str, ...] = ("generate",),
    max_duration_s: float | None = None,
) -> GenerationRequest:
    """``params`` as a ``GenerationRequest`` for one of ``operations``; ``InvalidRequest`` naming every
    field at fault otherwise (``duration`` beyond ``max_duration_s``, the model's limit, included)."""
    from engine.backend import FieldError, InvalidRequest

    if operation not in operations:
        raise InvalidRequest(
            [
                FieldError(
                    "operation", f"{operation!r} is not supported; this model does {', '.join(operations)}"
                )
            ]
        )
    try:
        request = GenerationRequest(**params)
    except ValidationError as error:
        raise InvalidRequest([FieldError(name, message) for name, message in field_errors(error)]) from None
    if max_duration_s is not None and request.duration > max_duration_s:
        raise InvalidRequest(
            [
                FieldError(
                    "duration",
                    f"must be at most {_number(max_duration_s)} seconds for this model (got "
                    f"{request.duration:g}); ask for less, or use a model that decodes longer pieces",
                )
            ]
        )
    return request
