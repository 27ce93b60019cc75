"""ACE-Step 1.5 behind the engine's ``Backend`` face: each ``step()`` is one denoising step of every song.

A song's life: ``admit`` encodes its prompt and lyrics, sets up its context latents (the source's, for edit
and remix) and draws its noise from its own ``torch.Generator``; each ``step()`` runs the DiT once over every
song's rows (conditional, plus the null condition under CFG, plus the text-only condition of a remix that
blends) and advances each song with its own flow-matching scheduler; the ``step()`` that finishes a song's
last denoising step also decodes it with the VAE and reports its outcome. So a song's audio depends on its
parameters and seed only, never on its batch-mates (``denoise`` masks their padding). "Only" is up to float
rounding: a batched matrix product may round differently from a single-row one (measured on CPU: velocities
within 2e-6, final audio within 1e-6 of the song run alone).

Songs run together when they have the same operation and the same number of latent frames (the duration
bucket: 1/25 s); a song of another bucket waits until the running group has drained.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from engine import audio
from engine.acestep import conditioning, denoise, edit
from engine.acestep.loading import LoadedPipeline, load
from engine.acestep.models import Licence, licence_of
from engine.acestep.request import (
    CHANNELS,
    MAX_DURATION_S,
    SAMPLE_RATE,
    CheckpointTraits,
    SongRequest,
    operations,
    parameters,
    validate,
)
from engine.backend import (
    Admission,
    Backend,
    Capabilities,
    Decision,
    GenerationResult,
    Outcome,
    Progress,
    StepReport,
)

DEFAULT_MAX_BATCH = 8
# diffusers' ACE-Step docs give 8 default steps for every variant (turbo, base, sft); base and sft add
# CFG (guidance 7.0). A user who wants more asks for them (steps ≤ 100).
TURBO_STEPS = 8
BASE_STEPS = 8


@dataclass
class _Song:
    request_id: str
    request: SongRequest
    seed: int
    conditions: conditioning.Conditions
    scheduler: Any  # its own FlowMatchEulerDiscreteScheduler, set to its schedule
    latents: torch.Tensor
    admitted_at: float
    momentum: Any = None  # APG's momentum buffer under CFG
    done: int = 0
    cancelled: bool = False

    @property
    def total(self) -> int:
        return len(self.conditions.sigmas)

    @property
    def group(self) -> tuple[str, int]:
        return self.request.operation, self.conditions.frames


def traits_of(loaded: LoadedPipeline) -> CheckpointTraits:
    pipeline = loaded.pipeline
    turbo = bool(pipeline.is_turbo)
    return CheckpointTraits(
        model_id=loaded.model_id,
        uses_cfg=not turbo,
        default_steps=TURBO_STEPS if turbo else BASE_STEPS,
        can_remix=pipeline.audio_tokenizer is not None and pipeline.audio_token_detokenizer is not None,
    )


class AceStepBackend(Backend[SongRequest]):
    """A resident ACE-Step pipeline driven step by step. See the module docstring."""

    def __init__(
        self,
        loaded: LoadedPipeline,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        free_memory: Callable[[], int] | None = None,
    ) -> None:
        """``free_memory`` reports the device memory free now (bytes), for admission; None admits by slots
        alone."""
        self._loaded = loaded
        self._pipeline = loaded.pipeline
        self._free_memory = free_memory
        self.traits = traits_of(loaded)
        self.licence: Licence = licence_of(loaded.model_id)
        self.capabilities = Capabilities(
            family="acestep",
            model_id=loaded.model_id,
            operations=operations(self.traits),
            parameters=parameters(self.traits),
            max_duration_s=MAX_DURATION_S,
            sample_rate=SAMPLE_RATE,
            channels=CHANNELS,
            max_batch=max_batch,
        )
        self._mask = denoise.CrossAttentionMask(self._pipeline.transformer)
        self._songs: dict[str, _Song] = {}

    @classmethod
    def load(
        cls,
        model: str = "ace-step",
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        local_files_only: bool = False,
        max_batch: int = DEFAULT_MAX_BATCH,
        free_memory: Callable[[], int] | None = None,
    ) -> AceStepBackend:
        loaded = load(model, torch.device(device), dtype, local_files_only=local_files_only)
        return cls(loaded, max_batch=max_batch, free_memory=free_memory)

    @property
    def model_id(self) -> str:
        return self._loaded.model_id

    @property
    def pipeline(self) -> Any:
        """The loaded ``AceStepPipeline`` (its components are what ``step`` drives)."""
        return self._pipeline

    @property
    def memory_bytes(self) -> int:
        return self._loaded.memory_bytes

    # --- admission ----------------------------------------------------------------------------------------

    def validate(self, operation: str, params: Mapping[str, Any]) -> SongRequest:
        return validate(operation, params, self.traits)

    def request_bytes(self, request: SongRequest) -> int:
        """Estimated device memory one song needs while it runs and decodes (activations, not weights).

        The DiT keeps about a dozen hidden-width and three intermediate-width tensors live per row and
        patch; the VAE's last (full-rate) decoder block holds a few tensors of its channel width per sample.
        """
        config = self._pipeline.transformer.config
        element = torch.finfo(self._pipeline.transformer.dtype).bits // 8
        rows = 1 + (request.guidance_scale > 1.0) + (request.operation == "remix" and request.strength < 1.0)
        patches = conditioning.frames_for(request.duration) // config.patch_size + 1
        dit = rows * patches * (12 * config.hidden_size + 3 * config.intermediate_size) * element
        vae_width = self._pipeline.vae.config.decoder_channels
        samples = conditioning.frames_for(request.duration) * conditioning.SAMPLES_PER_FRAME
        return int(dit + 3 * samples * vae_width * 4)

    def can_admit(self, request: SongRequest) -> Admission:
        frames = conditioning.frames_for(request.duration)
        if self._songs:
            group = next(iter(self._songs.values())).group
            if group != (request.operation, frames):
                return Admission(
                    Decision.LATER,
                    f"a group of {group[0]} songs of {group[1]} latent frames is running; this "
                    f"{request.operation} of {frames} frames starts when it has drained",
                )
        if len(self._songs) >= self.capabilities.max_batch:
            return Admission(Decision.LATER, f"all {self.capabilities.max_batch} slots are busy")
        if self._free_memory is not None:
            needed = self.request_bytes(request)
            free = self._free_memory()
            if needed > free:
                if not self._songs:
                    return Admission(
                        Decision.NEVER,
                        f"a {request.duration:.0f} s {request.operation} needs about {needed / 1e9:.1f} GB "
                        f"of device memory and only {free / 1e9:.1f} GB is free with nothing running; ask "
                        "for a shorter piece or free memory (unload other models)",
                    )
                return Admission(Decision.LATER, f"needs {needed / 1e9:.1f} GB, {free / 1e9:.1f} GB free")
        return Admission(Decision.NOW)

    def admit(self, request_id: str, request: SongRequest) -> None:
        from diffusers import FlowMatchEulerDiscreteScheduler
        from diffusers.guiders.adaptive_projected_guidance import MomentumBuffer

        if request_id in self._songs:
            raise ValueError(f"request {request_id!r} is already admitted")
        seed = secrets.randbelow(2**32) if request.seed is None else request.seed
        generator = torch.Generator("cpu").manual_seed(seed)
        started = time.perf_counter()
        with torch.no_grad():
            conditions = conditioning.prepare(self._pipeline, request, generator, self.traits.uses_cfg)
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(self._pipeline.scheduler.config)
        scheduler.set_timesteps(sigmas=conditions.sigmas, device=self._loaded.device)
        self._songs[request_id] = _Song(
            request_id=request_id,
            request=request,
            seed=seed,
            conditions=conditions,
            scheduler=scheduler,
            latents=conditions.noise,
            admitted_at=started,
            momentum=MomentumBuffer(momentum=-0.75) if conditions.null_states is not None else None,
        )

    # --- running ------------------------------------------------------------------------------------------

    def step(self) -> StepReport:
        finished: list[Outcome] = []
        for song in [song for song in self._songs.values() if song.cancelled]:
            del self._songs[song.request_id]
            finished.append(Outcome(song.request_id, "cancelled"))
        songs = list(self._songs.values())
        if songs:
            with torch.no_grad():
                self._denoise(songs)
                if self._loaded.device.type == "cuda":
                    # Progress counts finished work: wait for this step's kernels before reporting it.
                    torch.cuda.synchronize(self._loaded.device)
                for song in songs:
                    if song.done == song.total:
                        del self._songs[song.request_id]
                        finished.append(self._finish(song))
        return StepReport(
            progress={key: self._progress(song) for key, song in self._songs.items()}, finished=finished
        )

    def _denoise(self, songs: list[_Song]) -> None:
        from diffusers.guiders.adaptive_projected_guidance import normalized_guidance

        rows: list[denoise.Row] = []
        layout: list[list[str]] = []  # which rows are whose, in order
        for song in songs:
            conditions = song.conditions
            timestep = float(song.scheduler.timesteps[song.done])
            # The pipeline's CFG interval is the whole schedule ([0, 1]): guidance applies at every step.
            kinds = {
                "cond": conditions.encoder_states,
                "null": conditions.null_states,
                "plain": conditions.plain_states,
            }
            names = []
            for name, states in kinds.items():
                if states is not None:
                    rows.append(denoise.Row(song.latents, timestep, states, conditions.context))
                    names.append(name)
            layout.append(names)
        velocities = iter(denoise.predict(self._pipeline.transformer, self._mask, rows))
        for song, names in zip(songs, layout, strict=True):
            outputs = {name: next(velocities) for name in names}
            velocity = outputs["cond"]
            if "null" in outputs:
                velocity = normalized_guidance(
                    pred_cond=velocity,
                    pred_uncond=outputs["null"],
                    guidance_scale=song.request.guidance_scale - 1.0,
                    momentum_buffer=song.momentum,
                    eta=0.0,
                    norm_threshold=2.5,
                    use_original_formulation=True,
                    norm_dim=(1,),
                )
            if "plain" in outputs:
                strength = song.request.strength
                velocity = strength * velocity + (1.0 - strength) * outputs["plain"]
            timestep = song.scheduler.timesteps[song.done]
            song.latents = song.scheduler.step(velocity, timestep, song.latents, return_dict=False)[0]
            song.done += 1

    def _finish(self, song: _Song) -> Outcome:
        request = song.request
        decoded = conditioning.decode(self._pipeline, song.latents)
        if request.operation != "edit":
            decoded = conditioning.peak_normalise(decoded)
        samples = decoded[0].cpu().numpy()[:, : request.samples]
        bad = int(samples.size - np.count_nonzero(np.isfinite(samples)))
        if bad:
            return Outcome(
                song.request_id,
                "failed",
                error=f"generation produced non-finite values (NaN or infinity) in {bad:,} of "
                f"{samples.size:,} samples; nothing was stored. Try another seed, or float32 or bfloat16 "
                "instead of float16",
            )
        if request.operation == "edit":
            assert request.source is not None
            weights = edit.section_weights(
                request.samples,
                round(request.start_s * SAMPLE_RATE),
                round(request.end_s * SAMPLE_RATE),
                round(request.crossfade_s * SAMPLE_RATE),
            )
            processed = edit.splice(request.source, samples, weights, SAMPLE_RATE)
        else:
            processed = audio.postprocess(samples, SAMPLE_RATE, request.loudness_lufs)
        return Outcome(
            song.request_id,
            "completed",
            result=GenerationResult(
                audio=processed,
                sample_rate=SAMPLE_RATE,
                seed=song.seed,
                duration_s=processed.shape[1] / SAMPLE_RATE,
                loudness_lufs=audio.integrated_loudness(processed, SAMPLE_RATE),
                peak_dbfs=audio.peak_dbfs(processed),
                steps=song.total,
                generation_seconds=time.perf_counter() - song.admitted_at,
            ),
        )

    def _progress(self, song: _Song) -> Progress:
        return Progress(song.done, song.total, "denoising")

    # --- the rest of the face -------------------------------------------------------------------------------

    def cancel(self, request_id: str) -> bool:
        song = self._songs.get(request_id)
        if song is None:
            return False
        song.cancelled = True
        return True

    def progress(self, request_id: str) -> Progress | None:
        song = self._songs.get(request_id)
        return None if song is None else self._progress(song)

    @property
    def has_work(self) -> bool:
        return bool(self._songs)
