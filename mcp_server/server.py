"""The MCP surface: tools, a model catalogue, two resource templates and a prompt over a ``JobService``.

Long generations use a job id + bounded wait + poll design (``wait_seconds`` on generate_music and
job_status) because it works with every client. MCP's task-based long-running calls (SEP-1686) exist in
mcp 2.3.0 only as protocol types: the SDK has no server-side implementation, and Claude's apps do not send
task requests, so this server does not offer them.
"""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from ardour_templates import SessionManifest
from mcp_server import __version__, derive, song_args
from mcp_server.catalogue import CATALOGUE_URI, catalogue
from mcp_server.music_server import MusicServer
from mcp_server.schemas import (
    JOB_URI,
    REQUEST_DEFAULTS,
    Arrangement,
    Bpm,
    ContextSeconds,
    ContinueFrom,
    Cursor,
    DeleteResult,
    Duration,
    ExtendSeconds,
    GapSeconds,
    GenerateResult,
    GuidanceScale,
    HistoryPage,
    Job,
    JobId,
    JobIds,
    JobStatus,
    Limit,
    LoudnessLufs,
    MelodyFrom,
    ModelName,
    Prompt,
    Query,
    Seed,
    SessionName,
    Temperature,
    TopK,
    TopP,
    Variations,
    WaitSeconds,
)
from mcp_server.service import JobService
from mcp_server.sessions import export_jobs
from mcp_server.tool_results import (
    manifest_result,
    progress_reporter,
    resource_errors,
    tool_errors,
    tool_result,
)

INSTRUCTIONS = """\
Generates music from text and keeps a searchable history: MusicGen (default) for instrumental pieces up to
300 s, ACE-Step 1.5 (model="ace-step") for songs with lyrics up to 10 minutes. edit_music regenerates a
section of any finished piece, remix restyles it, separate_stems splits it into drums/bass/other/vocals;
list_history(family_of=job_id) lists a piece with all its parts.
generate_music queues jobs and waits up to wait_seconds (default 45) for them; unfinished jobs come back
with status pending/processing: call job_status(job_id, wait_seconds=...) until the status is completed,
failed or cancelled. A completed job has audio.path (a WAV on this machine) and audio.uri (an MCP resource).
export_to_ardour puts completed jobs into a new Ardour session. The resource dgx-music://models lists every
model by name with the parameters it takes, its limits, and whether it is installed here."""

CREATES = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False
)
READS = ToolAnnotations(read_only_hint=True, open_world_hint=False)
# Cancelling discards the partial audio of a running job; cancelling twice changes nothing more.
CANCELS = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False
)


