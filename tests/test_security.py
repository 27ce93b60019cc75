"""Nobody gets in, and nothing leaves the data directory.

- HTTP refuses to start off loopback without a token, and never echoes a token it refuses;
- requests without the token, or with a wrong one, get 401, and no token reaches the log;
- Host/Origin checks stop a DNS-rebinding page from driving a loopback server;
- oversize bodies are refused before they are parsed;
- no tool or resource reads or writes outside DGX_MUSIC_HOME: ids and URIs with ``..``, absolute paths,
  path-like session names, and symlinks planted inside the data directory.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import soundfile as sf
from mcp import Client, MCPError
from mcp_testing import DGX_MUSIC, TOKEN, free_port, http_client, server_env, structured
from reliability_helpers import INITIALIZE, Server, in_process, is_crash, serve_http, snapshot_tree, tool_text

from mcp_server.config import ConfigError, check_http_exposure

WRONG_TOKEN = "wrong-token-zyxwvutsrqponm"
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def post(url: str, headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
    return httpx.post(url + "/mcp", headers={**MCP_HEADERS, **(headers or {})}, timeout=30, **kwargs)


# --- refusing to start ------------------------------------------------------------------------------------


def refused_start(home: Path, checkpoint: Path, host: str, transport: str, **env: str) -> str:
    """Run `serve` off loopback; it must exit with an error before it serves. Returns its stderr."""
    port = free_port()
    process = subprocess.run(
        [DGX_MUSIC, "serve", "--transport", transport, "--host", host, "--port", str(port)],
        env=server_env(home, checkpoint, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode != 0, process.stdout + process.stderr
    assert "serving MCP" not in process.stderr  # refused before binding, not after
    return process.stderr


@pytest.mark.parametrize(
    ("host", "transport"), [("0.0.0.0", "http"), ("::", "http"), ("0.0.0.0", "sse"), ("10.255.255.1", "http")]
)
def test_non_loopback_bind_without_a_token_refuses_to_start(
    tiny_checkpoint: Path, data_home: Path, host: str, transport: str
) -> None:
    stderr = refused_start(data_home, tiny_checkpoint, host, transport)
    assert "DGX_MUSIC_TOKEN" in stderr and host in stderr


def test_a_too_short_token_is_refused_without_echoing_it(tiny_checkpoint: Path, data_home: Path) -> None:
    short = "sh0rt-secret"
    stderr = refused_start(data_home, tiny_checkpoint, "0.0.0.0", "http", DGX_MUSIC_TOKEN=short)
    assert "DGX_MUSIC_TOKEN" in stderr and short not in stderr


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_loopback_addresses_need_no_token(host: str) -> None:
    check_http_exposure(None, host)


@pytest.mark.parametrize("host", ["127.evil.example", "127.0.0.1.nip.io"])
def test_a_hostname_that_merely_starts_with_127_needs_a_token(host: str) -> None:
    with pytest.raises(ConfigError, match="DGX_MUSIC_TOKEN"):
        check_http_exposure(None, host)


# --- authentication and Host/Origin checks ----------------------------------------------------------------


@pytest.fixture(scope="module")
def token_server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serve_http(tmp_path_factory.mktemp("auth") / "home", tiny_checkpoint, token=TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def open_server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Loopback without a token: the set-up a DNS-rebinding page in a local browser would target."""
    with serve_http(tmp_path_factory.mktemp("open") / "home", tiny_checkpoint) as server:
        yield server


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        f"Bearer {WRONG_TOKEN}",
        f"bearer {TOKEN}",
        f"Basic {TOKEN}",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        TOKEN,
    ],
)
def test_requests_without_the_exact_token_get_401_and_no_token_is_logged(
    token_server: Server, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    for method in ("POST", "GET", "DELETE"):
        response = httpx.request(
            method, token_server.url + "/mcp", headers={**MCP_HEADERS, **headers}, json=INITIALIZE, timeout=30
        )
        assert response.status_code == 401, (method, authorization, response.text)
        assert TOKEN not in response.text
    assert post(token_server.url, {"Authorization": f"Bearer {TOKEN}"}, json=INITIALIZE).status_code == 200

    logged = token_server.log() + (token_server.home / "logs" / "server.log").read_text()
    assert "refused" in logged  # the refusals are logged ...
    assert TOKEN not in logged and WRONG_TOKEN not in logged  # ... without any token


@pytest.mark.anyio
async def test_the_right_token_opens_a_real_session(token_server: Server) -> None:
    async with http_client(token_server.url, token=TOKEN) as client:
        page = structured(await client.call_tool("list_history", {"limit": 1}))
    assert page["items"] == []


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Host": "evil.example"}, 421),
        ({"Host": "evil.example:80"}, 421),
        ({"Host": "127.0.0.1.evil.example"}, 421),
        ({"Origin": "http://evil.example"}, 403),
        ({"Origin": "http://127.0.0.1.evil.example"}, 403),
        ({"Origin": "null"}, 403),
    ],
)
def test_dns_rebinding_is_refused(open_server: Server, headers: dict[str, str], status: int) -> None:
    """A page on evil.example whose name now resolves to 127.0.0.1 sends its own Host and Origin."""
    response = post(open_server.url, headers, json=INITIALIZE)
    assert response.status_code == status, response.text
    port = open_server.url.rsplit(":", 1)[1]
    good = post(
        open_server.url, {"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"}, json=INITIALIZE
    )
    assert good.status_code == 200, good.text


