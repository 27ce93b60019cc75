"""Errors raised while writing an Ardour session. Every message says what was wrong and what to do next."""

from __future__ import annotations


class ArdourExportError(Exception):
    """Base of every error this package raises on purpose; the message is one actionable line."""


class InvalidArgumentError(ArdourExportError, ValueError):
    """An argument of export_session is out of range or inconsistent with the others."""


class InvalidNameError(InvalidArgumentError):
    """A session or track name sanitises to nothing."""


class UnsafePathError(ArdourExportError):
    """A path resolves outside the allowed root (for example through a symlink)."""


class SessionExistsError(ArdourExportError, FileExistsError):
    """The session directory already exists and if_exists="error" forbids picking another name."""


class SessionWriteError(ArdourExportError, OSError):
    """The file system refused a write (permissions, full disk, not a directory)."""


class AudioInputError(ArdourExportError):
    """A clip's audio file cannot be read or has a shape Ardour cannot hold in one track."""


class ArdourToolError(ArdourExportError):
    """An Ardour command-line tool (ardour7-lua, ardour7-export) is missing or failed."""
