"""storage: the generation history (SQLite WAL or PostgreSQL, Alembic migrations) and Broadcast WAV files."""

from storage.db import default_home
from storage.errors import (
    AudioIntegrityError,
    IllegalTransition,
    LeaseLost,
    NotFound,
    QueueFull,
    StorageBusy,
    StorageError,
)
from storage.models import Status
from storage.store import Generation, Page, RecoveryReport, Store

__all__ = [
    "AudioIntegrityError",
    "Generation",
    "IllegalTransition",
    "LeaseLost",
    "NotFound",
    "Page",
    "QueueFull",
    "RecoveryReport",
    "Status",
    "StorageBusy",
    "StorageError",
    "Store",
    "default_home",
]
