"""Start-up recovery of Store: jobs a crash left processing, and orphan files in the outputs directory."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from storage import files
from storage.core import StoreCore
from storage.db import db_now, run_transaction
from storage.jobs import release
from storage.models import GenerationRow, Status
from storage.rows import pending_queue

# On a shared outputs directory another host may be publishing a WAV whose row commits a moment later, or
# staging one under a pid this host cannot see: recovery there only touches files older than this.
SHARED_ORPHAN_AGE_S = 600


@dataclass(frozen=True)
class RecoveryReport:
    requeued: list[str] = field(default_factory=list)  # were processing, now pending again
    failed: list[str] = field(default_factory=list)  # were processing, out of attempts
    pending: list[str] = field(default_factory=list)  # every pending job, oldest first: re-queue these
    quarantined: list[Path] = field(default_factory=list)  # where orphan files were moved
    missing_files: list[str] = field(default_factory=list)  # completed rows whose audio is gone


class Recovery(StoreCore):
    """Repairs what a crash leaves behind; a worker runs it before it claims anything."""

    def recover(
        self, max_attempts: int = 2, *, shared: bool = False, worker_id: str | None = None
    ) -> RecoveryReport:
        """Run at a worker's start-up: jobs left processing by a crash go back to pending (or fail once they
        were tried `max_attempts` times); orphan files move to quarantine/ beside the outputs directory.

        `shared`: other workers may be running (PostgreSQL): only jobs whose lease lapsed, or that an
        earlier run of `worker_id` held, are re-queued, and only files older than SHARED_ORPHAN_AGE_S move.
        """
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")

        def work(session: Session) -> tuple[list[str], list[str], list[str], dict[str, str]]:
            stuck = select(GenerationRow).where(GenerationRow.status == Status.PROCESSING.value)
            if shared:
                stuck = stuck.where(
                    or_(
                        GenerationRow.worker_id == worker_id,
                        GenerationRow.lease_expires_at.is_(None),
                        GenerationRow.lease_expires_at < db_now(session),
                    )
                )
            requeued, failed = release(
                session,
                list(session.scalars(stuck.with_for_update(skip_locked=True))),
                max_attempts,
                "interrupted by a crash",
            )
            pending = list(session.scalars(pending_queue().with_only_columns(GenerationRow.id)))
            completed = session.execute(
                select(GenerationRow.file_path, GenerationRow.id).where(
                    GenerationRow.status == Status.COMPLETED.value, GenerationRow.file_path.is_not(None)
                )
            )
            return requeued, failed, pending, {str(path): gid for path, gid in completed}

        requeued, failed, pending, completed = run_transaction(self.engine, work, write=True)
        return RecoveryReport(
            requeued=requeued,
            failed=failed,
            pending=pending,
            quarantined=self._sweep_orphans(set(completed), SHARED_ORPHAN_AGE_S if shared else 0.0),
            missing_files=[gid for path, gid in completed.items() if not self.absolute(path).is_file()],
        )

    def _sweep_orphans(self, completed_paths: set[str], min_age_s: float) -> list[Path]:
        moved = []
        cutoff = time.time() - min_age_s
        for path in sorted(self.outputs.rglob("*")) if self.outputs.is_dir() else []:
            if files.is_temp(path):
                pid = files.writer_pid(path)
                if pid is not None and files.pid_alive(pid):
                    continue  # a live writer's file in progress
            elif path.suffix != ".wav" or str(Path("outputs", path.relative_to(self.outputs))) in (
                completed_paths
            ):
                continue
            if path.is_file() and (min_age_s <= 0 or path.stat().st_mtime < cutoff):
                moved.append(self._quarantine(path))
        return moved
