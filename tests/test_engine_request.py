"""GenerationRequest validation and model names."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from engine import GenerationRequest, resolve_model_id

INVALID = [
    ("prompt", "", "1 to 2,000 characters"),
    ("prompt", "   \n", "not blank"),
    ("prompt", "x" * 2001, "1 to 2,000 characters"),
    ("duration", 0, "[1, 300] seconds"),
    ("duration", 0.99, "[1, 300] seconds"),
    ("duration", 300.01, "[1, 300] seconds"),
    ("duration", float("nan"), "[1, 300] seconds"),
    ("context_seconds", 1.5, "[2, 20] seconds"),
    ("context_seconds", 20.5, "[2, 20] seconds"),
    ("seed", -1, "[0, 4294967295]"),
    ("seed", 2**32, "[0, 4294967295]"),
    ("temperature", 0, "(0, 2]"),
    ("temperature", 2.5, "(0, 2]"),
    ("top_k", -1, "[0, 2048]"),
    ("top_k", 2049, "[0, 2048]"),
    ("top_p", -0.1, "[0, 1]"),
    ("top_p", 1.1, "[0, 1]"),
    ("guidance_scale", -1, "[0, 10]"),
    ("guidance_scale", 10.5, "[0, 10]"),
    ("loudness_lufs", -41, "[-40, -6] LUFS"),
    ("loudness_lufs", -5, "[-40, -6] LUFS"),
]


@pytest.mark.parametrize(("field", "value", "range_text"), INVALID)
def test_invalid_field_is_rejected_naming_field_and_range(field: str, value: object, range_text: str) -> None:
    arguments = {"prompt": "lofi beat", field: value}
    with pytest.raises(ValidationError) as caught:
        GenerationRequest(**arguments)  # type: ignore[arg-type]
    [error] = caught.value.errors()
    assert error["loc"] == (field,)
    assert field in error["msg"]
    assert range_text in error["msg"]


def test_every_bounded_field_has_an_invalid_case() -> None:
    assert {field for field, _, _ in INVALID} == set(GenerationRequest.model_fields)


@pytest.mark.parametrize(
    "arguments",
    [
        {"duration": 1, "temperature": 2, "top_k": 0, "top_p": 0, "guidance_scale": 0, "loudness_lufs": -40},
        {"duration": 30, "temperature": 1e-3, "top_k": 2048, "top_p": 1, "guidance_scale": 10},
        {"seed": 0, "loudness_lufs": -6},
        {"seed": 2**32 - 1, "loudness_lufs": None},
    ],
)
def test_bounds_are_inclusive_where_documented(arguments: dict[str, object]) -> None:
    request = GenerationRequest.model_validate({"prompt": "x" * 2000, **arguments})
    assert request.model_dump(exclude={"prompt"}).items() >= arguments.items()


def test_defaults_and_unknown_fields() -> None:
    request = GenerationRequest(prompt="lofi beat")
    assert (request.duration, request.seed, request.loudness_lufs) == (10.0, None, -14.0)
    with pytest.raises(ValidationError, match="durration"):
        GenerationRequest(prompt="lofi beat", durration=5)  # type: ignore[call-arg]


def test_json_schema_carries_the_bounds() -> None:
    properties = GenerationRequest.model_json_schema()["properties"]
    assert (properties["duration"]["minimum"], properties["duration"]["maximum"]) == (1, 300)
    assert properties["temperature"]["exclusiveMinimum"] == 0
    assert properties["prompt"]["maxLength"] == 2000


@pytest.mark.parametrize(
    ("name", "model_id"),
    [
        ("small", "facebook/musicgen-small"),
        ("Stereo-Melody", "facebook/musicgen-stereo-melody"),
        ("musicgen-large", "facebook/musicgen-large"),
        ("facebook/musicgen-medium", "facebook/musicgen-medium"),
        (" /models/my-musicgen ", "/models/my-musicgen"),
    ],
)
def test_resolve_model_id(name: str, model_id: str) -> None:
    assert resolve_model_id(name) == model_id
