"""The model catalogue: built from the families' own tables, read without loading any model, the same over
REST (GET /api/v1/models) and MCP (resource dgx-music://models), and true to what generate_music accepts.

Tiny checkpoints stand in for the operator's models (ACE-Step mapped to `ace-step-base`, a Demucs separator
to `htdemucs`); a Hugging Face cache in the test's HF_HOME holds one published id, so "present" is the real
cache look-up.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp_testing import error_text, http_client, http_server, structured

from engine.acestep.checkpoints import build_random_checkpoint as build_song_checkpoint
from engine.demucs.checkpoints import build_random_separator
from engine.request import BOUNDS
from mcp_server.catalogue import CATALOGUE_URI, catalogue
from mcp_server.config import Settings

STEREO_SMALL = "facebook/musicgen-stereo-small"


@pytest.fixture(scope="module")
def song_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # a base (CFG) checkpoint with the audio tokenizer: guidance_scale and remix are in its entry
    return build_song_checkpoint(
        tmp_path_factory.mktemp("acestep") / "tiny-base", turbo=False, audio_tokenizer=True
    )


@pytest.fixture(scope="module")
def separator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_random_separator(tmp_path_factory.mktemp("demucs") / "htdemucs-tiny")


def by_alias(found: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {alias: entry for entry in found["models"] for alias in entry["aliases"]}


def parameters(entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {parameter["name"]: parameter for parameter in entry["parameters"]}


def test_entries_come_from_the_families_tables(
    tiny_checkpoint: Path, song_checkpoint: Path, separator: Path
) -> None:
    settings = Settings.load(
        {},
        model=str(tiny_checkpoint),
        model_paths=f"ace-step-base={song_checkpoint},htdemucs={separator}",
    )
    found = catalogue(settings).model_dump(mode="json")
    models = by_alias(found)

    small = models["small"]
    assert small["id"] == "facebook/musicgen-small" and small["alias"] == "small"
    assert "musicgen-small" in small["aliases"]
    assert (small["family"], small["task"], small["melody"]) == ("musicgen", "instrumental", False)
    assert small["max_duration_s"] == 300 and small["operations"] == ["generate", "continue"]
    assert small["licence"].startswith("CC-BY-NC") and small["commercial_use"] is False
    duration = parameters(small)["duration"]
    assert (duration["minimum"], duration["maximum"], duration["default"]) == (1, 300, 10)
    temperature = parameters(small)["temperature"]
    assert temperature["exclusive_minimum"] and temperature["maximum"] == BOUNDS["temperature"].high
    assert "lyrics" not in parameters(small)

    melody = models["melody"]
    assert melody["melody"] is True and melody["max_duration_s"] == 300
    assert parameters(melody)["duration"]["maximum"] == 300
    assert melody["operations"] == ["generate", "continue", "melody"]
    assert models["stereo-small"]["channels"] == 2 and models["small"]["channels"] == 1

    turbo = models["ace-step"]  # not mapped: the published turbo checkpoint, not in this test's cache
    assert (turbo["family"], turbo["task"], turbo["max_duration_s"]) == ("acestep", "song", 600)
    assert (turbo["sample_rate"], turbo["channels"]) == (48_000, 2)
    song_params = parameters(turbo)
    assert {"lyrics", "bpm", "key", "time_signature", "vocal_language", "steps"} <= set(song_params)
    assert not {"top_k", "top_p", "temperature", "context_seconds", "guidance_scale"} & set(song_params)
    assert song_params["time_signature"]["choices"] == [2, 3, 4, 6]
    assert "A minor" in song_params["key"]["choices"] and song_params["steps"]["default"] == 8
    assert turbo["default_for"] == ["edit"] and turbo["commercial_use"] is True

    base = models["ace-step-base"]  # the operator's tiny base checkpoint, read from its files
    assert base["id"] == str(song_checkpoint) and base["operator"] and base["weights_present"]
    assert base["pull_command"] is None
    assert parameters(base)["guidance_scale"]["maximum"] == 15
    assert base["operations"] == ["generate", "edit", "remix"]

    stems = models["htdemucs"]
    assert (stems["family"], stems["task"], stems["id"]) == ("demucs", "stems", str(separator))
    assert stems["stems"] == ["drums", "bass", "other", "vocals"] and stems["default_for"] == ["stems"]
    assert stems["sample_rate"] is None and stems["parameters"] == []
    assert models["htdemucs_6s"]["stems"][-2:] == ["guitar", "piano"]

    default = models[str(tiny_checkpoint)]
    assert found["default_model"] == default["id"] == str(tiny_checkpoint)
    assert default["default_for"] == ["generate"] and default["operator"] and default["weights_present"]
    assert default["sample_rate"] == 32_000  # from the checkpoint's own config.json
    assert [entry["id"] for entry in found["models"]].count(str(tiny_checkpoint)) == 1


def test_a_family_whose_extra_is_missing_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "diffusers" else real(name, *a)
    )
    models = by_alias(catalogue(Settings.load({})).model_dump(mode="json"))
    assert "pip install 'dgx-music[songs]'" in models["ace-step"]["missing_extra"]
    assert models["small"]["missing_extra"] is None and models["htdemucs"]["missing_extra"] is None


def fake_hub_cache(hf_home: Path, repo: str, checkpoint: Path) -> None:
    """The Hugging Face cache layout (refs/main -> snapshots/<commit>) holding ``checkpoint``'s files."""
    folder = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    shutil.copytree(checkpoint, folder / "snapshots" / commit)


