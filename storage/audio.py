"""The audio side of Store: publishing a completed job's Broadcast WAV under its claim, reading it back
checked against its recorded sha256."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from storage import bwf, files
from storage.core import Generation, StoreCore
from storage.db import announce, run_transaction
from storage.errors import AudioIntegrityError, NotFound
from storage.jobs import held_by, refusal
from storage.models import GenerationRow, Status
from storage.rows import existing_row, utc_now


class AudioFiles(StoreCore):
    """Each completed job's WAV under outputs/, published atomically and checked on every read."""

    def relative_audio_path(self, generation: Generation) -> Path:
        """outputs/YYYY/MM/DD/<id>.wav, dated by the job's creation (UTC)."""
        return Path("outputs", generation.created_at.strftime("%Y/%m/%d"), f"{generation.id}.wav")

    def complete(
        self,
        generation_id: str,
        audio: np.ndarray,
        sample_rate: int,
        *,
        loudness_lufs: float | None,
        peak_dbfs: float | None,
        generation_seconds: float,
        device: str,
        seed: int | None,
        claim: Generation | None = None,
        coding_history: str | None = None,
    ) -> Generation:
        """Write the Broadcast WAV atomically, then commit the row completed with path, size and sha256.

        With `claim` (the snapshot `claim()` returned) the job must still be held by that claim: the row is
        locked first and the file is published under the lock, so a worker whose lease lapsed can never
        overwrite the file of the worker that now owns the job; it gets `LeaseLost` and nothing is written.
        ``coding_history`` replaces the bext coding history's default text (model, device, seed).
        """
        job = self._read(generation_id)
        if job.status is not Status.PROCESSING:
            raise refusal(generation_id, claim, job.status.value, Status.COMPLETED)
        relative = self.relative_audio_path(job)
        final = self.absolute(relative)
        data = bwf.encode(
            audio,
            sample_rate,
            bwf.BroadcastInfo(
                description=job.prompt,
                originator=job.model_name,
                originator_reference=uuid.UUID(job.id).hex,
                origination=job.created_at,
                loudness_lufs=loudness_lufs,
                coding_history=coding_history or f"{job.model_name} on {device}, seed {seed}",
            ),
        )
        values = {
            "status": Status.COMPLETED.value,
            "file_path": str(relative),
            "sample_rate": sample_rate,
            "channels": audio.shape[0],
            "duration_s": audio.shape[1] / sample_rate,
            "loudness_lufs": loudness_lufs,
            "peak_dbfs": peak_dbfs,
            "file_size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "completed_at": utc_now(),
            "generation_seconds": generation_seconds,
            "device": device,
            "error": None,
            "lease_expires_at": None,
            **({"seed": seed} if seed is not None else {}),
        }
        published = False

        def work(session: Session) -> Generation:
            nonlocal published
            held = session.scalars(
                select(GenerationRow)
                .where(GenerationRow.id == generation_id, *held_by(claim))
                .with_for_update()  # PostgreSQL row lock; SQLite holds the write lock already
                .execution_options(populate_existing=True)
            ).first()
            if held is None or held.status != Status.PROCESSING.value:
                current = existing_row(session, generation_id, refresh=True).status
                raise refusal(generation_id, claim, current, Status.COMPLETED)
            files.write_atomic(final, data)
            published = True
            session.execute(update(GenerationRow).where(GenerationRow.id == generation_id).values(**values))
            announce(session, [generation_id])
            return self._snapshot(existing_row(session, generation_id, refresh=True))

        try:
            return run_transaction(self.engine, work, write=True)
        except BaseException:
            if published:
                self._withdraw(generation_id, final)
            raise

    def _withdraw(self, generation_id: str, final: Path) -> None:
        """The commit after publishing failed: no row points at the file, so keep it out of outputs/ (where
        it would look finished) without destroying it; unless another claim has completed the job since, in
        which case the file there is that worker's. Decided under the row lock its publication needs."""

        def work(session: Session) -> None:
            row = session.scalars(
                select(GenerationRow).where(GenerationRow.id == generation_id).with_for_update()
            ).first()
            if (row is None or row.status != Status.COMPLETED.value) and final.exists():
                self._quarantine(final)

        run_transaction(self.engine, work, write=True)

    def open_audio(self, generation_id: str) -> bytes:
        """The WAV bytes, after checking them against the sha256 recorded when the file was written."""
        job = self._read(generation_id)
        if job.status is not Status.COMPLETED or job.file_path is None:
            raise NotFound(f"generation {generation_id} has no audio: it is {job.status.value}")
        try:
            data = job.file_path.read_bytes()
        except FileNotFoundError:
            raise AudioIntegrityError(
                f"audio of generation {generation_id} is missing at {job.file_path}: "
                "restore it from a backup, or delete the generation and generate it again"
            ) from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != job.sha256:
            raise AudioIntegrityError(
                f"audio of generation {generation_id} at {job.file_path} fails its checksum "
                f"(sha256 {actual[:12]}..., recorded {str(job.sha256)[:12]}...): the file was modified or "
                "corrupted; restore it, or delete the generation and generate it again"
            )
        return data
