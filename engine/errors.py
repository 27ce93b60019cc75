"""Errors the engine raises on purpose. Their messages reach users as they are: one line, actionable."""

from __future__ import annotations


class EngineError(Exception):
    """Base of the engine's own errors; ``str(error)`` is a one-line message that says what to do next."""


class ModelNotAvailableError(EngineError):
    """The checkpoint's files are not there: offline and not cached, an unknown hub id, a missing path."""
