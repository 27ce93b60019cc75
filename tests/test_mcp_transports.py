"""`dgx-music serve` as a subprocess, driven by the official MCP client over stdio, streamable HTTP and SSE.

These catch what in-process tests cannot: stdout pollution on stdio, start-up errors, HTTP auth and Host
checks, and crash recovery (SIGKILL mid-generation, restart, the job completes).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client, StdioServerParameters
from mcp_testing import (
    DGX_MUSIC,
    TOKEN,
    decode_wav,
    http_client,
    http_server,
    server_env,
    sse_transport,
    structured,
)

from mcp_server.schemas import TERMINAL
from storage import Store

pytestmark = pytest.mark.anyio


def stdio_params(home: Path, checkpoint: Path) -> StdioServerParameters:
    return StdioServerParameters(command=DGX_MUSIC, args=["serve"], env=server_env(home, checkpoint))


@pytest.fixture(scope="module")
def token_server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One streamable-HTTP server for the module, on loopback with a bearer token."""
    with http_server(tmp_path_factory.mktemp("http") / "home", tiny_checkpoint, token=TOKEN) as (url, _):
        yield url


async def test_stdio_legacy_session_end_to_end(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """The initialize handshake Claude Desktop speaks: schemas, progress, both resources, a decodable WAV."""
    updates: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append(progress)

    async with Client(stdio_params(tmp_path / "home", tiny_checkpoint), mode="legacy") as client:
        assert client.server_info is not None and client.server_info.name == "dgx-music"
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        [duration, _null] = tools["generate_music"].input_schema["properties"]["duration"]["anyOf"]
        assert duration["maximum"] == 600  # ACE-Step's songs; MusicGen's 30 s is checked per family
        assert tools["generate_music"].output_schema is not None
        result = await client.call_tool(
            "generate_music",
            {"prompt": "stdio synthwave", "duration": 1, "seed": 1, "wait_seconds": 300},
            progress_callback=on_progress,
        )
        [job] = structured(result)["jobs"]
        assert job["status"] == "completed"
        assert updates and updates == sorted(updates)

        as_json = await client.read_resource(f"music://generations/{job['job_id']}")
        assert '"status": "completed"' in as_json.contents[0].text  # type: ignore[union-attr]
        samples, rate = decode_wav((await client.read_resource(job["audio"]["uri"])).contents)
    assert samples.shape == (rate, job["audio"]["channels"])
    assert (tmp_path / "home" / "logs" / "server.log").read_text().count("loaded") >= 1


async def test_stdio_modern_session(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """The 2026-07-28 revision (the client's default): queue without waiting, then long-poll."""
    async with Client(stdio_params(tmp_path / "home", tiny_checkpoint)) as client:
        [job] = structured(
            await client.call_tool(
                "generate_music", {"prompt": "modern era", "duration": 1, "wait_seconds": 0}
            )
        )["jobs"]
        # The worker wakes as the row commits and may claim it before the answer is built.
        assert (job["status"], job["queue_position"]) in (("pending", 1), ("processing", None)), job
        done = structured(
            await client.call_tool("job_status", {"job_id": job["job_id"], "wait_seconds": 300})
        )
    assert done["status"] == "completed"


async def test_stdio_calls_made_one_after_another_share_the_running_batch(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """Four generate_music calls with wait 0: each joins the batch already decoding instead of waiting for it
    to end (bench/staggered.py --mcp measures the speed-up on the real architecture)."""
    async with Client(stdio_params(tmp_path / "home", tiny_checkpoint)) as client:
        ids = []
        for seed in range(4):
            arguments = {"prompt": "stdio burst", "duration": 3, "seed": seed, "wait_seconds": 0}
            [job] = structured(await client.call_tool("generate_music", arguments))["jobs"]
            ids.append(job["job_id"])
        done = [
            structured(await client.call_tool("job_status", {"job_id": job_id, "wait_seconds": 300}))
            for job_id in ids
        ]
    assert [job["status"] for job in done] == ["completed"] * 4
    first_done = min(job["completed_at"] for job in done)
    assert all(job["started_at"] < first_done for job in done), done


async def test_http_generate_poll_and_read_audio(token_server: str) -> None:
    async with http_client(token_server, TOKEN) as client:
        [job] = structured(
            await client.call_tool(
                "generate_music", {"prompt": "http funk", "duration": 1, "wait_seconds": 0}
            )
        )["jobs"]
        done = structured(
            await client.call_tool("job_status", {"job_id": job["job_id"], "wait_seconds": 300})
        )
        assert done["status"] == "completed"
        samples, rate = decode_wav((await client.read_resource(done["audio"]["uri"])).contents)
    assert samples.shape[0] == rate


async def test_http_legacy_mode(token_server: str) -> None:
    async with http_client(token_server, TOKEN, mode="legacy") as client:
        page = structured(await client.call_tool("list_history", {"limit": 1}))
    assert "items" in page


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": TOKEN}],
    ids=["missing", "wrong", "not-bearer"],
)
def test_http_without_the_right_token_is_401(token_server: str, headers: dict[str, str]) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    response = httpx.post(token_server + "/mcp", json=body, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    description = response.json()["error_description"]  # says what to send (issue 17, item 7)
    assert "'Authorization: Bearer <token>'" in description and "DGX_MUSIC_TOKEN" in description


@pytest.mark.parametrize(
    "path",
    [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ],
)
def test_no_oauth_is_offered_so_discovery_answers_404(token_server: str, path: str) -> None:
    """A 401 here sends clients into an OAuth flow they cannot finish (the Inspector, Claude Code)."""
    response = httpx.get(token_server + path)
    assert response.status_code == 404
    assert "Authorization: Bearer <token>" in response.json()["error_description"]


def test_http_keeps_dns_rebinding_protection(token_server: str) -> None:
    response = httpx.post(
        token_server + "/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={"Authorization": f"Bearer {TOKEN}", "Host": "evil.example:80"},
    )
    assert response.status_code == 421


async def test_job_status_latency_under_four_generating_clients(token_server: str) -> None:
    """p50/p95 of job_status round trips over HTTP while four clients generate, and idle for comparison
    (printed for the report; the bound only catches a blocked event loop)."""
    busy: list[float] = []
    finished: list[str] = []

    async def timed_status(client: Client, job_id: str, into: list[float]) -> str:
        started = time.perf_counter()
        status = structured(await client.call_tool("job_status", {"job_id": job_id}))["status"]
        into.append(time.perf_counter() - started)
        return str(status)

    async def generating_client(index: int) -> None:
        async with http_client(token_server, TOKEN) as client:
            arguments = {"prompt": f"load {index}", "duration": 2, "seed": index, "wait_seconds": 0}
            [job] = structured(await client.call_tool("generate_music", arguments))["jobs"]
            while (status := await timed_status(client, job["job_id"], busy)) not in TERMINAL:
                await anyio.sleep(0.05)
            finished.append(status)

    async with anyio.create_task_group() as group:
        for index in range(4):
            group.start_soon(generating_client, index)
    assert finished == ["completed"] * 4

    idle: list[float] = []
    async with http_client(token_server, TOKEN) as client:
        job_id = structured(await client.call_tool("list_history", {"limit": 1}))["items"][0]["job_id"]
        for _ in range(len(busy)):
            await timed_status(client, job_id, idle)
    for label, samples in (("under 4 generating clients", busy), ("idle", idle)):
        p50, p95 = statistics.median(samples), statistics.quantiles(samples, n=20)[18]
        print(f"\njob_status over HTTP, {label}: n={len(samples)}", end=" ")
        print(f"p50={p50 * 1000:.1f} ms p95={p95 * 1000:.1f} ms")
    assert statistics.quantiles(busy, n=20)[18] < 2.0


async def test_sse_transport(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with http_server(tmp_path / "home", tiny_checkpoint, transport="sse") as (url, _):
        async with Client(sse_transport(url), mode="legacy") as client:
            [job] = structured(
                await client.call_tool(
                    "generate_music", {"prompt": "sse dub", "duration": 1, "wait_seconds": 300}
                )
            )["jobs"]
            samples, rate = decode_wav((await client.read_resource(job["audio"]["uri"])).contents)
    assert job["status"] == "completed" and samples.shape[0] == rate


def test_http_on_all_interfaces_without_a_token_refuses_to_start(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    result = subprocess.run(
        [DGX_MUSIC, "serve", "--transport", "http", "--host", "0.0.0.0", "--port", "1"],
        env=server_env(tmp_path / "home", tiny_checkpoint),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: --host 0.0.0.0") and "DGX_MUSIC_TOKEN" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


async def test_sigkill_mid_generation_then_restart_completes_the_job(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    with http_server(home, tiny_checkpoint) as (url, process):
        async with http_client(url) as client:
            [job] = structured(
                await client.call_tool(
                    "generate_music",
                    {"prompt": "survives a crash", "duration": 3, "seed": 5, "wait_seconds": 0},
                )
            )["jobs"]
            running = await _wait_for_progress(client, job["job_id"])
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
    assert running["status"] == "processing" and 0 < running["progress"] < 1

    with http_server(home, tiny_checkpoint) as (url, _):
        async with http_client(url) as client:
            done = structured(
                await client.call_tool("job_status", {"job_id": job["job_id"], "wait_seconds": 300})
            )
            history = structured(await client.call_tool("list_history", {"limit": 100}))
    assert done["status"] == "completed" and done["params"]["seed"] == 5
    assert [item["job_id"] for item in history["items"]] == [job["job_id"]]  # nothing lost, nothing doubled
    assert Path(done["audio"]["path"]).exists()


async def _wait_for_progress(client: Client, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = structured(await client.call_tool("job_status", {"job_id": job_id}))
        if job["status"] == "processing" and job["progress"] > 0:
            return job
        await anyio.sleep(0.05)
    raise AssertionError(f"job {job_id} never made progress: {job}")


def test_sigterm_on_stdio_requeues_the_running_job_and_exits(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """Claude Desktop ends its stdio servers with SIGTERM: the job in flight must go back to the queue.

    Raw JSON-RPC lines, so every line the server writes to stdout is also checked to be protocol.
    """
    home = tmp_path / "home"
    process = subprocess.Popen(
        [DGX_MUSIC, "serve"],
        env=server_env(home, tiny_checkpoint),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None
    stdin, stdout = process.stdin, process.stdout

    def call(request_id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
        stdin.write(
            json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}) + "\n"
        )
        stdin.flush()
        while True:
            message = json.loads(stdout.readline())  # anything but JSON-RPC on stdout fails here
            if message.get("id") == request_id:
                return dict(message["result"])

    def tool(request_id: int, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        return dict(
            call(request_id, "tools/call", {"name": name, "arguments": arguments})["structuredContent"]
        )

    try:
        call(
            1,
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        )
        stdin.write(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}) + "\n")
        [job] = tool(2, "generate_music", {"prompt": "long take", "duration": 30, "wait_seconds": 0})["jobs"]
        for request_id in range(3, 3000):
            status = tool(request_id, "job_status", {"job_id": job["job_id"], "wait_seconds": 1})
            if status["status"] == "processing" and status["progress"] > 0:
                break
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0 and time.monotonic() - started < 10
    finally:
        process.kill()
        process.wait()
    store = Store(home)
    requeued = store.get(job["job_id"])
    store.close()
    assert requeued.status == "pending" and requeued.attempts == 1
