"""Finished rows to outcomes: EnCodec-decode their codes, splice continuations onto the user's audio, check
and post-process the samples (``engine.results``).

On a CPU this runs on a thread of its own, so the decoder keeps stepping the other rows while a finished
request's audio is decoded: a 2 s request's EnCodec decode takes ~0.4 s of one core on the project's VM,
as long as three decode steps of a full batch, and inline every request that finished stalled all of its
batch-mates. With torch on one thread per step the second core does the decoding. On CUDA the decode is a
few milliseconds and stays inline (a second thread launching kernels while a CUDA graph is captured would
break the capture).
"""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import numpy as np
import torch

from engine.backend import Outcome
from engine.musicgen.continuation import splice
from engine.musicgen.decode import decode_audio
from engine.musicgen.piece import decode_piece
from engine.musicgen.rows import Row
from engine.results import audio_outcome

# How long a step with nothing left to decode waits for audio before returning (new requests are admitted
# at step boundaries, so it must not block for a whole decode).
WAIT_S = 0.05


class AudioOut:
    """Decodes finished rows' audio inline or on its thread; ``ready`` hands over the outcomes."""

    def __init__(self, model: Any, *, sample_rate: int, channels: int, dtype: str, background: bool) -> None:
        self._model = model
        self._sample_rate = sample_rate
        self._channels = channels
        self._dtype = dtype
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="audio-out") if background else None
        self._pending: list[Future[list[Outcome]]] = []
        self._done: list[Outcome] = []

    def submit(self, rows: list[Row]) -> None:
        """Start decoding ``rows`` (codes set, values finite); their outcomes come from ``ready``."""
        if self._thread is None:
            self._done.extend(self._outcomes(rows))
        else:
            self._pending.append(self._thread.submit(self._outcomes, rows))

    def ready(self, wait_s: float = 0.0) -> list[Outcome]:
        """Outcomes decoded so far (a decode that raised fails its requests), waiting up to ``wait_s`` for
        one when none is."""
        if self._pending and wait_s > 0 and not any(future.done() for future in self._pending):
            wait(self._pending, timeout=wait_s, return_when=FIRST_COMPLETED)
        outcomes, self._done = self._done, []
        for future in [future for future in self._pending if future.done()]:
            self._pending.remove(future)
            outcomes.extend(future.result())
        return outcomes

    @property
    def busy(self) -> bool:
        return bool(self._pending or self._done)

    def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)

    def _outcomes(self, rows: list[Row]) -> list[Outcome]:
        try:
            with torch.inference_mode():
                decoded = self._decode(rows)
        except Exception as error:  # fail these requests, not the worker: their batch-mates carry on
            message = f"decoding the audio failed ({type(error).__name__}: {error}); please report it"
            return [Outcome(row.request_id, "failed", error=message) for row in rows]
        return [
            audio_outcome(
                row.request_id,
                samples,
                sample_rate=self._sample_rate,
                expected_shape=(self._channels, samples.shape[1]),
                target_lufs=row.request.loudness_lufs,
                seed=row.seed,
                steps=row.windows.steps,
                seconds=time.perf_counter() - row.admitted_at,
                dtype=self._dtype,
            )
            for row, samples in zip(rows, decoded, strict=True)
        ]

    def _decode(self, rows: list[Row]) -> list[np.ndarray]:
        """Each row's audio at its exact length: one-window pieces share ``decode_audio`` calls; longer
        pieces are decoded whole (``decode_piece``); a continuation is spliced onto the user's audio."""
        single = [row for row in rows if len(row.windows.windows) == 1 and row.continuation is None]
        decoded = dict(
            zip(
                (row.request_id for row in single),
                decode_audio(self._model, [row.codes for row in single if row.codes is not None]),
                strict=True,
            )
        )
        audio = []
        for row in rows:
            assert row.codes is not None
            whole = decoded.get(row.request_id)
            if whole is None:
                whole = decode_piece(self._model, row.codes)
            if row.continuation is None:
                audio.append(whole[:, : row.samples])
                continue
            audio.append(
                splice(
                    row.continuation.prompt.audio,
                    whole,
                    prompt_samples=row.prompt_samples,
                    added_samples=row.samples,
                    sample_rate=self._sample_rate,
                )
            )
        return audio
