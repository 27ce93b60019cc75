"""A batching decode loop for MusicGen, built from transformers' own modules.

``generate`` decodes one fixed batch with one set of sampling parameters, re-applies the codebook delay mask
to the whole sequence and grows every layer's keys and values by concatenation at every step. This loop runs
the same weights differently:

- the text encoder runs once per request; each request's cross-attention keys and values are computed once;
- classifier-free guidance is 2B rows in one forward: the B conditional rows, then B unconditional ones whose
  text states are zeros (as in ``generate``). Cross-attention has no biases, so on zero states it adds exactly
  zero: the unconditional rows skip it;
- every row has its own temperature, top-k, top-p, guidance scale, length and ``torch.Generator``;
- the delay pattern is a (step, row, codebook) table built once and read one step at a time; it is undone
  once at the end by a gather;
- keys and values live in a static cache sized for the batch (``engine.kv_cache``);
- on CUDA the whole step (forward, guidance, filters, sampling, delay pattern) is captured once as a CUDA
  graph and replayed; only the per-request noise is drawn outside it, from each request's generator.

A row that reaches its length keeps running as padding until the batch ends (its tokens are the pad id and
nothing reads them); a cancelled row likewise, and the batch ends as soon as no live row needs more steps.

Admitting requests into a running batch (at a step boundary) is the natural next step and the buffers are laid
out for it: it needs a per-row position (``DecodeStep.position`` becomes (rows,), the cache writes scatter per
row, the self-attention mask compares per row) and a free slot (a finished or cancelled row) whose cross
keys/values, sampling parameters, generator and delay-pattern column are overwritten in place. Nothing else
changes shape, so a captured graph stays valid.
"""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engine.kv_cache import CrossKV, KVShape, StaticKVCache
from engine.request import GenerationRequest
from engine.sampling import SamplingParams, draw_noise, filter_logits, guide, sample, uses_guidance

log = logging.getLogger(__name__)

OnStep = Callable[[int, list[int]], None]
IsCancelled = Callable[[int], bool]

CUDA_GRAPH_ENV = "DGX_MUSIC_CUDA_GRAPH"  # "0" turns graph capture off (debugging, profiling)


