"""Helpers for the MCP tests: start `dgx-music serve` as a subprocess, connect the official client."""

from __future__ import annotations

import base64
import io
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_types import BlobResourceContents, CallToolResult

DGX_MUSIC = shutil.which("dgx-music", path=str(Path(sys.executable).parent)) or "dgx-music"
TOKEN = "test-token-0123456789abcdef"


def server_env(home: Path, checkpoint: Path, **extra: str) -> dict[str, str]:
    """What a client must pass a stdio child: it inherits almost nothing from its parent."""
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
    env.update(DGX_MUSIC_HOME=str(home), DGX_MUSIC_MODEL=str(checkpoint), DGX_MUSIC_DEVICE="cpu")
    env["OMP_NUM_THREADS"] = "1"  # CI shares 2 cores between many processes: one thread per server
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def http_server(
    home: Path, checkpoint: Path, transport: str = "http", token: str | None = None, **extra: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`dgx-music serve --transport http|sse` on a free loopback port; yields (base URL, process)."""
    port = free_port()
    env = server_env(home, checkpoint, **extra)
    if token:
        env["DGX_MUSIC_TOKEN"] = token
    log = open(home.parent / f"server-{port}.log", "wb")  # noqa: SIM115  # closed below, read on failure
    process = subprocess.Popen(
        [DGX_MUSIC, "serve", "--transport", transport, "--port", str(port)], env=env, stdout=log, stderr=log
    )
    try:
        wait_for_port(port, process, log.name)
        yield f"http://127.0.0.1:{port}", process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


def wait_for_port(port: int, process: subprocess.Popen[bytes], log_name: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"server exited with {process.returncode}:\n{Path(log_name).read_text()[-3000:]}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"server did not listen on {port} within {timeout} s")


def wait_healthy(url: str, headers: dict[str, str] | None = None, timeout: float = 120.0) -> dict[str, Any]:
    """Until GET /health says the worker can run jobs (the model has loaded); its body."""
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(url + "/health", headers=headers, timeout=30)
        if response.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert response.status_code == 200, f"/health never became 200: {response.text}"
    return dict(response.json())


@asynccontextmanager
async def http_client(url: str, token: str | None = None, mode: Any = "auto") -> AsyncIterator[Client]:
    """The official client over streamable HTTP, sending the bearer token when given."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with create_mcp_http_client(headers=headers) as http:
        transport = streamable_http_client(url + "/mcp", http_client=http, max_sse_event_size=None)
        async with Client(transport, mode=mode) as client:
            yield client


def sse_transport(url: str) -> Any:
    return sse_client(url + "/sse")


def structured(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


def waited_jobs(result: CallToolResult) -> dict[str, Any]:
    """The structured result of a call that waited for jobs: a tool error exactly when one of them failed,
    with why it failed first in the text."""
    assert result.structured_content is not None, result.content
    content = result.structured_content
    failed = [job for job in content.get("jobs", [content]) if job["status"] == "failed"]
    assert result.is_error == bool(failed), (result.is_error, content)
    for job in failed:
        assert f"job {job['job_id']} failed: {job['error']}" in error_text(result)
    return content


def error_text(result: CallToolResult) -> str:
    assert result.is_error, result.structured_content
    return " ".join(getattr(block, "text", "") for block in result.content)


def decode_wav(contents: Any) -> tuple[np.ndarray, int]:
    """The samples of an audio/wav blob resource, decoded by libsndfile."""
    [blob] = contents
    assert isinstance(blob, BlobResourceContents)
    assert blob.mime_type == "audio/wav"
    data, rate = sf.read(io.BytesIO(base64.b64decode(blob.blob)), always_2d=True)
    return data, rate
