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
    """The sampling parameters of a batch, one entry per request, as tensors on the decode device."""

    temperature: torch.Tensor  # (B,) float32
    top_k: torch.Tensor  # (B,) int64; the vocabulary size where top-k is off
    top_p: torch.Tensor  # (B,) float32; _TOP_P_OFF where top-p is off
    guidance_scale: torch.Tensor  # (B,) float32; at most 1 means no guidance for that row

    @classmethod
    def from_requests(
        cls, requests: Sequence[GenerationRequest], vocab_size: int, device: torch.device
    ) -> SamplingParams:
        def column(values: Iterable[float | int], dtype: torch.dtype) -> torch.Tensor:
            return torch.tensor(list(values), dtype=dtype, device=device)

        return cls(
            temperature=column((r.temperature for r in requests), torch.float32),
            # top_k 0 and top_p 0 (or 1) mean "off", as in audiocraft and the reference path.
            top_k=column((min(r.top_k, vocab_size) or vocab_size for r in requests), torch.int64),
            top_p=column((r.top_p if 0 < r.top_p < 1 else _TOP_P_OFF for r in requests), torch.float32),
            guidance_scale=column((r.guidance_scale for r in requests), torch.float32),
        )


def uses_guidance(requests: Sequence[GenerationRequest]) -> bool:
    """Whether any row needs the unconditional half of the batch (transformers guides only above 1)."""
    return any(request.guidance_scale > 1 for request in requests)


def guide(logits: torch.Tensor, guidance_scale: torch.Tensor) -> torch.Tensor:
    """Classifier-free guidance: ``logits`` (2B, K, V) holds the conditional rows, then the unconditional.

    Rows with a scale of at most 1 take their conditional logits unchanged, as ``generate`` does for them.
    """
    cond, uncond = logits.chunk(2)
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
    kept = (probs.cumsum(dim=-1) - probs < params.top_p[:, None, None]).sum(dim=-1)
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
