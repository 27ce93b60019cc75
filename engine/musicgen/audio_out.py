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
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from engine.backend import Outcome
from engine.musicgen.continuation import splice
from engine.musicgen.decode import decode_audio
from engine.musicgen.encoding import wait_for_any
from engine.musicgen.piece import decode_piece
from engine.musicgen.rows import Row
from engine.results import audio_outcome

# How long a step with nothing left to decode waits for audio before returning (new requests are admitted
# at step boundaries, so it must not block for a whole decode).
WAIT_S = 0.05


class AudioOut:
    """Decodes finished rows' audio, each on its own, inline or on its thread; ``ready`` hands over the
    outcomes.

    Each row is decoded alone, never batched with others of its length: a batched EnCodec call differs from
    a single one in the last bits, and a request's audio must not depend on which others finished with it
    (batching saved ~5 % here). A row whose decode has not started yet can be taken back by the stepping
    thread (``ready(steal=True)``) when it has nothing to step, so the last requests of a burst decode on
    both cores."""

    def __init__(self, model: Any, *, sample_rate: int, channels: int, dtype: str, background: bool) -> None:
        self._model = model
        self._sample_rate = sample_rate
        self._channels = channels
        self._dtype = dtype
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="audio-out") if background else None
        self._pending: list[tuple[Row, Future[Outcome]]] = []
        self._done: list[Outcome] = []

    def submit(self, rows: list[Row]) -> None:
        """Start decoding ``rows`` (codes set, values finite); their outcomes come from ``ready``."""
        for row in rows:
            if self._thread is None:
                self._done.append(self._outcome(row))
            else:
                self._pending.append((row, self._thread.submit(self._outcome, row)))

    def ready(self, wait_s: float = 0.0, *, steal: bool = False) -> list[Outcome]:
        """Outcomes decoded so far (a decode that raised fails its request). ``steal``: first decode here
        the most recently queued row the thread has not started on; else wait up to ``wait_s`` for one
        when none is done."""
        for entry in reversed(self._pending if steal else []):
            if entry[1].cancel():  # the thread has not started on it: decode it here instead
                self._pending.remove(entry)
                self._done.append(self._outcome(entry[0]))
                break
        if wait_s > 0 and not self._done:
            wait_for_any([future for _, future in self._pending], wait_s)
        outcomes, self._done = self._done, []
        for entry in [entry for entry in self._pending if entry[1].done()]:
            self._pending.remove(entry)
            outcomes.append(entry[1].result())
        return outcomes

    @property
    def busy(self) -> bool:
        return bool(self._pending or self._done)

    def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)

    def _outcome(self, row: Row) -> Outcome:
        try:
            with torch.inference_mode():
                samples = self._decode(row)
        except Exception as error:  # fail this request, not the worker: its batch-mates carry on
            message = f"decoding the audio failed ({type(error).__name__}: {error}); please report it"
            return Outcome(row.request_id, "failed", error=message)
        return audio_outcome(
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

    def _decode(self, row: Row) -> np.ndarray:
        """The row's audio at its exact length: a one-window piece in one ``decode_audio`` call, a longer one
        whole (``decode_piece``); a continuation spliced onto the user's audio."""
        assert row.codes is not None
        if len(row.windows.windows) == 1 and row.continuation is None:
            whole = decode_audio(self._model, [row.codes])[0]
        else:
            whole = decode_piece(self._model, row.codes)
        if row.continuation is None:
            return whole[:, : row.samples]
        return splice(
            row.continuation.prompt.audio,
            whole,
            prompt_samples=row.prompt_samples,
            added_samples=row.samples,
            sample_rate=self._sample_rate,
        )
