"""Long pieces as windowed continuation: which frames each window decodes and which it is prompted with.

MusicGen is trained on 30 s windows. A longer piece (audiocraft's ``extend_stride``) is decoded window by
window: the first generates up to a full window; every later one is prompted with the last
``context_frames`` codes of the piece so far and generates up to ``window_frames - context_frames`` new
frames. A continuation (a user's audio as the first prompt) starts the same way, its prompt frames as the
first window's context. On a melody checkpoint each window is also conditioned on the tune where it starts
(``engine.musicgen.prefix``). Everything here is integer arithmetic on codec frames, so the plan's total is
exact: the new frames of all windows add up to the piece's frames.

Steps count what the decode loop samples: a window prefills its context and then takes its new frames plus the
delay pattern's tail (``Plan.steps`` for a window without context). Progress over a whole piece is the sum
over windows, known before the first step and so monotonic from a single total.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

WINDOW_SECONDS = 30.0
CONTEXT_SECONDS = 10.0  # default; requests may choose within CONTEXT_RANGE
CONTEXT_RANGE = (2.0, 20.0)
MAX_PIECE_SECONDS = 300.0
# A continuation prompt longer than this is cut to its end: its first window must still generate a second.
MAX_PROMPT_SECONDS = WINDOW_SECONDS - 1.0


@dataclass(frozen=True)
class Window:
    """One window of a piece: it is prompted with ``context_frames`` frames that end at ``start`` and
    generates the piece's frames [``start``, ``start + new_frames``)."""

    index: int
    start: int  # first new frame, in the piece's frame numbering (a continuation prompt's frames come first)
    context_frames: int
    new_frames: int
    steps: int  # decode steps: new frames plus the delay tail

    @property
    def frames(self) -> int:
        """Frames the window holds in the decoder: its context and its new frames."""
        return self.context_frames + self.new_frames

    @property
    def first_frame(self) -> int:
        """The piece's frame at the start of the window's context: where the window starts in the piece."""
        return self.start - self.context_frames

    @property
    def end(self) -> int:
        return self.start + self.new_frames

    def prompt(self, piece_codes: torch.Tensor) -> torch.Tensor:
        """This window's prompt: the ``context_frames`` codes of ``piece_codes`` (codebooks, frames so far)
        just before ``start``."""
        if piece_codes.shape[-1] < self.start:
            raise ValueError(
                f"window {self.index} starts at frame {self.start}; only {piece_codes.shape[-1]} exist"
            )
        return piece_codes[..., self.first_frame : self.start]


@dataclass(frozen=True)
class WindowPlan:
    windows: tuple[Window, ...]
    prompt_frames: int  # frames of a continuation prompt before the first new frame (0 for a new piece)

    @property
    def new_frames(self) -> int:
        return sum(window.new_frames for window in self.windows)

    @property
    def total_frames(self) -> int:
        """Frames of the whole piece: the prompt's and all new ones."""
        return self.prompt_frames + self.new_frames

    @property
    def steps(self) -> int:
        return sum(window.steps for window in self.windows)

    @property
    def positions(self) -> int:
        """Decode positions a slot needs for the longest window (its prompt included)."""
        return max(window.context_frames + window.steps for window in self.windows)

    def steps_before(self, index: int) -> int:
        """Decode steps of the windows before window ``index``: added to that window's own count, the piece's
        progress."""
        return sum(window.steps for window in self.windows[:index])


def plan_windows(
    new_frames: int,
    *,
    window_frames: int,
    context_frames: int,
    delay_tail: int,
    prompt_frames: int = 0,
) -> WindowPlan:
    """The windows that generate ``new_frames`` frames after ``prompt_frames`` prompt frames, each holding
    at most ``window_frames`` frames, every window after the first prompted with ``context_frames``."""
    if new_frames < 1:
        raise ValueError(f"new_frames must be at least 1 (got {new_frames})")
    if not 0 < context_frames < window_frames:
        raise ValueError(f"context_frames must be in [1, {window_frames - 1}] (got {context_frames})")
    if not 0 <= prompt_frames < window_frames:
        raise ValueError(f"prompt_frames must be in [0, {window_frames - 1}] (got {prompt_frames})")
    windows: list[Window] = []
    start, context = prompt_frames, prompt_frames
    while start < prompt_frames + new_frames:
        new = min(window_frames - context, prompt_frames + new_frames - start)
        windows.append(Window(len(windows), start, context, new, new + delay_tail))
        start += new
        context = context_frames
    return WindowPlan(tuple(windows), prompt_frames)


def frames_for(seconds: float, sample_rate: int, frame_samples: int) -> int:
    """Codec frames that cover ``seconds`` of audio (the last one possibly in part), as ``Plan`` counts."""
    return -(-round(seconds * sample_rate) // frame_samples)


def plan_piece(
    seconds: float,
    *,
    sample_rate: int,
    frame_samples: int,
    delay_tail: int,
    context_seconds: float = CONTEXT_SECONDS,
    window_seconds: float = WINDOW_SECONDS,
    prompt_frames: int = 0,
) -> WindowPlan:
    """``plan_windows`` for ``seconds`` of new audio, in seconds as a request gives them. The context is a
    whole number of frames (rounded down from ``context_seconds``)."""
    frame_rate = sample_rate / frame_samples
    return plan_windows(
        frames_for(seconds, sample_rate, frame_samples),
        window_frames=math.floor(window_seconds * frame_rate),
        context_frames=math.floor(context_seconds * frame_rate),
        delay_tail=delay_tail,
        prompt_frames=prompt_frames,
    )
