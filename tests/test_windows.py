"""Window plans for long pieces: exact lengths, one monotonic step count, and every window prompted with the
tail of the codes before it."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.musicgen.windows import (
    MAX_PIECE_SECONDS,
    MAX_PROMPT_SECONDS,
    WindowPlan,
    plan_piece,
    plan_windows,
)

RATE, HOP, TAIL = 32_000, 640, 3  # MusicGen: 50 frames a second, 4 codebooks' delay


def _run(plan: WindowPlan, prompt: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Apply ``plan`` to codes as the decode loop will: each window sees its prompt, then appends new codes.
    Returns the piece's codes and each window's own codes (prompt + new)."""
    generator = torch.Generator().manual_seed(seed)
    piece = prompt
    window_codes = []
    for window in plan.windows:
        context = window.prompt(piece)
        assert context.shape[-1] == window.context_frames
        new = torch.randint(0, 2048, (4, window.new_frames), generator=generator)
        window_codes.append(torch.cat([context, new], dim=-1))
        piece = torch.cat([piece, new], dim=-1)
    return piece, window_codes


def test_75_seconds_with_the_default_context() -> None:
    plan = plan_piece(75, sample_rate=RATE, frame_samples=HOP, delay_tail=TAIL)
    assert [(w.start, w.context_frames, w.new_frames) for w in plan.windows] == [
        (0, 0, 1500),
        (1500, 500, 1000),
        (2500, 500, 1000),
        (3500, 500, 250),
    ]
    assert plan.total_frames == 3750 and plan.steps == 3750 + 4 * TAIL
    assert all(window.frames <= 1500 for window in plan.windows)
    assert [plan.steps_before(i) for i in range(4)] == [0, 1503, 2506, 3509]


def test_context_seconds_sets_the_number_of_windows() -> None:
    assert (
        len(plan_piece(75, sample_rate=RATE, frame_samples=HOP, delay_tail=TAIL, context_seconds=5).windows)
        == 3
    )
    assert len(plan_piece(30, sample_rate=RATE, frame_samples=HOP, delay_tail=TAIL).windows) == 1
    longest = plan_piece(
        MAX_PIECE_SECONDS, sample_rate=RATE, frame_samples=HOP, delay_tail=TAIL, context_seconds=20
    )
    assert longest.total_frames == 15_000 and len(longest.windows) == 1 + 13_500 // 500


def test_a_continuation_prompt_is_the_first_windows_context() -> None:
    plan = plan_piece(10, sample_rate=RATE, frame_samples=HOP, delay_tail=TAIL, prompt_frames=250)
    assert [(w.start, w.context_frames, w.new_frames) for w in plan.windows] == [(250, 250, 500)]
    longest_prompt = int(MAX_PROMPT_SECONDS * 50)
    plan = plan_piece(60, sample_rate=RATE, frame_samples=HOP, delay_tail=TAIL, prompt_frames=longest_prompt)
    assert [(w.context_frames, w.new_frames) for w in plan.windows][:2] == [(1450, 50), (500, 1000)]
    assert plan.total_frames == 1450 + 3000
    prompt = torch.randint(0, 2048, (4, 1450))
    piece, windows = _run(plan, prompt)
    assert torch.equal(windows[0][:, :1450], prompt) and torch.equal(piece[:, :1450], prompt)


@settings(max_examples=60, deadline=None)
@given(
    seconds=st.floats(1, MAX_PIECE_SECONDS),
    context_seconds=st.floats(2, 20),
    prompt_frames=st.one_of(st.just(0), st.integers(50, 1450)),
)
def test_windows_chain_their_codes_and_add_up_exactly(
    seconds: float, context_seconds: float, prompt_frames: int
) -> None:
    plan = plan_piece(
        seconds,
        sample_rate=RATE,
        frame_samples=HOP,
        delay_tail=TAIL,
        context_seconds=context_seconds,
        prompt_frames=prompt_frames,
    )
    frames = -(-round(seconds * RATE) // HOP)  # what Plan.for_duration counts for a one-window piece
    assert plan.new_frames == frames and plan.total_frames == prompt_frames + frames
    assert plan.steps == frames + TAIL * len(plan.windows)
    assert all(w.frames <= 1500 and w.new_frames >= 1 for w in plan.windows)
    piece, windows = _run(plan, torch.randint(0, 2048, (4, prompt_frames)))
    assert piece.shape[-1] == plan.total_frames
    for before, after, codes_before in zip(plan.windows, plan.windows[1:], windows, strict=False):
        assert after.start == before.end and after.context_frames == int(context_seconds * 50)
        # The prompt of window k+1 is the tail of window k's codes.
        assert torch.equal(after.prompt(piece), codes_before[:, -after.context_frames :])
    progress = [
        plan.steps_before(i) + step for i, w in enumerate(plan.windows) for step in range(1, w.steps + 1)
    ]
    assert progress == list(range(1, plan.steps + 1))  # monotonic, ending at the one total


def test_bad_plans_are_refused() -> None:
    with pytest.raises(ValueError, match="new_frames"):
        plan_windows(0, window_frames=1500, context_frames=500, delay_tail=TAIL)
    with pytest.raises(ValueError, match="context_frames"):
        plan_windows(10, window_frames=1500, context_frames=1500, delay_tail=TAIL)
    with pytest.raises(ValueError, match="prompt_frames"):
        plan_windows(10, window_frames=1500, context_frames=500, delay_tail=TAIL, prompt_frames=1500)
    plan = plan_windows(2000, window_frames=1500, context_frames=500, delay_tail=TAIL)
    with pytest.raises(ValueError, match="starts at frame 1500"):
        plan.windows[1].prompt(torch.zeros(4, 1000))