@dataclass(frozen=True)
class Plan:
    """The lengths of every request of a batch, fixed before decoding starts."""

    samples: list[int]  # audio samples returned
    frames: list[int]  # codec frames decoded (50 per second; the audio is trimmed to ``samples``)
    steps: list[int]  # decode steps: the frames plus the delay pattern's tail

    @classmethod
    def for_requests(cls, model: Any, requests: Sequence[GenerationRequest]) -> Plan:
        codec = model.config.audio_encoder
        hop = math.prod(codec.upsampling_ratios)
        tail = model.decoder.num_codebooks // model.config.decoder.audio_channels - 1
        samples = [round(request.duration * codec.sampling_rate) for request in requests]
        frames = [-(-count // hop) for count in samples]
        return cls(samples=samples, frames=frames, steps=[count + tail for count in frames])


def _split_heads(states: torch.Tensor, heads: int) -> torch.Tensor:
    """(rows, tokens, hidden) -> (rows, heads, tokens, head_dim)."""
    rows, tokens, _ = states.shape
    return states.view(rows, tokens, heads, -1).transpose(1, 2)


def _merge_heads(states: torch.Tensor) -> torch.Tensor:
    """(rows, heads, tokens, head_dim) -> (rows, tokens, hidden)."""
    rows, _, tokens, _ = states.shape
    return states.transpose(1, 2).reshape(rows, tokens, -1)


def encode_text(
    model: Any, processor: Any, requests: Sequence[GenerationRequest], device: torch.device
) -> CrossKV:
    """Run the text encoder and every layer's cross-attention key/value projections, once per request.

    Each prompt is encoded on its own, so its states do not depend on the other prompts' padding.
    """
    states = []
    for request in requests:
        inputs = processor(text=[request.prompt], padding=True, return_tensors="pt").to(device)
        hidden = model.text_encoder(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
        ).last_hidden_state
        # The same projection and masking as MusicgenForConditionalGeneration.forward.
        decoder_config = model.decoder.config
        if (
            model.text_encoder.config.hidden_size != decoder_config.hidden_size
            and decoder_config.cross_attention_hidden_size is None
        ):
            hidden = model.enc_to_dec_proj(hidden)
        states.append(hidden * inputs["attention_mask"][..., None])
    layers = model.decoder.model.decoder.layers
    heads = model.decoder.config.num_attention_heads
    shape = KVShape(
        layers=len(layers),
        rows=len(requests),
        heads=heads,
        length=max(state.shape[1] for state in states),
        head_dim=model.decoder.config.hidden_size // heads,
    )
    cross = CrossKV(shape, model.decoder.dtype, device)
    for index, layer in enumerate(layers):
        attention = layer.encoder_attn
        for row, state in enumerate(states):
            key = _split_heads(attention.k_proj(state), heads)
            value = _split_heads(attention.v_proj(state), heads)
            cross.fill(index, row, key, value)
    return cross


class DecodeStep:
    """One decoder step for a fixed batch, reading and writing only buffers allocated up front.

    Inputs: ``tokens`` (the previous step's codes), ``position``, ``noise``. Outputs: ``tokens`` and
    ``codes[:, :, position]``; ``position`` advances by one. Call it with the attended length for eager
    decoding, or with ``None`` to attend through a position mask (fixed shapes, as graph replay needs).
    """

    def __init__(
        self,
        model: Any,
        cross: CrossKV,
        params: SamplingParams,
        plan: Plan,
        guidance: bool,
        device: torch.device,
    ) -> None:
        decoder = model.decoder.model.decoder
        config = model.decoder.config
        self.layers = decoder.layers
        self.embed_tokens = decoder.embed_tokens
        self.final_norm = decoder.layer_norm
        self.lm_heads = model.decoder.lm_heads
        self.heads = config.num_attention_heads
        self.cross = cross
        self.params = params
        self.guidance = guidance
        self.batch = len(plan.steps)
        self.start_token = int(model.generation_config.decoder_start_token_id)
        codebooks = model.decoder.num_codebooks
        length = max(plan.steps)

        embed_positions = decoder.embed_positions
        if embed_positions.weights.size(0) < length:
            embed_positions.make_weights(length, embed_positions.embedding_dim)  # as transformers does lazily
        self.positions = embed_positions.weights

        # The delay pattern: codebook k of a C-codebook channel lags k steps, so at step t row i emits a real
        # code for codebook k iff delay[k] <= t < delay[k] + frames[i], and the pad id everywhere else.
        self.delay = torch.arange(codebooks, device=device) // config.audio_channels
        steps = torch.arange(length, device=device)[:, None, None]
        frames = torch.tensor(plan.frames, device=device)[None, :, None]
        self.pattern = (steps >= self.delay) & (steps < self.delay + frames)  # (steps, batch, codebooks)

        self.tokens = torch.full((self.batch, codebooks), self.start_token, dtype=torch.long, device=device)
        self.codes = torch.full(
            (self.batch, codebooks, length), self.start_token, dtype=torch.long, device=device
        )
        self.position = torch.zeros(1, dtype=torch.long, device=device)
        self.noise = torch.ones(
            (self.batch, codebooks, config.vocab_size), dtype=torch.float32, device=device
        )
        self._all_positions = torch.arange(length, device=device)
        rows = 2 * self.batch if guidance else self.batch
        shape = KVShape(len(self.layers), rows, self.heads, length, config.hidden_size // self.heads)
        self.cache = StaticKVCache(shape, model.decoder.dtype, device)

    def reset(self) -> None:
        """Back to step 0 (after graph warm-up). Cached keys/values need no reset: each step overwrites its
        own position before any step attends to it."""
        self.tokens.fill_(self.start_token)
        self.codes.fill_(self.start_token)
        self.position.zero_()

    def frames_of(self, row: int, frames: int) -> torch.Tensor:
        """Undo the delay pattern for one row: its (codebooks, frames) codes."""
        index = self.delay[:, None] + torch.arange(frames, device=self.codes.device)
        return self.codes[row].gather(1, index)

    def __call__(self, length: int | None) -> None:
        # Same arithmetic, in the same order, as MusicgenDecoder.forward for one new token per row.
        hidden = self.embed_tokens[0](self.tokens[:, 0])
        for codebook in range(1, len(self.embed_tokens)):
            hidden = hidden + self.embed_tokens[codebook](self.tokens[:, codebook])
        hidden = hidden[:, None]
        if self.guidance:
            hidden = torch.cat([hidden, hidden])
        hidden = hidden + self.positions.index_select(0, self.position)
        causal = None if length is not None else (self._all_positions <= self.position).view(1, 1, 1, -1)
        for index, layer in enumerate(self.layers):
            hidden = self._layer(index, layer, hidden, length, causal)
        hidden = self.final_norm(hidden)
        logits = torch.stack([head(hidden) for head in self.lm_heads], dim=1)[:, :, 0].float()

        scores = guide(logits, self.params.guidance_scale) if self.guidance else logits
        sampled = sample(filter_logits(scores, self.params), self.noise)
        emitted = self.pattern.index_select(0, self.position)[0]
        next_tokens = torch.where(emitted, sampled, self.start_token)
        self.tokens.copy_(next_tokens)
        self.codes.index_copy_(2, self.position, next_tokens[:, :, None])
        self.position += 1

    def _layer(
        self, index: int, layer: Any, hidden: torch.Tensor, length: int | None, causal: torch.Tensor | None
    ) -> torch.Tensor:
        attention = layer.self_attn
        normed = layer.self_attn_layer_norm(hidden)
        query = _split_heads(attention.q_proj(normed), self.heads)
        key, value = self.cache.update(
            index,
            self.position,
            _split_heads(attention.k_proj(normed), self.heads),
            _split_heads(attention.v_proj(normed), self.heads),
            length,
        )
        attended = F.scaled_dot_product_attention(
            query, key, value, attn_mask=causal, scale=attention.scaling
        )
        hidden = hidden + attention.out_proj(_merge_heads(attended))

        # Cross-attention, conditional rows only (see the module docstring), added in place.
        attention = layer.encoder_attn
        conditional = hidden[: self.batch]
        query = _split_heads(attention.q_proj(layer.encoder_attn_layer_norm(conditional)), self.heads)
        attended = F.scaled_dot_product_attention(
            query,
            self.cross.keys[index],
            self.cross.values[index],
            attn_mask=self.cross.mask,
            scale=attention.scaling,
        )
        conditional += attention.out_proj(_merge_heads(attended))

        normed = layer.final_layer_norm(hidden)
        return hidden + layer.fc2(layer.activation_fn(layer.fc1(normed)))


class CudaGraphStep:
    """A ``DecodeStep`` captured once as a CUDA graph: each call replays the whole step in one launch."""

    def __init__(self, step: DecodeStep) -> None:
        # Warm up on a side stream first (cuBLAS handles, lazy initialisation), as capture requires.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step(None)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            step(None)
        step.reset()

    def __call__(self, step_index: int) -> None:
        self.graph.replay()


def _runner(step: DecodeStep, device: torch.device) -> Callable[[int], None]:
    """On CUDA, the step captured as a graph (unless turned off or capture fails), else the same fixed-shape
    step run eagerly, so results do not depend on the graph. Elsewhere the eager step attends to exactly the
    positions written so far, which is what ``generate`` computes."""
    if device.type != "cuda":
        return lambda step_index: step(step_index + 1)
    if os.environ.get(CUDA_GRAPH_ENV, "1") != "0":
        try:
            return CudaGraphStep(step)
        except RuntimeError as error:  # capture is unsupported in some setups: decode without it
            log.warning("CUDA graph capture failed, decoding without it: %s", error)
            torch.cuda.synchronize(device)
            step.reset()
    return lambda step_index: step(None)


@torch.inference_mode()
def decode_codes(
    model: Any,
    processor: Any,
    requests: Sequence[GenerationRequest],
    seeds: Sequence[int],
    device: torch.device,
    on_step: OnStep | None = None,
    is_cancelled: IsCancelled | None = None,
) -> list[torch.Tensor | None]:
    """Decode every request's audio codes, (codebooks, frames) each, or ``None`` for a cancelled row."""
    if len(seeds) != len(requests):
        raise ValueError(
            f"seeds has {len(seeds)} entries for {len(requests)} requests; pass one seed per request"
        )
    if not requests:
        return []
    plan = Plan.for_requests(model, requests)
    step = DecodeStep(
        model,
        encode_text(model, processor, requests, device),
        SamplingParams.from_requests(requests, model.decoder.config.vocab_size, device),
        plan,
        uses_guidance(requests),
        device,
    )
    run = _runner(step, device)
    generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
    cancelled = [False] * len(requests)

    def check_cancelled() -> None:
        if is_cancelled is not None:
            for row, already in enumerate(cancelled):
                cancelled[row] = already or is_cancelled(row)

    for index in range(max(plan.steps)):
        check_cancelled()
        live = [row for row, total in enumerate(plan.steps) if index < total and not cancelled[row]]
        if not live:
            break
        draw_noise(step.noise, generators, live)
        run(index)
        if on_step is not None:
            on_step(index + 1, list(plan.steps))
    check_cancelled()
    return [None if cancelled[row] else step.frames_of(row, frames) for row, frames in enumerate(plan.frames)]


@torch.inference_mode()
def decode_audio(model: Any, codes: Sequence[torch.Tensor | None]) -> list[np.ndarray | None]:
    """EnCodec-decode each row's codes to float32 (channels, samples); rows of equal length share a call.

    Stereo checkpoints interleave the left and right codebooks; each half is decoded on its own, as
    ``generate`` does.
    """
    codec = model.audio_encoder
    stereo = model.config.decoder.audio_channels == 2
    by_length: dict[int, list[int]] = defaultdict(list)
    for row, row_codes in enumerate(codes):
        if row_codes is not None:
            by_length[row_codes.shape[-1]].append(row)
    audio: list[np.ndarray | None] = [None] * len(codes)
    for rows in by_length.values():
        batch = torch.stack([codes[row] for row in rows])[None]  # type: ignore[misc]  # (1, rows, K, frames)
        halves = [batch[:, :, 0::2], batch[:, :, 1::2]] if stereo else [batch]
        values = torch.cat(
            [codec.decode(half, audio_scales=[None] * len(rows)).audio_values for half in halves], dim=1
        )
        for position, row in enumerate(rows):
            audio[row] = values[position].float().cpu().numpy()
    return audio


def generate_batch(
    model: Any,
    processor: Any,
    requests: Sequence[GenerationRequest],
    seeds: Sequence[int],
    device: torch.device,
    on_step: OnStep | None = None,
    is_cancelled: IsCancelled | None = None,
) -> list[np.ndarray | None]:
    """Generate requests in one decode loop: raw float32 audio per request, ``None`` where cancelled.

    Audio is (channels, round(duration * sample_rate)), not loudness-processed. ``on_step(step, totals)``
    runs after every decode step: ``step`` counts the batch's steps from 1 and ``totals[i]`` is the number
    row i needs, so ``min(step, totals[i]) / totals[i]`` is its progress. ``is_cancelled(i)`` is asked before
    every step; a cancelled row stops sampling and returns ``None``.
    """
    codes = decode_codes(model, processor, requests, seeds, device, on_step, is_cancelled)
    plan = Plan.for_requests(model, requests)
    return [
        None if audio is None else np.ascontiguousarray(audio[:, :samples], dtype=np.float32)
        for audio, samples in zip(decode_audio(model, codes), plan.samples, strict=True)
    ]
