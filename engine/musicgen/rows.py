"""What ``MusicgenBackend`` keeps about each request it holds, which slot each decodes in, and each step it
has launched."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch

from engine.backend import Progress
from engine.musicgen.encoding import Conditioning
from engine.musicgen.prefix import Melody
from engine.musicgen.requests import Continuation
from engine.musicgen.windows import WindowPlan
from engine.request import GenerationRequest


@dataclass
class Row:
    """A held request: where it decodes, how far it is, and its codes once its last step is launched.

    A piece longer than one window decodes its windows one after another in the same slot: when a window's
    last step is launched its new codes join ``piece`` and the slot restarts, prompted with the piece's
    last context frames (``WindowPlan``), while the other slots carry on; a melody row's conditioning prefix
    is rewritten first, with the chroma of the tune where the window starts."""

    request_id: str
    request: GenerationRequest
    windows: WindowPlan
    samples: int  # audio samples generated (added, for a continuation)
    seed: int
    generator: torch.Generator
    slot: int | None  # None once its last step is launched (the slot is free again)
    admitted_at: float
    piece: torch.Tensor  # (codebooks, frames) so far: a continuation's prompt codes, then every window's
    continuation: Continuation | None = None
    melody: Melody | None = None  # the tune a melody request follows, for each window's prefix
    prefix: int = 0  # decoder positions before the slot's audio (a melody checkpoint's conditioning)
    prompt_samples: int = 0  # samples the prompt codes encode (the end of the continuation's audio)
    window: int = 0  # index of the window decoding now
    position: int = 0  # the slot's position in its window
    in_window: int = 0  # steps of the current window handed to the device
    launched: int = 0  # steps handed to the device, over all windows
    done: int = 0  # steps the device has finished, over all windows
    codes: torch.Tensor | None = None
    nonfinite: torch.Tensor | None = None
    conditioning: Future[Conditioning] | None = None  # still being encoded: the row does not decode yet

    def progress(self) -> Progress:
        """Steps the device has finished, of all the windows', and the phase they put the request in."""
        total = self.windows.steps
        if self.conditioning is not None:
            return Progress(done=self.done, total=total, phase="encoding the prompt")
        count = len(self.windows.windows)
        phase = "decoding" if self.done < total else "decoding audio"
        if count > 1 and self.done < total:
            window = next(
                w for w in self.windows.windows if self.windows.steps_before(w.index + 1) > self.done
            )
            phase = f"decoding window {window.index + 1} of {count}"
        return Progress(done=self.done, total=total, phase=phase)


@dataclass
class Launch:
    """One launched step: which rows it advanced, and (on CUDA) the event that marks it finished."""

    rows: list[Row]
    event: Any = None
    finishing: list[Row] = field(default_factory=list)


class SlotTable:
    """Which held request decodes in which slot; a free slot is None, and slots are taken lowest first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity  # the batch-size cap
        self._rows: list[Row | None] = []  # as many as the buffers have slots

    def free(self) -> int | None:
        """The lowest free slot (one past the buffers' when they are full but the cap allows more); None
        when ``capacity`` requests hold slots."""
        for slot, row in enumerate(self._rows):
            if row is None:
                return slot
        held = sum(row is not None for row in self._rows)
        return len(self._rows) if held < self.capacity else None

    def live(self) -> list[Row]:
        return [row for row in self._rows if row is not None]

    def take(self, slot: int, row: Row) -> None:
        self._rows[slot] = row

    def release(self, row: Row) -> int:
        """Free ``row``'s slot; the slot it had."""
        assert row.slot is not None
        slot = row.slot
        self._rows[slot] = None
        row.slot = None
        return slot

    def extend(self, slots: int) -> None:
        """The buffers now hold ``slots`` slots."""
        self._rows.extend([None] * (slots - len(self._rows)))
