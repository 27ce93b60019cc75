"""storage: the generation history (SQLite WAL or PostgreSQL, Alembic migrations) and Broadcast WAV files."""

from storage.db import default_home
from storage.errors import (
    AmbiguousId,
    AudioIntegrityError,
    IllegalTransition,
    NotFound,
    QueueFull,
    StorageBusy,
    StorageError,
)
from storage.models import Status
from storage.store import Generation, Page, RecoveryReport, Store

__all__ = [
    "AmbiguousId",
    "AudioIntegrityError",
    "Generation",
    "IllegalTransition",
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
