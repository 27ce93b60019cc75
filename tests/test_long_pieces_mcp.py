"""Long pieces and continuation end to end: a real MCP client driving `dgx-music serve` over stdio on the tiny
checkpoint, the WAVs measured on disk, lineage read back through job_status and list_history."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from mcp import Client, StdioServerParameters
from mcp_testing import DGX_MUSIC, error_text, server_env, structured

from engine.audio import integrated_loudness

pytestmark = pytest.mark.anyio


def _params(home: Path, checkpoint: Path) -> StdioServerParameters:
    return StdioServerParameters(command=DGX_MUSIC, args=["serve"], env=server_env(home, checkpoint))


def _wav(job: dict[str, Any]) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(job["audio"]["path"], always_2d=True, dtype="float32")
    return samples.T, rate


@pytest.mark.slow
async def test_a_75_second_piece_in_three_windows(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """context_seconds=7.5 makes 75 s exactly three windows (30 + 22.5 + 22.5 s new)."""
    updates: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total, message))

    async with Client(_params(tmp_path / "home", tiny_checkpoint)) as client:
        result = await client.call_tool(
            "generate_music",
            {"prompt": "long ambient drone", "duration": 75, "context_seconds": 7.5, "seed": 4},
            progress_callback=on_progress,
            read_timeout_seconds=None,
        )
        [job] = structured(result)["jobs"]
        if job["status"] != "completed":
            job = structured(
                await client.call_tool(
                    "job_status",
                    {"job_id": job["job_id"], "wait_seconds": 300},
                    progress_callback=on_progress,
                )
            )
    assert job["status"] == "completed", job
    audio, rate = _wav(job)
    assert audio.shape[1] == 75 * rate  # 75.00 s exactly
    assert integrated_loudness(audio, rate) == pytest.approx(-14, abs=0.5)
    progress = [value for value, _, _ in updates]
    assert progress == sorted(progress)
    messages = " ".join(message or "" for _, _, message in updates)
    assert "window 1 of 3" in messages and "window 3 of 3" in messages


@pytest.mark.slow  # keeps the default suite near 10 min; .ci/run runs it
async def test_extending_a_job_keeps_its_audio_and_records_the_lineage(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    async with Client(_params(home, tiny_checkpoint)) as client:
        [parent] = structured(
            await client.call_tool(
                "generate_music", {"prompt": "a short riff", "duration": 5, "seed": 2, "wait_seconds": 300}
            )
        )["jobs"]
        assert parent["status"] == "completed"
        [child] = structured(
            await client.call_tool(
                "extend_music", {"job_id": parent["job_id"], "seconds": 10, "wait_seconds": 300}
            )
        )["jobs"]
        assert child["status"] == "completed", child
        assert child["prompt"] == "a short riff"  # the parent's prompt by default
        assert child["lineage"]["operation"] == "continue"
        assert child["lineage"]["parent_id"] == parent["job_id"]

        # An input file and inline base64 work the same way and are named by file name and sha256.
        riff, rate = _wav(parent)
        (home / "inputs").mkdir(parents=True, exist_ok=True)
        sf.write(home / "inputs" / "riff.wav", riff.T, rate)
        buffer = io.BytesIO()
        sf.write(buffer, riff.T, rate, format="WAV")
        inline = base64.b64encode(buffer.getvalue()).decode()
        for source in ("riff.wav", inline):
            [from_file] = structured(
                await client.call_tool(
                    "generate_music",
                    {"prompt": "more", "duration": 1, "continue_from": source, "wait_seconds": 300},
                )
            )["jobs"]
            assert from_file["status"] == "completed"
            assert from_file["lineage"]["source_file_sha256"] and from_file["lineage"]["parent_id"] is None
            assert _wav(from_file)[0].shape[1] == 6 * rate

        history = structured(await client.call_tool("list_history", {"limit": 10}))["items"]
        assert {job["job_id"]: job["lineage"]["operation"] for job in history}[child["job_id"]] == "continue"

        # Bad sources are tool errors naming the argument, and queue nothing.
        bad = {
            "no-such-job": "continue_from: no job",
            "../../etc/passwd": "outside the input directories",
            "riff-missing.wav": "continue_from: no file",
        }
        for source, expected in bad.items():
            result = await client.call_tool(
                "generate_music", {"prompt": "x", "duration": 1, "continue_from": source}
            )
            assert expected in error_text(result)
        (home / "inputs" / "junk.wav").write_bytes(b"RIFF not really a wave file at all")
        result = await client.call_tool(
            "generate_music", {"prompt": "x", "duration": 1, "continue_from": "junk.wav"}
        )
        assert "continue_from" in error_text(result) and "not readable audio" in error_text(result)
        result = await client.call_tool("extend_music", {"job_id": "nope-nope", "seconds": 5})
        assert "job_id: no job" in error_text(result)
        after = structured(await client.call_tool("list_history", {"limit": 20}))["items"]
        assert len(after) == 4

    whole, whole_rate = _wav(child)
    assert whole_rate == rate and whole.shape[1] == 15 * rate  # 15.00 s: 5 s kept, 10 s added
    span = int(4.9 * rate)
    correlation = np.corrcoef(whole[0, :span], riff[0, :span])[0, 1]
    assert correlation >= 0.99
