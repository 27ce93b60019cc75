"""Clients nobody here wrote, against `dgx-music serve` subprocesses: Claude Code and the MCP Inspector CLI.

Both come from npm at the versions pinned in tests/clients/package-lock.json (installed at those versions on
first use; .ci/run guarantees Node.js). Claude Code runs with HOME in a temporary directory, so the
developer's own configuration is never read or changed. No client here needs a model API or a browser.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from mcp_testing import DGX_MUSIC, TOKEN, http_server

CLIENTS = Path(__file__).resolve().parent / "clients"
TOOLS = {
    "generate_music", "extend_music", "job_status", "list_history", "export_to_ardour", "cancel_job",
    "edit_music", "remix", "separate_stems", "delete_generation",
}  # fmt: skip

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def node_bin() -> Path:
    """tests/clients/node_modules/.bin, installed from the lock file when missing or stale."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        if os.environ.get("CI"):
            pytest.fail("Node.js/npm are missing; .ci/run installs them (apt-get install nodejs npm)")
        pytest.skip("Node.js is not installed (apt-get install nodejs npm); the real-client tests need it")
    installed = CLIENTS / "node_modules" / ".package-lock.json"
    lock = CLIENTS / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        # `npm install --no-save` at the lock's versions, not `npm ci`: vite (the Inspector's) names a
        # Windows-only optional dependency the registry no longer serves, which `npm ci` calls a stale lock.
        # Install scripts run: Claude Code's copies its native binary out of its platform package.
        subprocess.run(
            ["npm", "install", "--no-save", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=CLIENTS,
            check=True,
            timeout=900,
        )
    return CLIENTS / "node_modules" / ".bin"


def client_env(home: Path) -> dict[str, str]:
    """A clean environment: a throw-away HOME, no auto-update, no telemetry, no colour codes."""
    home.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "NO_COLOR": "1",
    }


@pytest.fixture
def claude(node_bin: Path, tmp_path: Path) -> Run:
    project = tmp_path / "project"  # not a git checkout: Claude Code keys local config by directory
    project.mkdir()
    env = client_env(tmp_path / "claude-home")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(node_bin / "claude"), *args],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )

    return run


@pytest.fixture
def inspector(node_bin: Path, tmp_path: Path) -> Run:
    env = client_env(tmp_path / "inspector-home")

    def run(url: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(node_bin / "mcp-inspector"), "--cli", url, "--transport", "http", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            stdin=subprocess.DEVNULL,
        )

    return run


def line_for(output: str, name: str) -> str:
    return next((line for line in output.splitlines() if line.startswith(f"{name}:")), "")


def test_claude_code_lists_the_server_connected_without_schema_warnings(
    claude: Run, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """Issue 17 items 5 and 7: stdio and HTTP (with the token) connect, no `unknown format` warnings, and a
    server added without the token fails with the reason our 401 gives."""
    stdio_env = [
        f"DGX_MUSIC_HOME={tmp_path / 'stdio-home'}",
        f"DGX_MUSIC_MODEL={tiny_checkpoint}",
        "DGX_MUSIC_DEVICE=cpu",
        "OMP_NUM_THREADS=1",
    ]
    options = [part for pair in stdio_env for part in ("-e", pair)]
    added = claude("mcp", "add", "dgx-stdio", *options, "--", DGX_MUSIC, "serve")
    assert added.returncode == 0, added.stderr
    with http_server(tmp_path / "http-home", tiny_checkpoint, token=TOKEN) as (url, _):
        header = f"Authorization: Bearer {TOKEN}"
        for name, extra in (("dgx-http", ["--header", header]), ("dgx-no-token", [])):
            added = claude("mcp", "add", "--transport", "http", name, url + "/mcp", *extra)
            assert added.returncode == 0, added.stderr
        listed = claude("mcp", "list")
        details = claude("mcp", "get", "dgx-stdio")
    output = listed.stdout + listed.stderr
    assert listed.returncode == 0, output
    assert "Connected" in line_for(listed.stdout, "dgx-stdio"), output
    assert "Connected" in line_for(listed.stdout, "dgx-http"), output
    refused = line_for(listed.stdout, "dgx-no-token")
    assert "Failed" in refused and "Authorization: Bearer <token>" in refused, output
    assert "DGX_MUSIC_TOKEN" in refused, output
    shown = details.stdout + details.stderr
    assert details.returncode == 0 and "Connected" in shown, shown
    for text in (output, shown):
        assert "unknown format" not in text and "ignored in schema" not in text, text


def test_inspector_cli_connects_with_the_token_and_reads_the_401_without(
    inspector: Run, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """Item 7: with the token header the Inspector lists and calls tools; without it, it reports our 401
    body (which names the header) instead of starting an OAuth flow it cannot finish."""
    header = ["--header", f"Authorization: Bearer {TOKEN}"]
    with http_server(tmp_path / "home", tiny_checkpoint, token=TOKEN) as (url, _):
        listed = inspector(url + "/mcp", "--method", "tools/list", *header)
        called = inspector(
            url + "/mcp",
            "--method",
            "tools/call",
            "--tool-name",
            "generate_music",
            "--tool-arg",
            "prompt=inspector take",
            "--tool-arg",
            "duration=1",
            "--tool-arg",
            "wait_seconds=90",
            *header,
        )
        refused = inspector(url + "/mcp", "--method", "tools/list", "--stored-auth-only")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    tools = json.loads(listed.stdout)["tools"]
    assert {tool["name"] for tool in tools} == TOOLS
    assert '"format": "path"' not in listed.stdout and "unknown format" not in listed.stderr
    assert called.returncode == 0, called.stdout + called.stderr
    result = json.loads(called.stdout)
    [job] = result["structuredContent"]["jobs"]
    assert job["status"] == "completed" and job["audio"]["duration_s"] == 1.0, result
    assert refused.returncode != 0
    said = refused.stdout + refused.stderr
    assert "Authorization: Bearer <token>" in said and "DGX_MUSIC_TOKEN" in said, said
