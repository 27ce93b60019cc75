"""What every part of Store builds on: its database, its outputs directory and snapshots of rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from storage import db, files
from storage.db import run_transaction
from storage.lineage import Lineage
from storage.models import PARAM_COLUMNS, GenerationRow, Status
from storage.rows import existing_row


@dataclass(frozen=True)
class Generation:
    """An immutable snapshot of one row; safe to hand across threads."""

    id: str
    prompt: str
    model_name: str
    status: Status
    params: dict[str, Any]
    file_path: Path | None  # absolute; None until the file is complete
    sample_rate: int | None
    channels: int | None
    duration_s: float | None
    loudness_lufs: float | None
    peak_dbfs: float | None
    file_size: int | None
    sha256: str | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    generation_seconds: float | None
    error: str | None
    attempts: int
    device: str | None
    metadata: dict[str, Any]
    lineage: Lineage = field(default_factory=Lineage)
    worker_id: str | None = None  # the worker holding a processing job (or that ended it)
    lease_expires_at: datetime | None = None  # when that worker's claim lapses unless renewed


class StoreCore:
    """The database and outputs directory that the parts of Store (jobs, audio, history, families,
    recovery) share."""

    def __init__(self, home: Path, database_url: str | None = None, outputs: Path | None = None) -> None:
        """Open (migrating to head on first use) home/dgx-music.db, or `database_url`, else
        DGX_MUSIC_DATABASE_URL when set. Audio goes under `outputs` (default home/outputs), which several
        hosts may share (one directory on NFS for every worker and front-end)."""
        self.home = Path(home).expanduser()
        self.outputs = Path(outputs).expanduser() if outputs else self.home / "outputs"
        self.url = db.database_url(self.home, database_url)
        self.engine = db.make_engine(self.url)
        self._dialect = self.engine.dialect.name
        db.upgrade(self.engine, self.home)

    def close(self) -> None:
        self.engine.dispose()

    def _snapshot(self, row: GenerationRow) -> Generation:
        return Generation(
            id=row.id,
            prompt=row.prompt,
            model_name=row.model_name,
            status=Status(row.status),
            params={key: getattr(row, attr) for key, attr in PARAM_COLUMNS.items()},
            file_path=self.absolute(row.file_path) if row.file_path else None,
            sample_rate=row.sample_rate,
            channels=row.channels,
            duration_s=row.duration_s,
            loudness_lufs=row.loudness_lufs,
            peak_dbfs=row.peak_dbfs,
            file_size=row.file_size,
            sha256=row.sha256,
            created_at=row.created_at,
            started_at=row.started_at,
            completed_at=row.completed_at,
            generation_seconds=row.generation_seconds,
            error=row.error,
            attempts=row.attempts,
            device=row.device,
            metadata=dict(row.meta or {}),
            lineage=Lineage(
                operation=row.operation,  # type: ignore[arg-type]  # validated by Lineage
                parent_id=row.parent_id,
                source_job_id=row.source_job_id,
                source_file_name=row.source_file_name,
                source_file_sha256=row.source_file_sha256,
                stem=row.stem,
                section_start_s=row.section_start_s,
                section_end_s=row.section_end_s,
            ),
            worker_id=row.worker_id,
            lease_expires_at=row.lease_expires_at,
        )

    def absolute(self, relative: str | Path) -> Path:
        """Where a stored "outputs/YYYY/MM/DD/<id>.wav" lives: under this store's outputs directory."""
        return self.outputs / Path(relative).relative_to("outputs")

    def _quarantine(self, path: Path) -> Path:
        # Beside the outputs directory (home/quarantine by default): on a shared mount, on the same one.
        return files.quarantine(self.outputs.parent, path)

    def _read(self, generation_id: str) -> Generation:
        return run_transaction(
            self.engine, lambda session: self._snapshot(existing_row(session, generation_id)), write=False
        )