@pytest.fixture(scope="module")
def sse_server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("sse") / "home"
    with serve_http(home, tiny_checkpoint, token=TOKEN, transport="sse") as server:
        yield server


def test_sse_needs_the_token_and_checks_host_and_origin(sse_server: Server) -> None:
    """The deprecated SSE transport gets the same door: token first, then Host/Origin."""
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    message = sse_server.url + "/messages/?session_id=0123456789abcdef0123456789abcdef"
    for headers, status in [
        ({}, 401),
        ({"Authorization": f"Bearer {WRONG_TOKEN}"}, 401),
        ({**bearer, "Host": "evil.example"}, 421),
        ({**bearer, "Origin": "http://evil.example"}, 403),
    ]:
        with httpx.stream("GET", sse_server.url + "/sse", headers=headers, timeout=30) as stream:
            assert stream.status_code == status, headers
        assert httpx.post(message, headers=headers, json=INITIALIZE, timeout=30).status_code == status
    with httpx.stream("GET", sse_server.url + "/sse", headers=bearer, timeout=30) as stream:
        assert stream.status_code == 200
    assert httpx.post(message, headers=bearer, content=b"x" * 10_000_000, timeout=60).status_code == 413
    assert TOKEN not in sse_server.log() + (sse_server.home / "logs" / "server.log").read_text()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_oversize_request_is_refused_and_the_server_keeps_serving(
    open_server: Server, chunked: bool
) -> None:
    big = (
        b'{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"pad": "'
        + b"x" * 10_000_000
        + b'"}}'
    )
    body: Any = iter([big[i : i + 65536] for i in range(0, len(big), 65536)]) if chunked else big
    response = post(open_server.url, content=body)
    assert response.status_code == 413, response.text[:200]
    assert post(open_server.url, json=INITIALIZE).status_code == 200


# --- the data directory is the boundary -------------------------------------------------------------------

UNSAFE_IDS = [
    "..",
    "../../../../etc/passwd",
    "/etc/passwd",
    "outputs/../dgx-music.db",
    "~",
    "%2e%2e%2f",
    "\\..\\",
]
UNSAFE_SESSION_NAMES = [
    "..",
    "../escape",
    "../../escape",
    "/tmp/escape",
    "sessions/../../escape",
    "..\\..\\escape",
    "~/escape",
    "a/b/c",
    "\x00escape",
    "escape\n..",
]


def outside(home: Path) -> dict[str, tuple[int, int]]:
    """Everything next to the data directory, where an escaping path would land."""
    return {
        name: facts for name, facts in snapshot_tree(home.parent).items() if name.split("/")[0] != home.name
    }


async def completed_job(client: Client, prompt: str = "security clip") -> dict[str, Any]:
    result = await client.call_tool("generate_music", {"prompt": prompt, "duration": 1, "wait_seconds": 120})
    [job] = structured(result)["jobs"]
    assert job["status"] == "completed", job
    return dict(job)


