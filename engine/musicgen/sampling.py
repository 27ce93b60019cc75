"""Per-row logits processing and sampling for a batch of requests with different parameters.

Everything here is tensor code on the logits' device, with no host round-trip and no Python loop over rows,
so it can run inside a captured CUDA graph. The order of the filters is transformers' order (classifier-free
guidance, temperature, top-k, top-p), with the same semantics, so a request samples from the same distribution
on this path as on ``generate``'s.

Randomness comes in from outside as one buffer of Exp(1) noise per row, drawn from that request's own
``torch.Generator`` (``draw_noise``): a row's samples depend on its seed and its logits, never on which other
requests share the batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from engine.request import GenerationRequest

_TOP_P_OFF = 2.0  # a threshold no cumulative probability reaches: the filter keeps everything


@dataclass(frozen=True)
class SamplingParams:
    """Per-slot sampling parameters as tensors on the decode device, written in place as requests join."""

    temperature: torch.Tensor  # (slots,) float32
    top_k: torch.Tensor  # (slots,) int64; the vocabulary size where top-k is off
    top_p: torch.Tensor  # (slots,) float32; _TOP_P_OFF where top-p is off
    guidance_scale: torch.Tensor  # (slots,) float32; at most 1 means no guidance for that row

    @classmethod
    def empty(cls, slots: int, vocab_size: int, device: torch.device) -> SamplingParams:
        """Neutral values (plain sampling) in every slot, so an unused slot computes finite numbers."""
        return cls(
            temperature=torch.ones(slots, device=device),
            top_k=torch.full((slots,), vocab_size, dtype=torch.int64, device=device),
            top_p=torch.full((slots,), _TOP_P_OFF, device=device),
            guidance_scale=torch.ones(slots, device=device),
        )

    @classmethod
    def from_requests(
        cls, requests: Sequence[GenerationRequest], vocab_size: int, device: torch.device
    ) -> SamplingParams:
        params = cls.empty(len(requests), vocab_size, device)
        for slot, request in enumerate(requests):
            params.write(slot, request, vocab_size)
        return params

    def write(self, slot: int, request: GenerationRequest, vocab_size: int) -> None:
        """Put ``request``'s parameters in ``slot``. top_k 0 and top_p 0 (or 1) mean "off", as in audiocraft
        and the reference path."""
        self.temperature[slot] = request.temperature
        self.top_k[slot] = min(request.top_k, vocab_size) or vocab_size
        self.top_p[slot] = request.top_p if 0 < request.top_p < 1 else _TOP_P_OFF
        self.guidance_scale[slot] = request.guidance_scale

    def prefix(self, slots: int) -> SamplingParams:
        """The first ``slots`` slots (views: writes through them reach the buffers)."""
        return SamplingParams(
            self.temperature[:slots], self.top_k[:slots], self.top_p[:slots], self.guidance_scale[:slots]
        )


def guide(cond: torch.Tensor, uncond: torch.Tensor, guidance_scale: torch.Tensor) -> torch.Tensor:
    """Classifier-free guidance of (B, K, V) conditional and unconditional logits, per row.

    Rows with a scale of at most 1 take their conditional logits unchanged, as ``generate`` does for them.
    """
    scale = guidance_scale[:, None, None]
    guided = uncond + (cond - uncond) * scale  # transformers' ClassifierFreeGuidanceLogitsProcessor, verbatim
    return torch.where(scale > 1, guided, cond)


def filter_logits(scores: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Temperature, then top-k, then top-p, per row: scores (B, K, V) with the removed tokens at -inf."""
    scores = scores / params.temperature[:, None, None]
    ordered = scores.sort(dim=-1, descending=True).values
    rows, codebooks, _ = scores.shape

    def nth_largest(n: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return values.gather(-1, (n - 1).view(rows, -1, 1).expand(rows, codebooks, 1))

    # Like transformers' TopKLogitsWarper: everything below the k-th largest score goes, ties with it stay.
    kth = nth_largest(params.top_k, ordered)
    ordered = ordered.masked_fill(ordered < kth, float("-inf"))
    # Top-p keeps the shortest prefix of the sorted tokens whose mass reaches p: a token stays while the mass
    # strictly before it is below p, so the most likely one always stays.
    probs = ordered.softmax(dim=-1)
    # (At least one even when the logits are NaN, so a broken row still indexes in range and can be failed.)
    kept = (probs.cumsum(dim=-1) - probs < params.top_p[:, None, None]).sum(dim=-1).clamp_min(1)
    threshold = torch.maximum(kth, nth_largest(kept, ordered))
    return scores.masked_fill(scores < threshold, float("-inf"))


def sample(scores: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """One token per (row, codebook) from softmax(scores), given Exp(1) noise of the same shape.

    Gumbel-max: argmax(scores - log E) is distributed exactly as softmax(scores). Removed tokens stay at -inf,
    so top_k=1 is plain greedy decoding whatever the noise.
    """
    gumbel = noise.clamp_min(torch.finfo(noise.dtype).tiny).log()
    return (scores - gumbel).argmax(dim=-1)


def draw_noise(noise: torch.Tensor, generators: Sequence[torch.Generator], rows: Iterable[int]) -> None:
    """Fill ``noise[i]`` with fresh Exp(1) draws from request i's own generator, for each of ``rows``."""
    for row in rows:
        noise[row].exponential_(generator=generators[row])
