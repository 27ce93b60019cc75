"""storage: the generation history (SQLite WAL or PostgreSQL, Alembic migrations) and Broadcast WAV files."""

from storage.core import Generation
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
from storage.history import Page
from storage.lineage import Lineage, Operation
from storage.models import Status
from storage.recovery import RecoveryReport
from storage.store import Store

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