@pytest.mark.anyio
async def test_ids_and_uris_cannot_reach_outside(tiny_checkpoint: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (tmp_path / "secret.txt").write_text("top secret")
    async with in_process(home, tiny_checkpoint) as (_, client):
        job = await completed_job(client)
        before = outside(home)
        for unsafe in UNSAFE_IDS:
            calls: list[tuple[str, dict[str, Any]]] = [
                ("job_status", {"job_id": unsafe}),
                ("cancel_job", {"job_id": unsafe}),
                ("export_to_ardour", {"job_ids": [unsafe], "session_name": "s"}),
                ("export_to_ardour", {"job_ids": [job["job_id"], unsafe], "session_name": "s"}),
            ]
            for tool, arguments in calls:
                result = await client.call_tool(tool, arguments)
                assert result.is_error and not is_crash(result, tool), (tool, unsafe, tool_text(result))
                assert "not found" in tool_text(result), (tool, unsafe, tool_text(result))
            for uri in [
                f"music://generations/{unsafe}",
                f"music://generations/{unsafe}/audio",
                f"music://generations/{job['job_id']}/{unsafe}",
                f"music://generations/{job['job_id']}/audio/{unsafe}",
            ]:
                with pytest.raises(MCPError) as refused:
                    await client.read_resource(uri, cache_mode="bypass")
                assert "secret" not in refused.value.error.message
        assert outside(home) == before
        assert not (home / "sessions").exists() or not any((home / "sessions").iterdir())


@pytest.mark.anyio
async def test_clients_cannot_point_the_model_at_local_paths(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """Only the operator (DGX_MUSIC_MODEL) names a checkpoint directory; a client gets aliases and hub ids."""
    home = tmp_path / "home"
    other_checkpoint = tmp_path / "other"
    other_checkpoint.symlink_to(tiny_checkpoint)
    async with in_process(home, tiny_checkpoint) as (_, client):
        for model in [str(other_checkpoint), "/etc", "../../etc", "~/.ssh", "./x"]:
            result = await client.call_tool(
                "generate_music", {"prompt": "p", "model": model, "wait_seconds": 0}
            )
            assert result.is_error and not is_crash(result, "generate_music"), (model, tool_text(result))
            assert "model: local paths are not accepted" in tool_text(result), tool_text(result)
        configured = await client.call_tool(
            "generate_music", {"prompt": "p", "duration": 1, "model": str(tiny_checkpoint), "wait_seconds": 0}
        )
        assert not configured.is_error, tool_text(configured)
        history = structured(await client.call_tool("list_history", {"limit": 100}))["items"]
        assert [job["model"] for job in history] == [str(tiny_checkpoint)]


@pytest.mark.anyio
async def test_path_like_session_names_stay_inside_sessions(tiny_checkpoint: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    async with in_process(home, tiny_checkpoint) as (_, client):
        job = await completed_job(client)
        before = outside(home)
        for name in UNSAFE_SESSION_NAMES:
            result = await client.call_tool(
                "export_to_ardour", {"job_ids": [job["job_id"]], "session_name": name}
            )
            assert not is_crash(result, "export_to_ardour"), (name, tool_text(result))
            if not result.is_error:
                session_dir = Path(structured(result)["session_dir"]).resolve()
                assert session_dir.parent == (home / "sessions").resolve(), (name, session_dir)
        assert outside(home) == before
        assert {path.parent for path in (home / "sessions").iterdir()} == {home / "sessions"}


@pytest.mark.anyio
async def test_a_symlinked_sessions_dir_pointing_outside_is_refused(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    async with in_process(home, tiny_checkpoint) as (_, client):
        job = await completed_job(client)
        elsewhere.mkdir()
        (home / "sessions").symlink_to(elsewhere, target_is_directory=True)
        result = await client.call_tool(
            "export_to_ardour", {"job_ids": [job["job_id"]], "session_name": "song"}
        )
        assert not is_crash(result, "export_to_ardour"), tool_text(result)
        assert list(elsewhere.iterdir()) == [], "a session was written outside the data directory"
        assert result.is_error and "sessions" in tool_text(result)


@pytest.mark.anyio
async def test_a_symlink_planted_inside_sessions_is_not_followed(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    elsewhere.mkdir()
    async with in_process(home, tiny_checkpoint) as (_, client):
        job = await completed_job(client)
        (home / "sessions").mkdir()
        (home / "sessions" / "song").symlink_to(elsewhere, target_is_directory=True)
        result = await client.call_tool(
            "export_to_ardour", {"job_ids": [job["job_id"]], "session_name": "song"}
        )
        manifest = structured(result)
    assert list(elsewhere.iterdir()) == []
    assert Path(manifest["session_dir"]).parent == home / "sessions" and manifest["renamed"]


@pytest.mark.anyio
async def test_a_wav_swapped_for_a_symlink_outside_is_never_served_or_exported(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """Someone replaces a finished WAV with a symlink to audio outside the data directory."""
    home = tmp_path / "home"
    private = tmp_path / "private.wav"
    sf.write(private, [[0.25, -0.25]] * 32000, 32000, subtype="PCM_24")
    async with in_process(home, tiny_checkpoint) as (_, client):
        job = await completed_job(client)
        wav = Path(job["audio"]["path"])
        wav.unlink()
        wav.symlink_to(private)

        with pytest.raises(MCPError) as refused:
            await client.read_resource(job["audio"]["uri"], cache_mode="bypass")
        assert "sha256" in refused.value.error.message or "checksum" in refused.value.error.message

        result = await client.call_tool(
            "export_to_ardour", {"job_ids": [job["job_id"]], "session_name": "leak"}
        )
        assert not is_crash(result, "export_to_ardour"), tool_text(result)
        exported = list((home / "sessions").rglob("*.wav")) if (home / "sessions").exists() else []
        assert result.is_error and exported == [], f"exported the planted file: {exported}"
