"""Stems, families and deletion through the REST API and `dgx-music stems`: the same derive layer as the
MCP tools, on a tiny MusicGen checkpoint and a tiny Demucs separator mapped to `htdemucs` by the operator."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest
from mcp_testing import DGX_MUSIC, http_server, server_env, wait_healthy

from engine.demucs.checkpoints import build_random_separator

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def separator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_random_separator(tmp_path_factory.mktemp("demucs") / "htdemucs-tiny")


def wait(url: str, job_id: str) -> dict:  # type: ignore[type-arg]
    return dict(httpx.get(f"{url}/api/v1/jobs/{job_id}", params={"wait": 120}, timeout=150).json())


@pytest.mark.slow  # keeps the default suite near 10 min; .ci/run runs it
def test_stems_family_and_delete_over_rest_then_the_cli(
    tiny_checkpoint: Path, separator: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    paths = f"htdemucs={separator}"
    with http_server(home, tiny_checkpoint, DGX_MUSIC_MODEL_PATHS=paths) as (url, _):
        wait_healthy(url)
        response = httpx.post(
            f"{url}/api/v1/generate", json={"prompt": "surf rock", "duration": 2}, timeout=30
        )
        [source] = response.json()["jobs"]
        assert wait(url, source["job_id"])["status"] == "completed"

        lyrics = httpx.post(f"{url}/api/v1/generate", json={"prompt": "x", "lyrics": "[verse]"}, timeout=30)
        assert lyrics.status_code == 422 and "lyrics" in lyrics.json()["detail"]
        stems_url = f"{url}/api/v1/jobs/{source['job_id']}/stems"
        unknown = httpx.post(stems_url, json={"model": "nope"}, timeout=30)
        assert unknown.status_code in (400, 422) and "model=" in unknown.json()["detail"]

        stems = httpx.post(stems_url, json={}, timeout=30)
        assert stems.status_code == 202, stems.text
        jobs = [wait(url, job["job_id"]) for job in stems.json()["jobs"]]
        assert [job["lineage"]["stem"] for job in jobs] == ["drums", "bass", "other", "vocals"]
        assert all(job["status"] == "completed" and job["audio"]["duration_s"] == 2.0 for job in jobs)

        family = httpx.get(f"{url}/api/v1/jobs/{jobs[2]['job_id']}/family", timeout=30).json()
        assert [item["job_id"] for item in family["items"]] == [
            source["job_id"],
            *(j["job_id"] for j in jobs),
        ]

        refused = httpx.delete(f"{url}/api/v1/generations/{source['job_id']}", timeout=30)
        assert refused.status_code == 409 and "delete_family=true" in refused.json()["detail"]
        one = httpx.delete(f"{url}/api/v1/generations/{jobs[0]['job_id']}", timeout=30)
        assert one.json()["deleted"] == [jobs[0]["job_id"]]

    env = server_env(home, tiny_checkpoint)
    run = subprocess.run(
        [DGX_MUSIC, "stems", source["job_id"][:8], "--model", str(separator)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    wavs = run.stdout.split()
    assert len(wavs) == 4 and all(Path(wav).is_file() for wav in wavs)
    assert "drums" in run.stderr
    listed = subprocess.run([DGX_MUSIC, "history"], env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and f"stems vocals of {source['job_id'][:8]}" in listed.stdout, listed
