"""Issues 13 and 14 end to end: `dgx-music serve` over real stdio with tiny MusicGen, ACE-Step and Demucs
checkpoints built here, mapped to their aliases by the operator's DGX_MUSIC_MODEL_PATHS.

Songs (ACE-Step) at 48 kHz stereo and -14 LUFS; a section edit of a MusicGen clip that keeps everything
outside the section; parameters of the other family refused by name; stems linked to their source, exactly
its length and rate, opened by Ardour as aligned tracks; a family listed in one call; delete refused while
children exist; a separation cancelled while it runs; bad inputs answered with the argument's name.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
import soundfile as sf
from ardour_testing import RATE, require_ardour
from mcp import Client, StdioServerParameters
from mcp_testing import DGX_MUSIC, error_text, server_env, structured, waited_jobs

from ardour_templates.verify import inspect_session
from engine.acestep.checkpoints import build_random_checkpoint as build_song_checkpoint
from engine.audio import integrated_loudness, resample
from engine.demucs.checkpoints import build_random_separator

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def song_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_song_checkpoint(tmp_path_factory.mktemp("acestep") / "tiny")


@pytest.fixture(scope="module")
def separator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_random_separator(tmp_path_factory.mktemp("demucs") / "htdemucs-tiny")


def params(home: Path, musicgen: Path, song: Path, separator: Path) -> StdioServerParameters:
    paths = f"ace-step={song},htdemucs={separator}"
    env = server_env(home, musicgen, DGX_MUSIC_MODEL_PATHS=paths)
    return StdioServerParameters(command=DGX_MUSIC, args=["serve"], env=env)


def read_wav(path: str) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(io.BytesIO(Path(path).read_bytes()), dtype="float32", always_2d=True)
    return samples.T, rate


async def call(client: Client, tool: str, **args: Any) -> dict[str, Any]:
    return waited_jobs(await client.call_tool(tool, {"wait_seconds": 240, **args}))


async def test_a_song_with_lyrics_and_a_section_edit_over_stdio(
    tiny_checkpoint: Path, song_checkpoint: Path, separator: Path, tmp_path: Path
) -> None:
    async with Client(params(tmp_path / "home", tiny_checkpoint, song_checkpoint, separator)) as client:
        lyrics = "[verse]\nNeon rain on empty streets\n[chorus]\nWe run until the morning"
        for model in ("ace-step", str(song_checkpoint)):  # the alias the operator mapped, or its directory
            [song] = (
                await call(
                    client,
                    "generate_music",
                    prompt="dreamy synth pop",
                    model=model,
                    lyrics=lyrics,
                    duration=20,
                    bpm=96,
                    key="A minor",
                    steps=2,
                    seed=5,
                )
            )["jobs"]
            assert song["status"] == "completed", song
            audio, rate = read_wav(song["audio"]["path"])
            assert (rate, audio.shape) == (48_000, (2, 20 * 48_000)) and song["audio"]["duration_s"] == 20.0
            assert integrated_loudness(audio, rate) == pytest.approx(-14.0, abs=0.2)
            assert song["params"]["lyrics"] == lyrics and song["params"]["key"] == "A minor"
            bext = Path(song["audio"]["path"]).read_bytes()[:4096]  # the bext chunk's coding history
            assert b"(licence " in bext and b"lyrics: [verse] / Neon rain on empty streets" in bext

        refused = await client.call_tool("generate_music", {"prompt": "piano", "lyrics": "[verse]\nhi"})
        assert "lyrics: is an ACE-Step parameter" in error_text(refused)
        refused = await client.call_tool(
            "generate_music", {"prompt": "pop", "model": "ace-step", "top_k": 50}
        )
        assert "top_k: is a MusicGen-only argument" in error_text(refused)
        refused = await client.call_tool(
            "generate_music", {"prompt": "pop", "model": "ace-step", "melody_from": "hum.wav"}
        )
        assert "melody_from: is a MusicGen-only argument" in error_text(refused)
        refused = await client.call_tool(
            "generate_music", {"prompt": "pop", "model": "ace-step", "duration": 5}
        )
        assert "duration" in error_text(refused) and "10" in error_text(refused)

        [clip] = (await call(client, "generate_music", prompt="warm rhodes loop", duration=10, seed=3))[
            "jobs"
        ]
        edited = await call(client, "edit_music", job_id=clip["job_id"], start_s=3, end_s=6, steps=2,
                            prompt="a sudden drum break")  # fmt: skip
        assert edited["status"] == "completed", edited
        assert edited["lineage"] == {
            "operation": "edit", "parent_id": clip["job_id"], "stem": None,
            "section_start_s": 3.0, "section_end_s": 6.0,
            "source_job_id": clip["job_id"], "source_file_name": None, "source_file_sha256": None,
        }  # fmt: skip
        after, rate = read_wav(edited["audio"]["path"])
        assert rate == 48_000 and after.shape == (2, 10 * 48_000)
        before, source_rate = read_wav(clip["audio"]["path"])
        before = resample(np.repeat(before, 2, axis=0), source_rate, rate)[:, : after.shape[1]]
        outside = np.ones(after.shape[1], dtype=bool)
        outside[round(2.9 * rate) : round(6.1 * rate)] = False
        for channel in range(2):
            correlation = np.corrcoef(before[channel, outside], after[channel, outside])[0, 1]
            assert correlation >= 0.99, correlation
        inside = slice(round(3.2 * rate), round(5.8 * rate))
        assert not np.allclose(before[:, inside], after[:, inside], atol=1e-3)

        remixed = await client.call_tool(
            "remix", {"job_id": clip["job_id"], "prompt": "bossa nova", "wait_seconds": 120}
        )  # this tiny checkpoint has no audio tokenizer: the job fails naming one that does
        assert "Runware/acestep-v15-xl-sft-diffusers" in error_text(remixed)
        bad = await client.call_tool("edit_music", {"job_id": clip["job_id"], "start_s": 3, "end_s": 12})
        assert "end_s" in error_text(bad) and "10.00" in error_text(bad)


async def wait_for(client: Client, job_id: str, statuses: set[str], timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = structured(await client.call_tool("job_status", {"job_id": job_id}))
        if job["status"] in statuses:
            return job
        await anyio.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {statuses}")


async def test_stems_lineage_ardour_family_delete_and_cancel_over_stdio(
    tiny_checkpoint: Path, song_checkpoint: Path, separator: Path, tmp_path: Path
) -> None:
    require_ardour()
    async with Client(params(tmp_path / "home", tiny_checkpoint, song_checkpoint, separator)) as client:
        [source] = (await call(client, "generate_music", prompt="funk groove", duration=8, seed=2))["jobs"]
        stems = (await call(client, "separate_stems", job_id=source["job_id"]))["jobs"]
        assert [job["lineage"]["stem"] for job in stems] == ["drums", "bass", "other", "vocals"]
        total = np.zeros((1, 8 * 32_000))
        for job in stems:
            assert job["status"] == "completed" and job["lineage"]["parent_id"] == source["job_id"]
            assert job["lineage"]["operation"] == "stems"
            assert (job["audio"]["duration_s"], job["audio"]["sample_rate"]) == (8.0, 32_000)
            audio, _ = read_wav(job["audio"]["path"])
            total = total + audio
        mix, _ = read_wav(source["audio"]["path"])
        assert total.shape == mix.shape  # the sum keeps the source's shape (random weights: not its value)

        ids = [source["job_id"], *(job["job_id"] for job in stems)]
        manifest = structured(await client.call_tool(
            "export_to_ardour", {"job_ids": ids, "session_name": "funk stems", "arrangement": "song"}
        ))  # fmt: skip
        assert [track["role"] for track in manifest["tracks"]] == [
            "mix", "stem:drums", "stem:bass", "stem:other", "stem:vocals"
        ]  # fmt: skip
        view = inspect_session(Path(manifest["ardour_file"]))
        assert len(view.tracks) == 5 and [t.muted for t in view.tracks] == [True, False, False, False, False]
        for track in view.tracks:
            [region] = track.regions
            assert (region.position, region.start, region.length) == (0, 0, 8 * RATE)
        without_mix = structured(await client.call_tool(
            "export_to_ardour",
            {"job_ids": ids, "session_name": "stems only", "arrangement": "song", "include_mix": False},
        ))  # fmt: skip
        assert len(without_mix["tracks"]) == 4

        of_a_stem = (await call(client, "separate_stems", job_id=stems[0]["job_id"]))["jobs"]
        assert all(job["lineage"]["parent_id"] == stems[0]["job_id"] for job in of_a_stem)
        family = structured(await client.call_tool("list_history", {"family_of": stems[1]["job_id"]}))
        assert [item["job_id"] for item in family["items"]] == [*ids, *(job["job_id"] for job in of_a_stem)]
        assert family["items"][0]["lineage"]["operation"] == "generate"

        unknown = await client.call_tool("separate_stems", {"job_id": "0123456789abcdef"})
        assert "job_id '0123456789abcdef' not found" in error_text(unknown)
        wrong = await client.call_tool("separate_stems", {"job_id": source["job_id"], "model": "spleeter"})
        assert "model='spleeter' is not a separator" in error_text(wrong)

        refused = await client.call_tool("delete_generation", {"job_id": source["job_id"]})
        assert "delete_family=true" in error_text(refused)
        deleted = structured(
            await client.call_tool("delete_generation", {"job_id": stems[0]["job_id"], "delete_family": True})
        )["deleted"]
        assert deleted[0] == stems[0]["job_id"] and len(deleted) == 5
        assert not Path(stems[0]["audio"]["path"]).exists()

        [long_take] = (await call(client, "generate_music", prompt="ambient", duration=30, seed=9))["jobs"]
        running = await client.call_tool("separate_stems", {"job_id": long_take["job_id"], "wait_seconds": 0})
        queued = structured(running)["jobs"]
        await wait_for(client, queued[0]["job_id"], {"processing"})
        await client.call_tool("cancel_job", {"job_id": queued[2]["job_id"]})
        for job in queued:
            ended = await wait_for(client, job["job_id"], {"completed", "failed", "cancelled"})
            assert ended["status"] == "cancelled", ended
