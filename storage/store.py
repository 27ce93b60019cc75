"""Store: the generation history (a database row per job) and its audio files.

One class for callers, assembled from one module per responsibility, each a part that shares StoreCore's
database and outputs directory: jobs and claims (storage.jobs), audio files (storage.audio), history and
search (storage.history), families and deletion (storage.family), start-up recovery (storage.recovery).
Parts call each other only through StoreCore and module functions, so their order here does not matter.
"""

from __future__ import annotations

from storage.audio import AudioFiles
from storage.family import Families
from storage.history import HistoryQueries
from storage.jobs import JobQueue
from storage.recovery import Recovery


class Store(JobQueue, AudioFiles, HistoryQueries, Families, Recovery):
    """History database plus audio files under `home`. Thread-safe; several processes may share a home."""
