"""The REST API of `dgx-music serve --transport http`, as a subprocess on one port with /mcp, over real HTTP.

Generate → long-poll → the WAV (whole, by range, by ETag) → peaks → history → export → the session zip,
the event stream, problem+json errors that name the field, /health (also 503 when the model cannot load),
/metrics parsed by prometheus_client, the same door as /mcp (token, Host/Origin, no CORS), and the text of
every MCP tool result carrying what an agent needs.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import soundfile as sf
from mcp_testing import TOKEN, http_client, http_server, wait_healthy
from prometheus_client.parser import text_string_to_metric_families

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with http_server(tmp_path_factory.mktemp("rest") / "home", tiny_checkpoint) as (url, _):
        wait_healthy(url)
        yield url


@pytest.fixture(scope="module")
def token_server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with http_server(tmp_path_factory.mktemp("rest-token") / "home", tiny_checkpoint, token=TOKEN) as (
        url,
        _,
    ):
        yield url


def generate(url: str, **body: Any) -> dict[str, Any]:
    response = httpx.post(f"{url}/api/v1/generate", json={"duration": 1, **body}, timeout=30)
    assert response.status_code == 202, response.text
    [job] = response.json()["jobs"]
    return dict(job)


def completed(url: str, prompt: str, **body: Any) -> dict[str, Any]:
    job = generate(url, prompt=prompt, **body)
    done = httpx.get(f"{url}/api/v1/jobs/{job['job_id']}", params={"wait": 120}, timeout=150).json()
    assert done["status"] == "completed", done
    return dict(done)


def test_generate_poll_and_download_the_wav(server: str) -> None:
    job = generate(server, prompt="rest api bossa nova", duration=2, seed=11)
    # The worker wakes as the rows commit, so it may have claimed the job before the answer is built.
    assert job["status"] in ("pending", "processing") and job["params"]["seed"] == 11
    done = httpx.get(f"{server}/api/v1/jobs/{job['job_id']}", params={"wait": 120}, timeout=150).json()
    assert done["status"] == "completed" and done["progress"] == 1.0

    wav = httpx.get(f"{server}/api/v1/files/{job['job_id']}", timeout=30)
    assert wav.status_code == 200 and wav.headers["content-type"] == "audio/wav"
    assert wav.headers["accept-ranges"] == "bytes"
    assert wav.headers["etag"] == f'"{done["audio"]["sha256"]}"'
    samples, rate = sf.read(io.BytesIO(wav.content), always_2d=True)
    assert samples.shape[0] == 2 * rate == 2 * done["audio"]["sample_rate"]

    part = httpx.get(f"{server}/api/v1/files/{job['job_id']}", headers={"Range": "bytes=100-199"}, timeout=30)
    assert part.status_code == 206 and part.content == wav.content[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(wav.content)}"
    tail = httpx.get(f"{server}/api/v1/files/{job['job_id']}", headers={"Range": "bytes=-10"}, timeout=30)
    assert tail.status_code == 206 and tail.content == wav.content[-10:]
    beyond = httpx.get(
        f"{server}/api/v1/files/{job['job_id']}", headers={"Range": f"bytes={len(wav.content)}-"}, timeout=30
    )
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(wav.content)}"
    cached = httpx.get(
        f"{server}/api/v1/files/{job['job_id']}", headers={"If-None-Match": wav.headers["etag"]}, timeout=30
    )
    assert cached.status_code == 304 and cached.content == b""

    peaks = httpx.get(f"{server}/api/v1/files/{job['job_id']}/peaks", params={"points": 100}, timeout=30)
    body = peaks.json()
    assert body["points"] == len(body["min"]) == len(body["max"]) == 100
    assert all(-1 <= low <= high <= 1 for low, high in zip(body["min"], body["max"], strict=True))
    assert max(body["max"]) == pytest.approx(float(samples.max()), abs=1e-3)


def test_a_wav_changed_on_disk_is_never_served(server: str) -> None:
    job = completed(server, "tampered take")
    Path(job["audio"]["path"]).write_bytes(b"RIFF" + b"\0" * 100)
    for path in (f"/api/v1/files/{job['job_id']}", f"/api/v1/files/{job['job_id']}/peaks"):
        response = httpx.get(server + path, timeout=30)
        assert response.status_code == 500 and response.headers["content-type"] == PROBLEM, path
        assert "checksum" in response.json()["detail"]


def test_history_searches_and_pages(server: str) -> None:
    for prompt in ("paging marimba one", "paging marimba two", "paging marimba three"):
        generate(server, prompt=prompt)
    first = httpx.get(f"{server}/api/v1/history", params={"q": "marimba", "limit": 2}, timeout=30).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = httpx.get(
        f"{server}/api/v1/history", params={"q": "marimba", "limit": 2, "cursor": first["next_cursor"]}
    ).json()
    prompts = {job["prompt"] for job in first["items"] + rest["items"]}
    assert prompts == {"paging marimba one", "paging marimba two", "paging marimba three"}
    assert rest["next_cursor"] is None


def test_the_event_stream_sends_progress_then_the_final_job(server: str) -> None:
    job = generate(server, prompt="event stream dub", duration=3)
    events: list[tuple[str, dict[str, Any]]] = []
    with httpx.stream("GET", f"{server}/api/v1/jobs/{job['job_id']}/events", timeout=150) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        name = ""
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
    names = [name for name, _ in events]
    assert names[-1] == "job" and set(names[:-1]) == {"progress"} and len(names) >= 2
    assert events[-1][1]["status"] == "completed"
    progress = [body["progress"] for _, body in events]
    assert progress == sorted(progress)


def test_cancel_then_cancel_again_and_a_completed_job_refuses(server: str) -> None:
    running = generate(server, prompt="cancel me", duration=30)
    cancelled = httpx.delete(f"{server}/api/v1/jobs/{running['job_id']}", timeout=30)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = httpx.delete(f"{server}/api/v1/jobs/{running['job_id']}", timeout=30)
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    done = completed(server, "finished already")
    refused = httpx.delete(f"{server}/api/v1/jobs/{done['job_id']}", timeout=30)
    assert refused.status_code == 409 and refused.headers["content-type"] == PROBLEM
    assert refused.json()["errors"][0]["field"] == "job_id"


def test_export_to_ardour_and_download_the_session(server: str) -> None:
    jobs = [completed(server, f"session take {n}") for n in (1, 2)]
    response = httpx.post(
        f"{server}/api/v1/sessions",
        json={"job_ids": [job["job_id"] for job in jobs], "session_name": "rest session"},
        timeout=120,
    )
    assert response.status_code == 201, response.text
    manifest = response.json()
    assert [track["name"] for track in manifest["tracks"]] == ["session take 1", "session take 2"]
    archive = httpx.get(f"{server}/api/v1/sessions/{manifest['session_name']}.zip", timeout=60)
    assert archive.status_code == 200 and archive.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(archive.content)).namelist()
    name = manifest["session_name"]
    assert f"{name}/{name}.ardour" in names and f"{name}/manifest.json" in names
    assert sum(entry.endswith(".wav") for entry in names) == 2
    for unsafe in ("..", "../rest session", "%2e%2e", "nope"):
        assert httpx.get(f"{server}/api/v1/sessions/{unsafe}.zip", timeout=30).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "x", "duration": 0}, "duration"),
        ({"prompt": "x", "duration": "long"}, "duration"),
        ({"prompt": "   "}, "prompt"),
        ({"duration": 2}, "prompt"),
        ({"prompt": "x", "variations": 9}, "variations"),
        ({"prompt": "x", "top_p": 2}, "top_p"),
        ({"prompt": "x", "model": "/etc"}, "model"),
        ({"prompt": "x", "colour": "blue"}, "colour"),
    ],
)
def test_bad_input_is_problem_json_naming_the_field(server: str, body: dict[str, Any], field: str) -> None:
    response = httpx.post(f"{server}/api/v1/generate", json=body, timeout=30)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["status"] == 422 and problem["detail"]
    assert field in [error["field"] for error in problem["errors"]], problem


def test_unknown_things_are_404_problems(server: str) -> None:
    for path in ("/api/v1/jobs/nope", "/api/v1/files/nope", "/api/v1/files/nope/peaks", "/api/v1/nothing"):
        response = httpx.get(server + path, timeout=30)
        assert response.status_code == 404 and response.headers["content-type"] == PROBLEM, path
        assert response.json()["detail"]
    assert httpx.get(f"{server}/api/v1/jobs/x", params={"wait": 301}).json()["errors"][0]["field"] == "wait"


def test_health_and_metrics(server: str) -> None:
    health = httpx.get(f"{server}/health", timeout=30).json()
    assert health["status"] == "ok" and health["worker"] == "ready" and health["device"] == "cpu"
    assert health["loaded_model"] == health["model"]
    completed(server, "metrics take")
    response = httpx.get(f"{server}/metrics", timeout=30)
    assert response.headers["content-type"].startswith("text/plain")
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    jobs = {sample.labels["status"]: sample.value for sample in families["dgx_music_jobs"].samples}
    assert jobs["completed"] >= 1 and set(jobs) == {
        "pending",
        "processing",
        "completed",
        "failed",
        "cancelled",
    }
    generation = {sample.name: sample.value for sample in families["dgx_music_generation_seconds"].samples}
    assert generation["dgx_music_generation_seconds_count"] >= 1
    assert families["dgx_music_decode_steps"].samples[0].value > 0
    assert families["dgx_music_decode_steps_per_second"].samples[0].value > 0
    assert families["dgx_music_model_load_seconds"].samples[0].value > 0
    for name in ("dgx_music_queue_depth", "dgx_music_batch_size", "dgx_music_batch_jobs"):
        assert name in families
    step_samples = families["dgx_music_step_seconds"].samples
    steps = {(sample.name, sample.labels["jobs"]): sample.value for sample in step_samples}
    assert steps[("dgx_music_step_seconds_count", "1")] > 0 and steps[("dgx_music_step_seconds_sum", "1")] > 0


def test_health_is_503_when_the_model_cannot_load(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with http_server(tmp_path / "home", tiny_checkpoint, DGX_MUSIC_MODEL=str(tmp_path / "missing")) as (
        url,
        _,
    ):
        for _ in range(240):
            response = httpx.get(f"{url}/health", timeout=30)
            if response.json()["worker"].startswith("load failed"):
                break
            time.sleep(0.25)
    assert response.status_code == 503 and response.json()["status"] == "unavailable", response.text


def test_openapi_and_docs(server: str) -> None:
    spec = httpx.get(f"{server}/openapi.json", timeout=30).json()
    for path in (
        "/api/v1/generate",
        "/api/v1/jobs/{job_id}",
        "/api/v1/jobs/{job_id}/events",
        "/api/v1/files/{job_id}",
        "/api/v1/files/{job_id}/peaks",
        "/api/v1/history",
        "/api/v1/sessions",
        "/api/v1/sessions/{name}.zip",
        "/health",
        "/metrics",
    ):
        assert path in spec["paths"], path
    [duration, _null] = spec["components"]["schemas"]["GenerateRequest"]["properties"]["duration"]["anyOf"]
    assert (duration["minimum"], duration["maximum"]) == (1, 600)  # both families' bounds, as MCP shows them
    for path in ("/api/v1/jobs/{job_id}/edit", "/api/v1/jobs/{job_id}/stems", "/api/v1/generations/{job_id}"):
        assert path in spec["paths"], path
    assert "Problem" in spec["components"]["schemas"]
    assert httpx.get(f"{server}/docs", timeout=30).status_code == 200


# --- the same door as /mcp --------------------------------------------------------------------------------


def test_the_token_guards_the_api_but_not_the_studio_shell(token_server: str) -> None:
    for path in ("/api/v1/history", "/health", "/metrics", "/api/v1/files/x"):
        assert httpx.get(token_server + path, timeout=30).status_code == 401, path
        wrong = {"Authorization": "Bearer wrong-token-0123456789"}
        assert httpx.get(token_server + path, headers=wrong, timeout=30).status_code == 401, path
    assert httpx.post(f"{token_server}/api/v1/generate", json={"prompt": "x"}).status_code == 401
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.get(f"{token_server}/api/v1/history", headers=bearer, timeout=30).status_code == 200
    for path in ("/", "/studio/studio.js", "/studio/studio.css", "/openapi.json"):
        assert httpx.get(token_server + path, timeout=30).status_code == 200, path


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Host": "evil.example"}, 421),
        ({"Host": "127.0.0.1.evil.example:80"}, 421),
        ({"Origin": "http://evil.example"}, 403),
        ({"Origin": "null"}, 403),
    ],
)
def test_dns_rebinding_is_refused_on_the_api_and_the_studio(
    server: str, headers: dict[str, str], status: int
) -> None:
    for path in ("/api/v1/history", "/", "/health"):
        assert httpx.get(server + path, headers=headers, timeout=30).status_code == status, path
    response = httpx.post(f"{server}/api/v1/generate", headers=headers, json={"prompt": "x"}, timeout=30)
    assert response.status_code == status


def test_cors_stays_closed(server: str) -> None:
    port = server.rsplit(":", 1)[1]
    same = httpx.get(f"{server}/api/v1/history", headers={"Origin": f"http://localhost:{port}"}, timeout=30)
    assert same.status_code == 200 and "access-control-allow-origin" not in same.headers
    preflight = httpx.options(
        f"{server}/api/v1/generate",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
        timeout=30,
    )
    assert preflight.status_code == 403 and "access-control-allow-origin" not in preflight.headers


def test_the_studio_cannot_be_framed_or_load_foreign_code(server: str) -> None:
    page = httpx.get(f"{server}/", timeout=30)
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"


def test_an_oversize_body_is_refused(server: str) -> None:
    body = {"prompt": "x" * 2_000_000}
    assert httpx.post(f"{server}/api/v1/generate", json=body, timeout=60).status_code == 413
    assert httpx.get(f"{server}/health", timeout=30).status_code == 200


# --- what agents read --------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_tool_results_carry_what_an_agent_needs_in_their_text(server: str) -> None:
    """Claude Code shows only the text of a result: id, status, WAV path and the studio link must be in it."""

    def text(result: Any) -> str:
        assert not result.is_error
        return "\n".join(block.text for block in result.content if block.type == "text")

    async with http_client(server) as client:
        queued = text(
            await client.call_tool(
                "generate_music", {"prompt": "text only", "duration": 1, "wait_seconds": 0}
            )
        )
        [job_id] = [line.split()[1] for line in queued.splitlines() if line.startswith("job ")]
        status = queued.split()[2].rstrip(":")  # the worker may have started it already
        assert status in ("pending", "processing") and "job_status" in queued, queued
        done = text(await client.call_tool("job_status", {"job_id": job_id, "wait_seconds": 120}))
        history = text(await client.call_tool("list_history", {"query": "text only"}))
    first_line = done.splitlines()[0]
    assert first_line.startswith(f"job {job_id} completed: /") and ".wav" in first_line
    wav = Path(first_line.split(": ", 1)[1].split(" (")[0])
    assert wav.is_file() and wav.name == f"{job_id}.wav"
    assert f"studio: {server}/#job={job_id}" in first_line
    assert first_line in history
    studio = httpx.get(f"{server}/", timeout=30)
    assert studio.status_code == 200 and "DGX Music" in studio.text


def test_extend_a_job_and_continue_from_over_the_same_service(server: str) -> None:
    parent = completed(server, "rest riff to extend", duration=2, seed=5)
    response = httpx.post(f"{server}/api/v1/jobs/{parent['job_id']}/extend", json={"seconds": 1}, timeout=30)
    assert response.status_code == 202, response.text
    [child] = response.json()["jobs"]
    assert child["lineage"] == {
        "operation": "continue",
        "parent_id": parent["job_id"],
        "source_job_id": parent["job_id"],
        "source_file_name": None,
        "source_file_sha256": None,
        "stem": None,
        "section_start_s": None,
        "section_end_s": None,
    }
    done = httpx.get(f"{server}/api/v1/jobs/{child['job_id']}", params={"wait": 120}, timeout=150).json()
    assert done["status"] == "completed" and done["audio"]["duration_s"] == pytest.approx(3.0)
    refused = httpx.post(
        f"{server}/api/v1/generate",
        json={"prompt": "x", "duration": 1, "continue_from": "no-such-job"},
        timeout=30,
    )
    assert refused.status_code in (404, 422) and "continue_from" in refused.text
    # melody_from is a field of REST generate too (it follows a tune on melody checkpoints only; this server's
    # tiny checkpoint is text-conditioned, so it is refused by name and nothing is queued).
    refused = httpx.post(
        f"{server}/api/v1/generate",
        json={"prompt": "x", "duration": 1, "melody_from": parent["job_id"]},
        timeout=30,
    )
    assert refused.status_code == 422 and "melody_from" in refused.text
    assert "no melody conditioning" in refused.text
