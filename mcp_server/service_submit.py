"""Submitting work to the job service: validated requests (one per variation), the model a job records,
the audio a continuation or melody starts from, and one transaction of ``pending`` rows, then a wake-up
for the worker, which claims them at its next step boundary.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from engine import GenerationRequest
from engine.models import looks_like_path
from mcp_server import families
from mcp_server.conditioning_sources import MELODY_KEY, SOURCE_KEY, Source, SourceError, resolve_source
from mcp_server.config import describe_validation_error
from mcp_server.schemas import Job
from mcp_server.service_errors import QueueFullError, ServiceError
from mcp_server.service_reads import JobReads, _in_thread
from storage import Generation, Lineage, Operation, QueueFull
from storage.models import PARAM_COLUMNS

SEED_SPACE = 2**32


class Submission(JobReads):
    """``JobService``'s submissions (async: called from MCP handlers and the CLI)."""

    default_model: str

    def build_requests(self, variations: int = 1, **params: Any) -> list[GenerationRequest]:
        """Validated requests, one per variation; take i gets seed + i (mod 2**32) when a seed is given."""
        try:
            base = GenerationRequest(**params)
        except ValidationError as exc:
            raise ServiceError(describe_validation_error(exc)) from None
        if base.seed is None:
            return [base] * variations
        return [base.model_copy(update={"seed": (base.seed + i) % SEED_SPACE}) for i in range(variations)]

    async def source(self, value: str | None, argument: str = "continue_from") -> Source | None:
        """The audio ``value`` names (a completed job, an allowed file, inline base64), checked now so that
        a bad one is refused before anything is queued."""
        if value is None:
            return None
        try:
            return await _in_thread(resolve_source, value, argument, self.settings, self.store)
        except SourceError as error:
            raise ServiceError(str(error)) from None

    async def extension(
        self, job_id: str, seconds: float, prompt: str | None
    ) -> tuple[Job, list[GenerationRequest], Source]:
        """What extending ``job_id`` by ``seconds`` queues: the job, its request (its own parameters and,
        without ``prompt``, its prompt; a fresh seed) and the job's audio as the source."""
        source = await self.source(job_id, "job_id")
        assert source is not None and source.job_id is not None
        job = await self.job(source.job_id)
        if families.family_of(job.model) != "musicgen":
            raise ServiceError(
                f"job_id: {job.job_id} was made by {job.model}; extend_music continues MusicGen pieces: use "
                "generate_music(continue_from=job_id) to continue its audio with a MusicGen model"
            )
        kept = {name: value for name, value in job.params.model_dump().items() if value is not None}
        params = kept | {"duration": seconds, "seed": None, "loudness_lufs": job.params.loudness_lufs}
        return job, self.build_requests(1, prompt=prompt or job.prompt, **params), source

    async def submit(
        self,
        requests: list[GenerationRequest],
        model: str | None = None,
        *,
        local_paths: bool = False,
        continue_from: Source | None = None,
    ) -> list[Job]:
        """Queue one job per request, answered as they stand once committed (the worker is woken first,
        so a job may already be ``processing``). With ``continue_from`` each
        continues that audio (``duration`` seconds are added) and records it as its lineage.

        ``local_paths`` lets ``model`` name a checkpoint directory: for the operator (the CLI), never for MCP
        clients.
        """
        model_id = self.resolve_model(model, local_paths=local_paths)
        jobs = [(request.prompt, request.model_dump(exclude={"prompt"})) for request in requests]
        return await self.submit_jobs(model_id, jobs, continue_from=continue_from)

    def resolve_model(self, model: str | None, *, local_paths: bool = False, argument: str = "model") -> str:
        """The model id a job records; ``local_paths`` lets the operator (the CLI) name any directory."""
        model_id = families.resolve(model, self.settings) if model else self.default_model
        operator = families.is_operator_model(model_id, self.settings)
        if not local_paths and looks_like_path(model_id) and not operator:
            # A client must not make the server open arbitrary files (or probe which paths exist).
            raise ServiceError(
                f"{argument}: local paths are not accepted from clients; give an alias (small, medium, "
                "large, stereo-small, ace-step, ace-step-base, htdemucs, ...) or a hub id; the operator maps "
                "aliases to local directories with DGX_MUSIC_MODEL_PATHS=alias=/dir,..."
            )
        missing = families.missing_extra(model_id, argument)
        if missing is not None:
            raise ServiceError(missing)
        return model_id

    async def submit_jobs(
        self,
        model_id: str,
        jobs: list[tuple[str, dict[str, Any]]],
        lineages: list[Lineage] | None = None,
        *,
        continue_from: Source | None = None,
        melody_from: Source | None = None,
    ) -> list[Job]:
        """Queue (prompt, params) jobs for ``model_id`` in one transaction (with their lineage); with
        ``continue_from`` each continues that audio (``duration`` seconds are added), with ``melody_from``
        each follows that tune, and records it as its lineage."""
        metadata: dict[str, Any] = {}
        for source, key, operation in (
            (continue_from, SOURCE_KEY, Operation.CONTINUE),
            (melody_from, MELODY_KEY, Operation.MELODY),
        ):
            if source is None:
                continue
            metadata[key] = str(source.path)
            note = source.note(operation)
            if note:
                metadata["note"] = note
            lineages = [source.lineage(operation)] * len(jobs)
        generations = await _in_thread(self._create, model_id, jobs, lineages, metadata)
        if self.worker is not None:
            self.worker.wake()
        return [await self.job(generation.id) for generation in generations]

    def _create(
        self,
        model_id: str,
        jobs: list[tuple[str, dict[str, Any]]],
        lineages: list[Lineage] | None,
        metadata: dict[str, Any],
    ) -> list[Generation]:
        limit = self.settings.max_queue
        if len(jobs) > limit:
            raise QueueFullError(
                f"variations: {len(jobs)} is more than the queue holds "
                f"({limit}, set by DGX_MUSIC_MAX_QUEUE); ask for fewer variations"
            )
        # The common parameters are columns; a family's own (lyrics, bpm, section, context_seconds, ...) are
        # kept in the jobs' metadata, shared by the takes of one call (which differ in their seed only).
        columns = [(prompt, {k: v for k, v in p.items() if k in PARAM_COLUMNS}) for prompt, p in jobs]
        extras = [{k: v for k, v in p.items() if k not in PARAM_COLUMNS} for _, p in jobs]
        if any(extra != extras[0] for extra in extras):
            raise ValueError("jobs queued together must share their family parameters")
        if extras and extras[0]:
            metadata = {**metadata, "params": extras[0]}
        try:
            return self.store.create_many(
                model_id, columns, max_pending=limit, metadata=metadata or None, lineages=lineages
            )
        except QueueFull as full:
            raise QueueFullError(
                f"the queue is full ({full.pending} pending, limit {limit} set by DGX_MUSIC_MAX_QUEUE); "
                "wait for jobs to finish (job_status) or cancel some (cancel_job)"
            ) from None
