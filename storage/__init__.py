"""storage: the generation history (SQLite WAL or PostgreSQL, Alembic migrations) and Broadcast WAV files."""

from storage.db import default_home
from storage.errors import (
    AmbiguousId,
    AudioIntegrityError,
    HasChildren,
    IllegalTransition,
    LeaseLost,
    NotFound,
    QueueFull,
    StorageBusy,
    StorageError,
)
from storage.lineage import Lineage, Operation
from storage.models import Status
from storage.store import Generation, Page, RecoveryReport, Store

__all__ = [
    "AmbiguousId",
    "AudioIntegrityError",
    "Generation",
    "HasChildren",
    "IllegalTransition",
    "LeaseLost",
    "Lineage",
    "NotFound",
    "Operation",
    "Page",
    "QueueFull",
    "RecoveryReport",
    "Status",
    "StorageBusy",
    "StorageError",
    "Store",
    "default_home",
]
