"""An admitted request's conditioning, encoded off the decode loop: its text's cross-attention keys and values
and a continuation's prompt codes.

Admitting a text-conditioned request runs the T5 text encoder and every decoder layer's cross-attention key
and value projections (0.12–0.25 s of one core on the project's VM); a continuation's prompt audio is also
EnCodec-encoded. Inline, each arrival stalled every running row for a step or two, and a burst of eight
stalled the batch for ~2 s. On a CPU the encoding runs on a thread of its own: the slot is reserved when the
request is admitted, the batch steps on, and the row starts decoding at the first step boundary after its
conditioning is ready (``MusicgenBackend``). Whatever writes into the shared decode state (the slot's keys and
values, a continuation's prefill, a melody checkpoint's prefix) stays on the stepping thread, and so does
tokenising (a fast tokenizer may not be called from two threads at once). On CUDA the encoding stays inline:
it takes milliseconds there, and a second thread launching kernels would break a graph capture.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from engine.musicgen.continuation import PromptCodes, encode_prompt
from engine.musicgen.decode import encode_tokens


@dataclass(frozen=True)
class Conditioning:
    """What a request's slot is started with."""

    text: list[tuple[torch.Tensor, ...]]  # each layer's cross-attention (keys, values); none on melody models
    prompt: PromptCodes | None  # a continuation's prompt, as codes


class ConditioningEncoder:
    """Encodes admitted requests' conditioning inline or on its thread; ``submit`` returns a future."""

    def __init__(self, model: Any, *, background: bool) -> None:
        self._model = model
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="conditioning") if background else None

    def submit(
        self, tokens: Mapping[str, torch.Tensor] | None, prompt_audio: np.ndarray | None
    ) -> Future[Conditioning]:
        """Encode ``tokens`` (the tokenised prompt; None where the model has no cross-attention) and
        ``prompt_audio`` (a continuation's, or None)."""
        if self._thread is not None:
            return self._thread.submit(self._encode, tokens, prompt_audio)
        future: Future[Conditioning] = Future()
        try:
            future.set_result(self._encode(tokens, prompt_audio))
        except Exception as error:  # reported through the future, as on the thread
            future.set_exception(error)
        return future

    def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)

    def _encode(
        self, tokens: Mapping[str, torch.Tensor] | None, prompt_audio: np.ndarray | None
    ) -> Conditioning:
        with torch.inference_mode():
            text = [] if tokens is None else encode_tokens(self._model, tokens)
            prompt = None if prompt_audio is None else encode_prompt(self._model, prompt_audio)
        return Conditioning(text=text, prompt=prompt)


def wait_for_any(futures: Sequence[Future[Any]], timeout: float) -> None:
    """Block until one of ``futures`` is done or ``timeout`` seconds passed (at once when one already is)."""
    if futures and not any(future.done() for future in futures):
        wait(futures, timeout=timeout, return_when=FIRST_COMPLETED)
