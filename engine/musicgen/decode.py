"""One MusicGen decode step over a batch of slots, built from transformers' own modules.

``generate`` decodes one fixed batch with one set of sampling parameters, re-applies the codebook delay mask
to the whole sequence and grows every layer's keys and values by concatenation at every step. This step runs
the same weights differently:

- each request's text is encoded once, and its cross-attention keys and values computed once, when it is
  admitted into a slot (``encode_tokens``, off the decode loop on a CPU: ``engine.musicgen.encoding``);
- classifier-free guidance runs as a pair of rows per slot (conditional, unconditional); the unconditional
  text states are zeros, and cross-attention has no biases, so on zero states it adds exactly zero: the
  unconditional rows skip it;
- every slot has its own position, temperature, top-k, top-p, guidance scale, length and ``torch.Generator``,
  so requests of any durations and parameters share a step, and a slot freed by a finished or cancelled
  request is taken by a new one at the next step boundary (its state is written in place: nothing else
  changes shape, so a captured CUDA graph stays valid);
- the delay pattern is computed per slot from its position and frame count; it is undone once, by a gather,
  when the slot finishes;
- keys and values live in a static cache (``engine.musicgen.kv_cache``) written at each row's own position,
  among the other per-slot buffers of a ``DecodeState`` (``engine.musicgen.decode_state``).
- MusicGen-Melody checkpoints have no cross-attention: their conditioning (chroma, then text) is a prefix of
  the decoder's sequence, written into the slot's cache when it is admitted (``DecodeStep.prefill_prefix``,
  ``engine.musicgen.prefix``); the slot's audio positions follow it, and every cross-attention step is
  skipped.

Two ways to run a step, both computing what ``generate`` computes for each row:

- **exact** (CPU): attention reads exactly the positions each slot has written, no mask; consecutive slots
  at the same position share one attention call. This makes a request's codes independent of its batch-mates
  down to the last bit (a masked, longer attention differs from the exact one in the last bits);
- **masked** (CUDA): fixed shapes, attention over a length bucket masked per row, as graph replay needs
  (``engine.musicgen.cuda_graphs`` captures it once per batch-size and length bucket).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engine.musicgen.decode_state import DecodeState
from engine.musicgen.sampling import filter_logits, guide, sample

LENGTH_BUCKET = 256  # masked attention reads positions in multiples of this (CUDA graph buckets)
TEXT_BUCKET = 64  # cross-attention buffers grow in multiples of this many text tokens


@dataclass(frozen=True)
class Plan:
    """The lengths of one request, fixed when it is admitted."""

    samples: int  # audio samples returned
    frames: int  # codec frames decoded (50 per second; the audio is trimmed to ``samples``)
    steps: int  # decode steps: the frames plus the delay pattern's tail

    @classmethod
    def for_duration(cls, model: Any, duration: float) -> Plan:
        codec = model.config.audio_encoder
        hop = math.prod(codec.upsampling_ratios)
        tail = model.decoder.num_codebooks // model.config.decoder.audio_channels - 1
        samples = round(duration * codec.sampling_rate)
        frames = -(-samples // hop)
        return cls(samples=samples, frames=frames, steps=frames + tail)


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _split_heads(states: torch.Tensor, heads: int) -> torch.Tensor:
    """(rows, tokens, hidden) -> (rows, heads, tokens, head_dim)."""
    rows, tokens, _ = states.shape
    return states.view(rows, tokens, heads, -1).transpose(1, 2)


def _merge_heads(states: torch.Tensor) -> torch.Tensor:
    """(rows, heads, tokens, head_dim) -> (rows, tokens, hidden)."""
    rows, _, tokens, _ = states.shape
    return states.transpose(1, 2).reshape(rows, tokens, -1)


def tokenize(processor: Any, prompt: str, device: torch.device) -> Any:
    return processor(text=[prompt], padding=True, return_tensors="pt").to(device)


def encode_tokens(model: Any, inputs: Mapping[str, torch.Tensor]) -> list[tuple[torch.Tensor, ...]]:
    """The text encoder over a tokenised prompt (``tokenize``), then every layer's cross-attention keys and
    values: (1, heads, tokens, head_dim)."""
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
    hidden = hidden * inputs["attention_mask"][..., None]
    heads = decoder_config.num_attention_heads
    return [
        (
            _split_heads(layer.encoder_attn.k_proj(hidden), heads),
            _split_heads(layer.encoder_attn.v_proj(hidden), heads),
        )
        for layer in model.decoder.model.decoder.layers
    ]


def runs(slots: Sequence[int], key: Callable[[int], int]) -> list[tuple[int, int, int]]:
    """Consecutive slots with the same ``key`` as (start, end, key) half-open runs."""
    groups: list[tuple[int, int, int]] = []
    for slot in slots:
        value = key(slot)
        if groups and groups[-1][1] == slot and groups[-1][2] == value:
            groups[-1] = (groups[-1][0], slot + 1, value)
        else:
            groups.append((slot, slot + 1, value))
    return groups


class DecodeStep:
    """The model's decoder modules applied to the first ``slots`` slots of a ``DecodeState``."""

    def __init__(self, model: Any) -> None:
        decoder = model.decoder.model.decoder
        config = model.decoder.config
        self.layers = decoder.layers
        self.embed_tokens = decoder.embed_tokens
        self.final_norm = decoder.layer_norm
        self.lm_heads = model.decoder.lm_heads
        self.heads = config.num_attention_heads
        self.embed_positions = decoder.embed_positions
        # MusicGen-Melody has no cross-attention: its conditioning is a prefix of the sequence instead.
        self.cross_attention = hasattr(self.layers[0], "encoder_attn")

    def ensure_positions(self, length: int) -> None:
        if self.embed_positions.weights.size(0) < length:  # as transformers does lazily
            self.embed_positions.make_weights(length, self.embed_positions.embedding_dim)

    def exact(self, state: DecodeState, slots: int, live: Sequence[int], positions: Sequence[int]) -> None:
        """One step, attention reading exactly each slot's written positions. ``live`` are the decoding
        slots (< ``slots``) and ``positions[slot]`` their host-side cache positions (prefix included)."""
        self_runs = runs(live, lambda slot: positions[slot])
        text_runs = runs(live, lambda slot: state.cache.text_tokens[slot])
        self._step(state, slots, ("exact", self_runs, text_runs))

    def masked(self, state: DecodeState, slots: int, length: int) -> None:
        """One step with fixed shapes: attention over ``length`` positions, masked per row."""
        self._step(state, slots, ("masked", length))

    def _step(self, state: DecodeState, slots: int, mode: tuple[Any, ...]) -> None:
        # Same arithmetic, in the same order, as MusicgenDecoder.forward for one new token per row.
        tokens = state.tokens[:slots]
        hidden = self.embed_tokens[0](tokens[:, 0])
        for codebook in range(1, len(self.embed_tokens)):
            hidden = hidden + self.embed_tokens[codebook](tokens[:, codebook])
        hidden = hidden[:, None].repeat_interleave(2, dim=0)  # rows 2i, 2i+1: slot i with and without text
        position = state.position[:slots]
        row_position = (position + state.prefix[:slots]).repeat_interleave(2)
        hidden = hidden + self.embed_positions.weights.index_select(0, row_position)[:, None]
        causal = None
        if mode[0] == "masked":
            causal = (torch.arange(mode[1], device=state.device) <= row_position[:, None]).view(
                2 * slots, 1, 1, -1
            )
        for index, layer in enumerate(self.layers):
            hidden = self._layer(state, index, layer, hidden, row_position, mode, causal)
        hidden = self.final_norm(hidden)
        logits = torch.stack([head(hidden) for head in self.lm_heads], dim=1)[:, :, 0].float()
        pairs = logits.view(slots, 2, *logits.shape[1:])
        state.nonfinite[:slots] |= ~torch.isfinite(pairs).flatten(1).all(dim=1)

        params = state.params.prefix(slots)
        scores = guide(pairs[:, 0], pairs[:, 1], params.guidance_scale)
        sampled = sample(filter_logits(scores, params), state.noise[:slots])
        # The delay pattern: codebook k of a C-codebook channel lags k steps, so at step t a slot emits a real
        # code for codebook k iff delay[k] <= t < delay[k] + frames, and the pad id everywhere else. Frames of
        # a window's prompt (``DecodeState.restart``) are already written: they are kept, not sampled.
        frame = position[:, None] - state.delay
        emitted = (frame >= 0) & (frame < state.frames[:slots, None])
        where = position[:, None, None].expand(slots, state.codebooks, 1)
        prompted = frame < state.prompt[:slots, None]
        sampled = torch.where(prompted, state.codes[:slots].gather(2, where)[:, :, 0], sampled)
        next_tokens = torch.where(emitted, sampled, state.start_token)
        tokens.copy_(next_tokens)
        state.codes[:slots].scatter_(2, where, next_tokens[:, :, None])
        position += state.live[:slots]

    def prefill(self, state: DecodeState, slot: int) -> None:
        """Keys and values of a restarted slot's prompt positions, after its prefix, all in one pass over the
        decoder (causal attention over the prompt, as transformers' ``generate`` prefills an audio prompt).
        Its rows only: the other slots are not touched."""
        context = int(state.prompt[slot])
        codes = state.codes[slot]
        inputs = torch.cat(
            [codes.new_full((state.codebooks, 1), state.start_token), codes[:, : context - 1]], 1
        )
        hidden = self.embed_tokens[0](inputs[0])
        for codebook in range(1, len(self.embed_tokens)):
            hidden = hidden + self.embed_tokens[codebook](inputs[codebook])
        hidden = hidden[None].repeat_interleave(2, dim=0)  # (2, context, hidden): with and without text
        self._prefill(state, slot, hidden, start=int(state.prefix[slot]))

    def prefill_prefix(self, state: DecodeState, slot: int, prefix: torch.Tensor) -> None:
        """Keys and values of a melody checkpoint's conditioning ``prefix`` (2, positions, hidden): the
        conditional and the unconditional row's (``engine.musicgen.prefix``). The slot's audio then starts
        after it, as ``generate`` puts the conditioning before the decoder's first token."""
        self._prefill(state, slot, prefix, start=0)
        state.prefix[slot] = prefix.shape[1]

    def _prefill(self, state: DecodeState, slot: int, hidden: torch.Tensor, start: int) -> None:
        """Run ``hidden`` (2, positions, hidden) through the decoder at cache positions ``start`` onwards of
        ``slot``'s two rows, attending causally to them and to everything before ``start``."""
        length = int(hidden.shape[1])
        end = start + length
        hidden = hidden + self.embed_positions.weights[start:end][None]
        causal = None
        if start:
            causal = (
                torch.arange(end, device=state.device)
                <= start + torch.arange(length, device=state.device)[:, None]
            )
        rows = slice(2 * slot, 2 * slot + 2)
        for index, layer in enumerate(self.layers):
            attention = layer.self_attn
            normed = layer.self_attn_layer_norm(hidden)
            query = _split_heads(attention.q_proj(normed), self.heads)
            state.cache.keys[index, rows, :, start:end] = _split_heads(attention.k_proj(normed), self.heads)
            state.cache.values[index, rows, :, start:end] = _split_heads(attention.v_proj(normed), self.heads)
            attended = F.scaled_dot_product_attention(
                query,
                state.cache.keys[index, rows, :, :end],
                state.cache.values[index, rows, :, :end],
                attn_mask=causal,
                is_causal=causal is None,
                scale=attention.scaling,
            )
            hidden = hidden + attention.out_proj(_merge_heads(attended))
            if self.cross_attention:
                tokens = state.cache.text_tokens[slot]
                attention = layer.encoder_attn
                conditional = hidden[0:1]
                query = _split_heads(attention.q_proj(layer.encoder_attn_layer_norm(conditional)), self.heads)
                attended = F.scaled_dot_product_attention(
                    query,
                    state.cache.cross_keys[index, slot : slot + 1, :, :tokens],
                    state.cache.cross_values[index, slot : slot + 1, :, :tokens],
                    scale=attention.scaling,
                )
                conditional += attention.out_proj(_merge_heads(attended))
            hidden = hidden + layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(hidden))))

    def _layer(
        self,
        state: DecodeState,
        index: int,
        layer: Any,
        hidden: torch.Tensor,
        row_position: torch.Tensor,
        mode: tuple[Any, ...],
        causal: torch.Tensor | None,
    ) -> torch.Tensor:
        attention = layer.self_attn
        normed = layer.self_attn_layer_norm(hidden)
        query = _split_heads(attention.q_proj(normed), self.heads)
        keys, values = state.cache.write(
            index,
            row_position,
            _split_heads(attention.k_proj(normed), self.heads),
            _split_heads(attention.v_proj(normed), self.heads),
        )
        if mode[0] == "masked":
            length = mode[1]
            attended = F.scaled_dot_product_attention(
                query, keys[:, :, :length], values[:, :, :length], attn_mask=causal, scale=attention.scaling
            )
        else:
            attended = torch.zeros_like(query)  # free slots in the prefix: finite filler nobody reads
            for start, end, position in mode[1]:
                rows = slice(2 * start, 2 * end)
                attended[rows] = F.scaled_dot_product_attention(
                    query[rows],
                    keys[rows, :, : position + 1],
                    values[rows, :, : position + 1],
                    scale=attention.scaling,
                )
        hidden = hidden + attention.out_proj(_merge_heads(attended))

        # Cross-attention, conditional rows only (see the module docstring), added in place.
        if self.cross_attention:
            attention = layer.encoder_attn
            conditional = hidden[0::2]
            query = _split_heads(attention.q_proj(layer.encoder_attn_layer_norm(conditional)), self.heads)
            cross_keys, cross_values = state.cache.cross_keys[index], state.cache.cross_values[index]
            slots = conditional.shape[0]
            if mode[0] == "masked":
                attended = F.scaled_dot_product_attention(
                    query,
                    cross_keys[:slots],
                    cross_values[:slots],
                    attn_mask=state.cache.cross_mask[:slots],
                    scale=attention.scaling,
                )
            else:
                attended = torch.zeros_like(query)
                for start, end, tokens in mode[2]:
                    attended[start:end] = F.scaled_dot_product_attention(
                        query[start:end],
                        cross_keys[start:end, :, :tokens],
                        cross_values[start:end, :, :tokens],
                        scale=attention.scaling,
                    )
            conditional += attention.out_proj(_merge_heads(attended))

        normed = layer.final_layer_norm(hidden)
        return hidden + layer.fc2(layer.activation_fn(layer.fc1(normed)))


@torch.inference_mode()
def decode_audio(model: Any, codes: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """EnCodec-decode each request's (codebooks, frames) codes to float32 (channels, samples); requests of
    equal length share a call.

    Stereo checkpoints interleave the left and right codebooks; each half is decoded on its own, as
    ``generate`` does.
    """
    codec = model.audio_encoder
    stereo = model.config.decoder.audio_channels == 2
    by_length: dict[int, list[int]] = defaultdict(list)
    for row, row_codes in enumerate(codes):
        by_length[row_codes.shape[-1]].append(row)
    audio: list[np.ndarray] = [np.empty(0)] * len(codes)
    for rows in by_length.values():
        batch = torch.stack([codes[row] for row in rows])[None]  # (1, rows, K, frames)
        halves = [batch[:, :, 0::2], batch[:, :, 1::2]] if stereo else [batch]
        values = torch.cat(
            [codec.decode(half, audio_scales=[None] * len(rows)).audio_values for half in halves], dim=1
        )
        for position, row in enumerate(rows):
            audio[row] = values[position].float().cpu().numpy()
    return audio
