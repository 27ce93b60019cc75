"""Rejected tool arguments in our words: every bad argument of a call at once, each with its field and range.

The SDK validates a call's arguments against the tool's pydantic argument model in one pass, so one
``ValidationError`` holds every problem; pydantic's own text ("2 validation errors for
generate_musicArguments ... https://errors.pydantic.dev/...") is for Python developers, not agents. The ranges
come from the tool's input schema, which is what the client read, so the message and the schema agree.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from engine.request import BOUNDS

_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number"}
_KINDS = {
    "int": "an integer",
    "float": "a number",
    "string": "a string",
    "bool": "true or false",
    "list": "a list",
    "dict": "an object",
}


def describe_argument_errors(tool: str, error: ValidationError, input_schema: dict[str, Any]) -> str:
    """One sentence per rejected argument, in argument order, after a line naming the tool."""
    properties: dict[str, Any] = input_schema.get("properties", {})
    problems: dict[str, str] = {}
    for item in error.errors():
        field = _field_name(item["loc"])
        if field not in problems:  # a nullable type can report one value twice; the first says it
            problems[field] = _problem(field, item, _property(properties, item["loc"]))
    order = {name: i for i, name in enumerate(properties)}
    ordered = sorted(problems.items(), key=lambda entry: order.get(entry[0].split("[")[0], len(order)))
    count = f"{len(ordered)} invalid argument{'s' if len(ordered) != 1 else ''}"
    return f"{tool}: {count}, nothing was done: " + "; ".join(text for _, text in ordered)


def _field_name(loc: tuple[int | str, ...]) -> str:
    name = str(loc[0]) if loc else "arguments"
    return name + "".join(f"[{part}]" for part in loc[1:] if isinstance(part, int))


def _property(properties: dict[str, Any], loc: tuple[int | str, ...]) -> dict[str, Any]:
    """The schema of the value at ``loc`` (list items, the non-null branch of a nullable type)."""
    schema: dict[str, Any] = properties.get(str(loc[0]), {}) if loc else {}
    if any(isinstance(part, int) for part in loc[1:]):
        schema = schema.get("items", schema)
    for branch in schema.get("anyOf", []):
        if branch.get("type") != "null":
            return {**branch, **{k: v for k, v in schema.items() if k != "anyOf"}}
    return schema


def _problem(field: str, item: Any, schema: dict[str, Any]) -> str:
    kind: str = item["type"]
    given = item.get("input")
    shown = _short(given)
    if kind == "missing":
        return f"{field} is required"
    if kind in _RANGE_ERRORS:
        return f"{field} must be in {_range(field, schema)} (got {shown})"
    if kind in ("string_too_short", "string_too_long", "string_pattern_mismatch"):
        low, high = schema.get("minLength", 0), schema.get("maxLength")
        size = f"{low:,}-{high:,}" if high is not None else f"at least {low:,}"
        blank = " and not blank" if "pattern" in schema else ""
        length = f"{len(given):,} characters" if isinstance(given, str) else shown
        return f"{field} must be {size} characters{blank} (got {length})"
    if kind in ("too_short", "too_long"):
        count = str(len(given)) if isinstance(given, list | tuple) else shown
        return f"{field} must hold {schema.get('minItems', 0)}-{schema.get('maxItems')} items (got {count})"
    if kind in ("literal_error", "enum"):
        allowed = ", ".join(str(value) for value in schema.get("enum", [])) or item["ctx"].get("expected", "")
        return f"{field} must be one of {allowed} (got {shown})"
    for prefix, description in _KINDS.items():
        if kind.startswith(prefix + "_"):
            nullable = " or null" if _nullable(schema) else ""
            return f"{field} must be {description}{nullable} (got {shown})"
    return f"{field}: {item['msg']} (got {shown})"


def _range(field: str, schema: dict[str, Any]) -> str:
    """The allowed interval, with its unit for the generation parameters (``[1, 30] seconds``)."""
    if field in BOUNDS:
        return str(BOUNDS[field])
    low, high = schema.get("minimum", schema.get("exclusiveMinimum")), schema.get("maximum")
    opening = "(" if "exclusiveMinimum" in schema else "["
    return f"{opening}{_number(low)}, {_number(high)}]"


def _number(value: Any) -> str:
    if value is None:
        return "∞"
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _nullable(schema: dict[str, Any]) -> bool:
    return schema.get("default", ...) is None


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
