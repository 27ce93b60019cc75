"""One denoising step for a batch of songs that may be at different steps of their own schedules.

The DiT takes a timestep per batch row, so songs admitted at different times share one forward pass. Their
condition sequences differ in length; they are right-padded to the longest and the padding is hidden from
cross-attention with a key mask. ``AceStepTransformer1DModel.forward`` passes no mask to its cross-attention
(the pipeline never pads within a request), so ``CrossAttentionMask`` adds it with a forward pre-hook on each
block's ``cross_attn``, leaving the model's own forward otherwise as diffusers wrote it. With one song, or
songs of equal condition lengths, no mask is set and the forward is exactly the pipeline's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Row:
    """One DiT input row: a song's latents with one of its conditionings."""

    latents: torch.Tensor  # (1, T, A)
    timestep: float
    states: torch.Tensor  # (1, S, H)
    context: torch.Tensor  # (1, T, 2A)


class CrossAttentionMask:
    """Hides padded condition positions from the cross-attentions of ``transformer`` while ``mask`` is set."""

    def __init__(self, transformer: Any) -> None:
        self.mask: torch.Tensor | None = None
        for block in transformer.layers:
            if block.use_cross_attention:
                block.cross_attn.register_forward_pre_hook(self._inject, with_kwargs=True)

    def _inject(self, module: Any, args: Any, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        if self.mask is not None:
            kwargs["attention_mask"] = self.mask
        return args, kwargs


def predict(transformer: Any, mask: CrossAttentionMask, rows: Sequence[Row]) -> list[torch.Tensor]:
    """The DiT's velocity for every row, (1, T, A) each, from one forward pass."""
    longest = max(row.states.shape[1] for row in rows)
    lengths = [row.states.shape[1] for row in rows]
    states = torch.cat(
        [torch.nn.functional.pad(row.states, (0, 0, 0, longest - row.states.shape[1])) for row in rows]
    )
    dtype = transformer.dtype
    timesteps = torch.tensor([row.timestep for row in rows], device=states.device, dtype=dtype)
    if min(lengths) < longest:
        keep = (
            torch.arange(longest, device=states.device)[None, :]
            < torch.tensor(lengths, device=states.device)[:, None]
        )
        mask.mask = keep[:, None, None, :]  # (B, 1, 1, S): broadcast over heads and queries
    try:
        velocity = transformer(
            hidden_states=torch.cat([row.latents for row in rows]),
            timestep=timesteps,
            timestep_r=timesteps,
            encoder_hidden_states=states,
            context_latents=torch.cat([row.context for row in rows]),
            return_dict=False,
        )[0]
    finally:
        mask.mask = None
    return list(velocity.split(1))