@pytest.mark.anyio
async def test_rest_and_mcp_serve_one_catalogue_that_generate_music_agrees_with(
    tiny_checkpoint: Path,
    tiny_stereo_checkpoint: Path,
    song_checkpoint: Path,
    separator: Path,
    tmp_path: Path,
) -> None:
    hf_home = tmp_path / "hf"
    fake_hub_cache(hf_home, STEREO_SMALL, tiny_stereo_checkpoint)
    paths = f"ace-step-base={song_checkpoint},htdemucs={separator}"
    extra = {"DGX_MUSIC_MODEL_PATHS": paths, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    with http_server(tmp_path / "home", tiny_checkpoint, **extra) as (url, _):
        response = httpx.get(f"{url}/api/v1/models", timeout=60)
        assert response.status_code == 200, response.text
        over_rest = response.json()
        async with http_client(url) as client:
            [text] = (await client.read_resource(CATALOGUE_URI, cache_mode="bypass")).contents
            over_mcp = json.loads(getattr(text, "text", ""))
            listed = {str(resource.uri) for resource in (await client.list_resources()).resources}
            assert CATALOGUE_URI in listed
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            accepted = set(tools["generate_music"].input_schema["properties"])
            assert over_mcp == over_rest
            models = by_alias(over_rest)

            cached = models["stereo-small"]  # in the cache: present, its rate and channels from its config
            assert cached["weights_present"] and cached["pull_command"] is None and cached["channels"] == 2
            assert not models["medium"]["weights_present"]
            assert models["medium"]["pull_command"] == "dgx-music pull medium"
            assert models["ace-step"]["pull_command"] == "dgx-music pull ace-step"

            for entry in over_rest["models"]:
                assert set(parameters(entry)) <= accepted, entry["alias"]
                if entry["family"] == "demucs":
                    continue
                # one second past the entry's longest piece is refused, naming duration
                too_long = await client.call_tool(
                    "generate_music",
                    {"prompt": "x", "model": entry["alias"], "duration": entry["max_duration_s"] + 1},
                )
                assert "duration" in error_text(too_long), entry["alias"]

            song = {
                "prompt": "a ballad",
                "model": "ace-step-base",
                "lyrics": "[verse]\nla la",
                "wait_seconds": 0,
            }
            [queued] = structured(await client.call_tool("generate_music", {**song, "duration": 10}))["jobs"]
            await client.call_tool("cancel_job", {"job_id": queued["job_id"]})
            refused = await client.call_tool("generate_music", {**song, "top_k": 50})
            assert "top_k" in error_text(refused)
