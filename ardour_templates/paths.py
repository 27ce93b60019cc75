"""Where a session may be written: inside the allowed root, under a name nobody else holds."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import SessionExistsError, SessionWriteError, UnsafePathError
from .naming import numbered

MAX_RENAMES = 999


def resolve_output_root(root: Path, allowed_root: Path) -> Path:
    """The real path of `root`, created if needed; outside `allowed_root` (symlinks included) is refused."""
    allowed = Path(os.path.realpath(allowed_root))
    target = Path(os.path.realpath(root))
    if not target.is_relative_to(allowed):
        raise UnsafePathError(
            f"root {str(root)!r} resolves to {str(target)!r}, outside the allowed directory "
            f"{str(allowed)!r}; pass a directory inside it (symlinks pointing elsewhere are refused)"
        )
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SessionWriteError(
            f"root {str(root)!r} is not a directory that can be created or written ({exc.strerror}); "
            "pass a writable directory"
        ) from exc
    # Re-resolve after creating: a symlink swapped in meanwhile must not carry us out.
    if not Path(os.path.realpath(target)).is_relative_to(allowed):
        raise UnsafePathError(f"root {str(root)!r} changed to point outside {str(allowed)!r}; try again")
    return target


def reserve_session_dir(root: Path, name: str, if_exists: str) -> Path:
    """Atomically claim root/NAME (mkdir), or root/'NAME (2)'... when if_exists == "rename"."""
    for n in range(1, MAX_RENAMES + 1):
        candidate = root / numbered(name, n)
        try:
            candidate.mkdir()
        except FileExistsError:
            if if_exists == "error":
                raise SessionExistsError(
                    f"session {name!r} already exists in {str(root)!r}; choose another session_name, delete "
                    'the old session, or pass if_exists="rename" to get a numbered name'
                ) from None
            continue
        except OSError as exc:
            raise SessionWriteError(
                f"cannot create a session directory in {str(root)!r} ({exc.strerror}); check permissions"
            ) from exc
        return candidate
    raise SessionExistsError(
        f"sessions {name!r} to {numbered(name, MAX_RENAMES)!r} all exist in {str(root)!r}; "
        "choose another session_name"
    )


def publish(staging: Path, reserved: Path) -> None:
    """Move the fully written session onto its reserved (still empty) directory in one rename."""
    os.replace(staging, reserved)


def discard(*paths: Path) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)
