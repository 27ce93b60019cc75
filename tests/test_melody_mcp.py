"""melody_from end to end: a real MCP client driving `dgx-music serve` over stdio on the tiny melody
checkpoint; a melody request decodes in the batching loop beside a text-only one, its lineage is recorded
as for continue_from, a melody piece runs over several 30 s windows and can be extended, and bad uses are
tool errors naming the argument."""

from __future__ import annotations

import base64
import io
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from mcp import Client, StdioServerParameters
from mcp_testing import DGX_MUSIC, error_text, server_env, structured

from engine.audio import integrated_loudness

pytestmark = pytest.mark.anyio


def _tune_wav(rate: int = 44_100, seconds: float = 4.0) -> bytes:
    """A sine melody (a rising arpeggio, 0.5 s a note) as WAV bytes, at a rate the server must resample."""
    notes = [60, 64, 67, 72, 67, 64, 62, 59]
    step = np.arange(round(0.5 * rate)) / rate
    tune = np.concatenate([np.sin(2 * np.pi * 440 * 2 ** ((n - 69) / 12) * step) for n in notes])
    buffer = io.BytesIO()
    sf.write(buffer, 0.5 * tune[: round(seconds * rate)], rate, format="WAV")
    return buffer.getvalue()


async def _finished(client: Client, job: dict[str, Any]) -> dict[str, Any]:
    if job["status"] in ("pending", "processing"):
        job = structured(await client.call_tool("job_status", {"job_id": job["job_id"], "wait_seconds": 300}))
    return job


def _seconds(job: dict[str, Any]) -> float:
    samples, rate = sf.read(job["audio"]["path"], always_2d=True, dtype="float32")
    assert integrated_loudness(samples.T, rate) == pytest.approx(-14, abs=0.5)
    return samples.shape[0] / rate


async def test_melody_from_completes_in_the_batching_loop_beside_a_text_only_request(
    tiny_melody_checkpoint: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    tune = _tune_wav()
    params = StdioServerParameters(
        command=DGX_MUSIC, args=["serve"], env=server_env(home, tiny_melody_checkpoint)
    )
    async with Client(params) as client:
        inline = base64.b64encode(tune).decode()
        # Queued back to back without waiting: the worker decodes them in one running batch.
        [melody] = structured(
            await client.call_tool(
                "generate_music",
                {"prompt": "folk tune", "duration": 12, "melody_from": inline, "seed": 1, "wait_seconds": 0},
            )
        )["jobs"]
        [text] = structured(
            await client.call_tool(
                "generate_music", {"prompt": "ambient pad", "duration": 3, "seed": 2, "wait_seconds": 0}
            )
        )["jobs"]
        melody, text = await _finished(client, melody), await _finished(client, text)
        assert melody["status"] == text["status"] == "completed", (melody, text)
        start = {job["job_id"]: datetime.fromisoformat(job["started_at"]) for job in (melody, text)}
        end = {job["job_id"]: datetime.fromisoformat(job["completed_at"]) for job in (melody, text)}
        # They overlapped: the short text-only job started before the melody job ended, and ended first.
        assert start[text["job_id"]] < end[melody["job_id"]] and end[text["job_id"]] < end[melody["job_id"]]
        assert _seconds(melody) == 12.0 and _seconds(text) == 3.0
        lineage = melody["lineage"]
        assert lineage["operation"] == "melody" and lineage["parent_id"] is None
        assert lineage["source_file_sha256"] and lineage["source_file_name"].startswith("inline-")

        # From a completed job (its audio is the tune; the job is the parent) and from an input file.
        (home / "inputs").mkdir(parents=True, exist_ok=True)
        (home / "inputs" / "hum.wav").write_bytes(tune)
        for source, parent in ((text["job_id"], text["job_id"]), ("hum.wav", None)):
            [child] = structured(
                await client.call_tool(
                    "generate_music",
                    {"prompt": "strings", "duration": 2, "melody_from": source, "wait_seconds": 300},
                )
            )["jobs"]
            assert child["status"] == "completed", child
            assert child["lineage"]["operation"] == "melody" and child["lineage"]["parent_id"] == parent
            assert _seconds(child) == 2.0
            assert child["note"] is None

        # A tune longer than the longest piece is used from its start, and the job says so.
        long_tune = np.tile(sf.read(io.BytesIO(_tune_wav(rate=8_000)))[0], 76)  # 304 s
        sf.write(home / "inputs" / "long-hum.wav", long_tune, 8_000)
        [long] = structured(
            await client.call_tool(
                "generate_music",
                {"prompt": "strings", "duration": 1, "melody_from": "long-hum.wav", "wait_seconds": 300},
            )
        )["jobs"]
        assert long["status"] == "completed" and "only its first 300 s" in long["note"]

        # Bad uses are tool errors naming the argument, and queue nothing.
        before = len(structured(await client.call_tool("list_history", {"limit": 50}))["items"])
        refusals: list[tuple[dict[str, Any], str]] = [
            ({"melody_from": "no-such-job"}, "melody_from: no job"),
            ({"melody_from": "../../etc/passwd"}, "outside the input directories"),
            ({"melody_from": "hum.wav", "continue_from": "hum.wav"}, "melody_from: give continue_from or"),
        ]
        for extra, expected in refusals:
            result = await client.call_tool("generate_music", {"prompt": "x", "duration": 1, **extra})
            assert expected in error_text(result), extra
        after = len(structured(await client.call_tool("list_history", {"limit": 50}))["items"])
        assert after == before


@pytest.mark.slow  # keeps the default suite near 10 min; .ci/run runs it
async def test_a_melody_piece_over_one_window_and_its_extension(
    tiny_melody_checkpoint: Path, tmp_path: Path
) -> None:
    """31 s with 2 s of context: a 30 s window, then one more second after 2 s of context, conditioned on
    the tune's 30 s from 28 s on (looped); extending it continues the piece on the same melody checkpoint."""
    params = StdioServerParameters(
        command=DGX_MUSIC, args=["serve"], env=server_env(tmp_path / "home", tiny_melody_checkpoint)
    )
    async with Client(params) as client:
        arguments = {
            "prompt": "folk tune",
            "duration": 31,
            "context_seconds": 2,
            "melody_from": base64.b64encode(_tune_wav()).decode(),
            "seed": 3,
            "wait_seconds": 300,
        }
        [piece] = structured(await client.call_tool("generate_music", arguments))["jobs"]
        piece = await _finished(client, piece)
        assert piece["status"] == "completed", piece
        assert _seconds(piece) == 31.0 and piece["lineage"]["operation"] == "melody"

        [longer] = structured(
            await client.call_tool(
                "extend_music", {"job_id": piece["job_id"], "seconds": 2, "wait_seconds": 300}
            )
        )["jobs"]
        longer = await _finished(client, longer)
        assert longer["status"] == "completed", longer
        assert longer["lineage"] == {
            **longer["lineage"],
            "operation": "continue",
            "parent_id": piece["job_id"],
        }
        # A source over 29 s prompts with its last 29 s, where the result starts (and the job says so).
        assert _seconds(longer) == 29.0 + 2.0 and "only its last 29 s" in longer["note"]
    original, _ = sf.read(piece["audio"]["path"], dtype="float32")
    extended, _ = sf.read(longer["audio"]["path"], dtype="float32")
    span = round(28.9 * 32_000)  # kept up to the join (both normalised to -14 LUFS)
    assert np.corrcoef(original[-29 * 32_000 :][:span], extended[:span])[0, 1] >= 0.99