def build_server(service: JobService, studio_url: str | None = None) -> MCPServer:
    """The MCP server for ``service`` (which the caller starts and stops); ``studio_url`` is where the web
    studio is served (HTTP only), linked from every job in the tools' text."""
    app = MusicServer(service, "dgx-music", version=__version__, instructions=INSTRUCTIONS)

    @app.tool(title="Generate music", annotations=CREATES)
    async def generate_music(
        prompt: Prompt,
        ctx: Context,
        duration: Duration | None = None,
        seed: Seed = REQUEST_DEFAULTS["seed"],
        temperature: Temperature | None = None,
        top_k: TopK | None = None,
        top_p: TopP | None = None,
        guidance_scale: GuidanceScale | None = None,
        variations: Variations = 1,
        loudness_lufs: LoudnessLufs = REQUEST_DEFAULTS["loudness_lufs"],
        model: ModelName = None,
        wait_seconds: WaitSeconds = 45,
        lyrics: song_args.Lyrics = None,
        bpm: song_args.SongBpm = None,
        key: song_args.Key = None,
        time_signature: song_args.TimeSignature = None,
        vocal_language: song_args.VocalLanguage = None,
        steps: song_args.Steps = None,
        continue_from: ContinueFrom = None,
        context_seconds: ContextSeconds | None = None,
        melody_from: MelodyFrom = None,
    ) -> Annotated[CallToolResult, GenerateResult]:
        """Generate music from a text description; one WAV per variation.

        Two model families. MusicGen (default; small, medium, large, melody, stereo-*; CC-BY-NC weights):
        instrumental pieces of 1-300 s at 32 kHz (made in 30 s windows, each prompted with the last
        context_seconds of the piece so far), tuned by temperature, top_k, top_p, guidance_scale;
        continue_from continues audio (a job_id, an input file or base64 WAV/FLAC): duration is then the
        seconds added and the result is the whole piece; melody_from (melody checkpoints: model="melody"; a
        piece over 30 s follows it window by window, the tune looped if shorter) makes the piece follow a
        tune, e.g. a hummed or played melody. ACE-Step 1.5 (model="ace-step" or "ace-step-base"; MIT): songs
        with lyrics of 10-600 s, 48 kHz stereo, tuned by lyrics, bpm, key, time_signature, vocal_language,
        steps (guidance_scale on base). A parameter of the other family is refused by name; null ones take
        the model's default.

        Describe genre, instruments, mood and tempo, e.g. "lo-fi hip hop beat, mellow piano, 80 bpm".
        Jobs are queued at once and this call waits up to wait_seconds (default 45; keep it under your
        client's tool timeout) for all of them, sending progress notifications meanwhile. Any job still
        pending or processing is returned as it is: poll it with job_status(job_id, wait_seconds=30).
        Each completed job has audio.path (WAV on the server machine) and audio.uri (MCP resource).
        Same seed + same parameters + same model = the same audio. If a job fails while this call waits,
        the call is an error that still carries every job (each failed one with its error). If this call is
        cancelled or times out, the jobs still run: find them with list_history. Job ids may be shortened to
        a unique prefix of 8+ characters everywhere.
        """
        with tool_errors():
            queued = await derive.generate(
                service,
                model,
                variations,
                {
                    "prompt": prompt,
                    "duration": duration,
                    "seed": seed,
                    "temperature": temperature,
                    "top_k": top_k,
                    "top_p": top_p,
                    "guidance_scale": guidance_scale,
                    "loudness_lufs": loudness_lufs,
                    "lyrics": lyrics,
                    "bpm": bpm,
                    "key": key,
                    "time_signature": time_signature,
                    "vocal_language": vocal_language,
                    "steps": steps,
                    "context_seconds": context_seconds,
                },
                continue_from,
                melody_from,
            )
            jobs = await service.wait(
                [job.job_id for job in queued], wait_seconds, progress_reporter(ctx, service)
            )
        return tool_result(GenerateResult(jobs=jobs), jobs, studio_url, waited=True)

    @app.tool(title="Extend music", annotations=CREATES)
    async def extend_music(
        job_id: JobId,
        seconds: ExtendSeconds,
        ctx: Context,
        prompt: Annotated[
            str | None,
            Field(
                min_length=1,
                max_length=2000,
                pattern=r"\S",
                description="What the added part should sound like; null = the job's own prompt.",
            ),
        ] = None,
        wait_seconds: WaitSeconds = 45,
    ) -> Annotated[CallToolResult, GenerateResult]:
        """Continue a completed job's audio by `seconds`: a new job holding the whole, longer piece (the
        original kept exactly up to the join), with the job as its parent. Same model and parameters as the
        job unless the prompt is given."""
        with tool_errors():
            job, requests, source = await service.extension(job_id, seconds, prompt)
            queued = await service.submit(requests, job.model, continue_from=source)
            jobs = await service.wait(
                [job.job_id for job in queued], wait_seconds, progress_reporter(ctx, service)
            )
        return tool_result(GenerateResult(jobs=jobs), jobs, studio_url, waited=True)

    @app.tool(title="Job status", annotations=READS)
    async def job_status(
        job_id: JobId, ctx: Context, wait_seconds: WaitSeconds = 0
    ) -> Annotated[CallToolResult, Job]:
        """The current state of one job: status, progress (0-1), queue position, error or audio.

        With wait_seconds > 0 this long-polls: it returns as soon as the job is completed, failed or
        cancelled, or when wait_seconds pass (sending progress notifications meanwhile).
        """
        with tool_errors():
            [job] = await service.wait([job_id], wait_seconds, progress_reporter(ctx, service))
        return tool_result(job, [job], studio_url, waited=wait_seconds > 0)

    @app.tool(title="List history", annotations=READS)
    async def list_history(
        query: Query = None,
        status: JobStatus | None = None,
        limit: Limit = 20,
        cursor: Cursor = None,
        family_of: song_args.FamilyOf = None,
    ) -> Annotated[CallToolResult, HistoryPage]:
        """Past and queued jobs, newest first (best match first when query is given).

        query is full-text search over prompts; status filters (pending, processing, completed, failed,
        cancelled). Pages hold up to limit jobs; pass next_cursor as cursor to get the next page.
        family_of=JOB_ID lists one piece with its whole family instead (the root, its stems, edits, remixes
        and continuations, parents first), each with its lineage (parent, operation, stem, section).
        """
        with tool_errors():
            if family_of is not None:
                items, next_cursor = await derive.family(service, family_of), None
            else:
                items, next_cursor = await service.history(query, status, limit, cursor)
        page = HistoryPage(items=items, next_cursor=next_cursor)
        return tool_result(page, items, studio_url, links=False)  # up to 100 links would drown the page

    @app.tool(title="Export to Ardour", annotations=CREATES)
    async def export_to_ardour(
        job_ids: JobIds,
        session_name: SessionName,
        arrangement: Arrangement = "sequential",
        gap_seconds: GapSeconds = 0.0,
        bpm: Bpm = None,
        enable_osc: bool = False,
        include_mix: song_args.IncludeMix = True,
    ) -> Annotated[CallToolResult, SessionManifest]:
        """Create a new Ardour session with one track per completed job, audio resampled to 48 kHz.

        Tracks are named after the prompts; each clip's comment holds its prompt and parameters. Returns
        the session directory, the .ardour file, the tracks (with strip ids for OSC control) and the
        command that opens it. enable_osc turns on Ardour's OSC surface (UDP 3819, all interfaces) when the
        session opens, for tools that drive Ardour remotely. Sessions are written under the server's
        DGX_MUSIC_HOME/sessions. arrangement="song" lays a piece and its parts out by lineage: give the
        source and its stems (and edits, variations); the mix is muted under its stems, or left out with
        include_mix=false; the manifest names each track's role (mix, stem:NAME, edit, variation).
        """
        with tool_errors():
            manifest = await export_jobs(
                service,
                job_ids,
                session_name,
                arrangement=arrangement,
                gap_seconds=gap_seconds,
                bpm=bpm,
                enable_osc=enable_osc,
                include_mix=include_mix,
            )
        return manifest_result(manifest)

    @app.tool(title="Cancel job", annotations=CANCELS)
    async def cancel_job(job_id: JobId) -> Annotated[CallToolResult, Job]:
        """Cancel a pending or processing job. A running job stops at its next decode step and its partial
        audio is discarded. Cancelling an already cancelled job is a no-op; completed and failed jobs are
        left alone (an error says so)."""
        with tool_errors():
            job = await service.cancel(job_id)
        return tool_result(job, [job], studio_url)

    register_derived_tools(app, service, studio_url)

    @app.resource(JOB_URI, name="generation", mime_type="application/json")
    async def job_resource(job_id: str) -> str:
        """One job as JSON (the same object job_status returns)."""
        with resource_errors():
            job = await service.job(job_id)
        return job.model_dump_json(indent=2)

    @app.resource(JOB_URI + "/audio", name="generation-audio", mime_type="audio/wav")
    async def audio_resource(job_id: str) -> bytes:
        """The WAV of a completed job (verified against its recorded sha256)."""
        with resource_errors():
            return await service.audio(job_id)

    @app.resource(CATALOGUE_URI, name="models", mime_type="application/json")
    async def models_resource() -> str:
        """Every model this server knows by name (the same catalogue as GET /api/v1/models): family, what
        it does, the generate_music parameters it takes with ranges and defaults, longest piece, sample
        rate, channels, melody conditioning, licence, whether its weights and pip extra are installed (else
        the command that fixes it), and the server's defaults."""
        found = await anyio.to_thread.run_sync(catalogue, service.settings)
        return found.model_dump_json(indent=2)

    @app.prompt(name="compose_session", title="Compose a session")
    def compose_session(
        idea: Annotated[
            str, Field(description="What the piece should sound like: genre, instruments, mood.")
        ],
        takes: Annotated[int, Field(ge=1, le=4, description="How many takes to generate (1-4).")] = 3,
        duration: Annotated[float, Field(ge=1, le=30, description="Seconds per take (1-30).")] = 10,
        session_name: Annotated[
            str | None, Field(description="Name of the Ardour session; default: from the idea.")
        ] = None,
    ) -> str:
        """Generate several takes of one idea and put them into a new Ardour session, one track each."""
        name = session_name or idea[:60]
        return (
            f"Compose an Ardour session from this idea: {idea!r}.\n"
            f"1. Call generate_music with prompt set to a rich description of the idea (genre, instruments, "
            f"mood, tempo), duration={duration:g} and variations={takes}.\n"
            "2. For every job that is still pending or processing, call job_status(job_id, wait_seconds=30) "
            "until it is completed, failed or cancelled.\n"
            f"3. Call export_to_ardour with the job_ids of the completed takes and session_name={name!r}.\n"
            "4. Tell me where the session is (ardour_file), which takes it holds, and the open_command. "
            "If a take failed, say why (its error) instead of retrying it more than once."
        )

    return app


