"""Which files a request may condition on: only those inside the allowed input directories.

``DGX_MUSIC_INPUT_DIRS`` (``Settings.input_dirs``) lists them; by default ``DGX_MUSIC_HOME/inputs`` and
``DGX_MUSIC_HOME/sessions``, so a file inside an exported Ardour session can be continued. A path is judged
by where it really leads: ``..`` and symlinks are resolved first, and anything that ends up outside every
allowed directory is refused, like session export (``ardour_templates.paths``). A relative path is looked up
in each allowed directory in turn.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


class InputPathError(ValueError):
    """A path a request may not read; the message names the argument and says what is allowed."""

    def __init__(self, argument: str, message: str) -> None:
        self.argument = argument
        super().__init__(f"{argument}: {message}")


def _listing(allowed: Sequence[Path]) -> str:
    return ", ".join(str(directory) for directory in allowed)


def resolve_input(path: str, allowed_dirs: Sequence[Path], argument: str) -> Path:
    """The real path of the existing regular file ``path`` names, inside one of ``allowed_dirs``;
    ``InputPathError`` naming ``argument`` otherwise."""
    if not allowed_dirs:
        raise InputPathError(argument, "no input directories are configured; set DGX_MUSIC_INPUT_DIRS")
    if not path.strip() or "\x00" in path:
        raise InputPathError(argument, "is an empty or invalid path")
    allowed = [Path(os.path.realpath(directory)) for directory in allowed_dirs]
    given = Path(path).expanduser()
    candidates = [given] if given.is_absolute() else [directory / given for directory in allowed]
    for candidate in candidates:
        real = Path(os.path.realpath(candidate))
        if not any(real.is_relative_to(directory) for directory in allowed):
            raise InputPathError(
                argument,
                f"{path!r} leads to {str(real)!r}, outside the input directories ({_listing(allowed)}); "
                "copy the file into one of them (symlinks and '..' pointing elsewhere are refused)",
            )
        if real.is_file():
            return real
        if real.exists():
            raise InputPathError(argument, f"{path!r} is not a regular file; pass an audio file")
    raise InputPathError(
        argument, f"no file {path!r} in the input directories ({_listing(allowed)}); check the name"
    )
