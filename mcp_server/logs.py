"""Logging to stderr and a rotating file under DGX_MUSIC_HOME/logs; never stdout (the stdio protocol)."""

from __future__ import annotations

import logging
import os
import sys
from logging.handlers import RotatingFileHandler
from pathlib import Path

FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"

# Libraries that would otherwise print progress bars or chatter while the model loads.
_QUIET_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def setup_logging(level: str, log_file: Path | None, *, stderr: bool = True) -> None:
    """Send our logs (and the SDK's) to stderr unless told not to and, when given, to ``log_file`` (rotated
    at 5 MB). The CLI's own commands log to the file only: their errors are printed once, as one line."""
    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)] if stderr else []
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(RotatingFileHandler(log_file, maxBytes=5_000_000, backupCount=3, encoding="utf-8"))
    formatter = logging.Formatter(FORMAT)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(level)
    # Chatter that says nothing to an operator: alembic's plugin and dialect lines on every start (storage
    # logs one line when it migrates), uvicorn's per-request and lifecycle lines (the server prints its own
    # ready line; uvicorn's errors still show), and one line per HTTP request the hub client makes.
    for name in ("alembic", "uvicorn.access", "uvicorn.error", "httpx", "httpx2"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
