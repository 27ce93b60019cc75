"""What a song needs before its first denoising step, built by the pipeline's own methods.

``prepare`` reproduces the set-up part of ``AceStepPipeline.__call__`` (steps 0-9: instruction, text and lyric
encoding, source and context latents, noise, timestep schedule) for ONE request, so that every request carries
its own conditioning, noise (its own ``torch.Generator``) and scheduler, and can join a running batch at any
step. The pipeline's helpers (``encode_prompt``, ``prepare_src_latents``, ``_build_chunk_mask``,
``_get_timestep_schedule``, ``_get_task_instruction``) are called rather than copied; the few lines of
``__call__`` that are not in a helper (the timbre stand-in, the repaint substitution, the cover
tokenisation) are reproduced here with the line of ``__call__`` they follow.

Departure from ``__call__``: the source audio of edit and remix is VAE-encoded to the posterior's mean, not
a sample drawn from the global RNG, so the kept part of a source is conditioned on deterministically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from engine.acestep.request import SongRequest

SHIFT = 3.0  # the pipeline's default timestep shift, which the turbo checkpoints were distilled with
SAMPLES_PER_FRAME = 1920  # 48 kHz / 25 latent frames per second


@dataclass
class Conditions:
    """One request's inputs to the DiT, batch dimension 1."""

    encoder_states: torch.Tensor  # (1, S, H): packed lyric, timbre and text conditioning
    null_states: torch.Tensor | None  # (1, S, H): the learned null condition, for classifier-free guidance
    plain_states: torch.Tensor | None  # (1, S', H): text2music conditioning a remix blends towards
    context: torch.Tensor  # (1, T, 2A): source latents and chunk mask
    noise: torch.Tensor  # (1, T, A): the starting latents
    sigmas: list[float]  # the shifted timestep schedule, t = 1 → 0 (terminal 0 appended by the scheduler)

    @property
    def frames(self) -> int:
        return int(self.noise.shape[1])


def frames_for(duration_s: float) -> int:
    """Latent frames for ``duration_s`` seconds, as ``__call__`` counts them."""
    return math.ceil(duration_s * 48_000 / SAMPLES_PER_FRAME)


def prepare(pipeline: Any, request: SongRequest, generator: torch.Generator, uses_cfg: bool) -> Conditions:
    from diffusers.pipelines.ace_step.pipeline_ace_step import TASK_INSTRUCTIONS
    from diffusers.utils.torch_utils import randn_tensor

    device = pipeline._execution_device
    dtype = pipeline.transformer.dtype
    acoustic = pipeline.transformer.config.audio_acoustic_hidden_dim
    frames = frames_for(request.duration)
    instruction = pipeline._get_task_instruction(task_type=request.task)
    states = _encode(pipeline, request, instruction, device, dtype)

    silence, _ = pipeline.prepare_src_latents(device=device, dtype=dtype, batch_size=1, latent_length=frames)
    chunk_mask = pipeline._build_chunk_mask(
        task_type=request.task,
        latent_length=frames,
        batch_size=1,
        device=device,
        dtype=dtype,
        acoustic_dim=acoustic,
        repainting_start=request.start_s,
        repainting_end=request.end_s,
        has_src_audio=request.source is not None,
    )
    source = silence
    plain_states = None
    if request.source is not None:
        source = encode_source(pipeline, request.source, frames)
    if request.operation == "edit":
        # __call__ step 5: silence inside the repaint window, the source outside it.
        source = torch.where(chunk_mask > 0.5, silence, source)
    elif request.operation == "remix":
        # prepare_src_latents' cover branch, on the deterministic source latents.
        quantized, _ = pipeline.audio_tokenizer.tokenize(source, pipeline.condition_encoder.silence_latent.to(
            device=device, dtype=dtype))  # fmt: skip
        source = pipeline.audio_token_detokenizer(quantized.to(device=device, dtype=dtype))[
            :, :frames
        ].contiguous()
        if request.strength < 1.0:
            plain_states = _encode(pipeline, request, TASK_INSTRUCTIONS["text2music"], device, dtype)
    null_states = None
    if uses_cfg and request.guidance_scale > 1.0:
        null_states = pipeline.condition_encoder.null_condition_emb.to(device=device, dtype=dtype).expand_as(
            states
        )
    noise = randn_tensor((1, frames, acoustic), generator=generator, device=device, dtype=dtype)
    sigmas = pipeline._get_timestep_schedule(
        num_inference_steps=request.steps, shift=SHIFT, device=device, dtype=torch.float32
    )
    return Conditions(
        encoder_states=states,
        null_states=null_states,
        plain_states=plain_states,
        context=torch.cat([source, chunk_mask], dim=-1),
        noise=noise,
        sigmas=sigmas.tolist(),
    )


def _encode(pipeline: Any, request: SongRequest, instruction: str, device: Any, dtype: Any) -> torch.Tensor:
    """__call__ steps 1, 3 and 4: text and lyrics, the timbre stand-in (no reference audio), the condition
    encoder."""
    text, text_mask, lyric, lyric_mask = pipeline.encode_prompt(
        prompt=request.prompt,
        lyrics=request.lyrics,
        device=device,
        vocal_language=request.vocal_language,
        audio_duration=request.duration,
        instruction=instruction,
        bpm=request.bpm,
        keyscale=request.key,
        timesignature=str(request.time_signature) if request.time_signature else None,
    )
    timbre_frames = math.ceil(30 * pipeline.latents_per_second)
    timbre = pipeline.condition_encoder.silence_latent[:, :timbre_frames, :].to(device=device, dtype=dtype)
    states, _ = pipeline.condition_encoder(
        text_hidden_states=text,
        text_attention_mask=text_mask,
        lyric_hidden_states=lyric,
        lyric_attention_mask=lyric_mask,
        refer_audio_acoustic_hidden_states_packed=timbre.contiguous(),
        refer_audio_order_mask=torch.arange(1, device=device, dtype=torch.long),
    )
    return states


def encode_source(pipeline: Any, source: Any, frames: int) -> torch.Tensor:
    """48 kHz stereo samples → (1, frames, A) latents: zero-padded to whole frames, the posterior's mean."""
    samples = torch.from_numpy(source).to(device=pipeline._execution_device, dtype=pipeline.vae.dtype)
    padded = torch.nn.functional.pad(samples, (0, frames * SAMPLES_PER_FRAME - samples.shape[1]))
    latents = pipeline.vae.encode(padded.unsqueeze(0)).latent_dist.mode()
    return latents.transpose(1, 2).to(dtype=pipeline.transformer.dtype)[:, :frames]


def decode(pipeline: Any, latents: torch.Tensor) -> torch.Tensor:
    """(1, T, A) latents → (1, 2, T × 1920) float32 samples, as the VAE gives them (no normalisation)."""
    return pipeline.vae.decode(latents.transpose(1, 2).to(pipeline.vae.dtype)).sample.float()


def peak_normalise(samples: torch.Tensor) -> torch.Tensor:
    """__call__ step 11's normalisation: divide by a peak above full scale, then scale the peak to -1 dBFS."""
    peak = samples.abs().amax(dim=[1, 2], keepdim=True)
    if torch.any(peak > 1.0):
        samples = samples / peak.clamp(min=1.0)
    peak = samples.abs().amax(dim=[1, 2], keepdim=True).clamp(min=1e-6)
    return samples * (10.0 ** (-1.0 / 20.0) / peak)