def register_derived_tools(app: MCPServer, service: JobService, studio_url: str | None) -> None:
    """edit_music, remix, separate_stems and delete_generation: work on generations that exist."""

    @app.tool(title="Edit a section", annotations=CREATES)
    async def edit_music(
        job_id: JobId,
        start_s: song_args.SectionStart,
        end_s: song_args.SectionEnd,
        ctx: Context,
        prompt: song_args.EditPrompt = None,
        lyrics: song_args.Lyrics = None,
        model: song_args.AceStepModel = None,
        crossfade_s: song_args.Crossfade = None,
        seed: Seed = None,
        steps: song_args.Steps = None,
        wait_seconds: WaitSeconds = 45,
    ) -> Annotated[CallToolResult, Job]:
        """Regenerate one section (start_s to end_s, in seconds) of any completed generation with
        ACE-Step 1.5's repaint; the new job keeps the source's length and, outside the section, its exact
        samples (cross-faded at the edges, default 0.1 s). MusicGen sources are resampled to 48 kHz stereo
        first. prompt and lyrics describe the new section (default: the source's). The result records its
        parent, operation edit and the section; poll it with job_status like any job."""
        with tool_errors():
            queued = await derive.edit(
                service, job_id, start_s, end_s, prompt=prompt, lyrics=lyrics, model=model,
                crossfade_s=crossfade_s, seed=seed, steps=steps,
            )  # fmt: skip
            [job] = await service.wait([queued.job_id], wait_seconds, progress_reporter(ctx, service))
        return tool_result(job, [job], studio_url, waited=True)

    @app.tool(title="Remix", annotations=CREATES)
    async def remix(
        job_id: JobId,
        prompt: song_args.RemixPrompt,
        ctx: Context,
        strength: song_args.Strength = 0.5,
        model: song_args.AceStepModel = None,
        seed: Seed = None,
        wait_seconds: WaitSeconds = 45,
    ) -> Annotated[CallToolResult, Job]:
        """A new version of a completed generation in the style of prompt (ACE-Step's cover task):
        strength 1 keeps the source's structure closely, towards 0 follows the prompt. Needs a checkpoint
        with the audio tokenizer; others fail with the name of one that has it."""
        with tool_errors():
            queued = await derive.remix(service, job_id, prompt, strength, model=model, seed=seed)
            [job] = await service.wait([queued.job_id], wait_seconds, progress_reporter(ctx, service))
        return tool_result(job, [job], studio_url, waited=True)

    @app.tool(title="Separate stems", annotations=CREATES)
    async def separate_stems(
        job_id: JobId,
        ctx: Context,
        model: song_args.SeparatorName = None,
        wait_seconds: WaitSeconds = 45,
    ) -> Annotated[CallToolResult, GenerateResult]:
        """Split a completed generation into stems with Demucs: htdemucs gives drums, bass, other and
        vocals; htdemucs_6s adds guitar and piano. Each stem is a job of its own (operation stems, parent =
        the source), exactly the source's length and rate, loudness-preserving (the stems sum to the mix;
        none is normalised). Stems of a stem are allowed. Progress is reported; cancel_job on any stem stops
        the separation. Then export_to_ardour([source, *stems], arrangement="song") gives a session."""
        with tool_errors():
            queued = await derive.separate(service, job_id, model)
            ids = [job.job_id for job in queued]
            jobs = await service.wait(ids, wait_seconds, progress_reporter(ctx, service))
        return tool_result(GenerateResult(jobs=jobs), jobs, studio_url, waited=True)

    @app.tool(title="Delete a generation", annotations=CANCELS)
    async def delete_generation(
        job_id: JobId, delete_family: song_args.DeleteFamily = False
    ) -> Annotated[CallToolResult, DeleteResult]:
        """Delete a finished generation's row and WAV. One that others derive from (stems, edits, ...) is
        refused unless delete_family=true, which deletes them all. Pending or processing jobs: cancel
        first."""
        with tool_errors():
            deleted = await derive.delete(service, job_id, delete_family)
        result = DeleteResult(deleted=deleted)
        text = f"deleted {len(deleted)} generation(s): {', '.join(deleted)}\n\n{result.model_dump_json()}"
        return CallToolResult(
            content=[TextContent(type="text", text=text)], structured_content=result.model_dump(mode="json")
        )
