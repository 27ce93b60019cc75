"""Errors of the Demucs family; messages name the argument at fault and say what to do next."""

from __future__ import annotations

from engine.errors import EngineError


class SeparatorError(EngineError):
    """Base of the separator's own errors."""


class UnknownSeparatorError(SeparatorError, ValueError):
    """The `model` argument names no published separator and no directory."""

    argument = "model"


class SeparationInputError(SeparatorError, ValueError):
    """The audio handed to the separator cannot be separated (its `argument` says which input)."""

    def __init__(self, argument: str, message: str) -> None:
        self.argument = argument
        super().__init__(f"{argument}: {message}")
