"""`dgx-music bundle` writes an MCP Bundle that the official `@anthropic-ai/mcpb` CLI (pinned in
tests/mcpb/package.json, installed with `npm ci`) accepts, and that starts a working server when launched the
way Claude Desktop launches it: unpacked, ${__dirname} and ${user_config.*} substituted, over stdio."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters
from mcp_testing import DGX_MUSIC, server_env, structured

MCPB_DIR = Path(__file__).parent / "mcpb"
TOOLS = {
    "generate_music", "extend_music", "job_status", "list_history", "export_to_ardour", "cancel_job",
    "edit_music", "remix", "separate_stems", "delete_generation",
}  # fmt: skip


@pytest.fixture(scope="session")
def mcpb() -> Path:
    """The pinned mcpb CLI, installed from the lock file on first use."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed (apt-get install nodejs npm): mcpb cannot run")
    cli = MCPB_DIR / "node_modules" / ".bin" / "mcpb"
    if not cli.exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=MCPB_DIR, check=True, timeout=600)
    return cli


@pytest.fixture
def bundle(tmp_path: Path, tiny_checkpoint: Path) -> Path:
    out = tmp_path / "dgx-music.mcpb"
    home = tmp_path / "data"
    result = subprocess.run(
        [DGX_MUSIC, "bundle", "--out", str(out), "--model", str(tiny_checkpoint), "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out) and "double-click" in result.stderr
    return out


def test_mcpb_validates_the_bundle(mcpb: Path, bundle: Path, tmp_path: Path, tiny_checkpoint: Path) -> None:
    unpacked = tmp_path / "unpacked"
    subprocess.run([mcpb, "unpack", bundle, unpacked], check=True, capture_output=True, timeout=120)
    validated = subprocess.run([mcpb, "validate", unpacked / "manifest.json"], capture_output=True, text=True)
    assert validated.returncode == 0 and "validation passes" in validated.stdout, validated.stdout
    info = subprocess.run([mcpb, "info", bundle], capture_output=True, text=True, timeout=120)
    assert info.returncode == 0 and "dgx-music.mcpb" in info.stdout, info.stdout + info.stderr

    manifest = json.loads((unpacked / "manifest.json").read_text())
    config = manifest["server"]["mcp_config"]
    assert config["env"]["DGX_MUSIC_MODEL"] == "${user_config.model}"
    assert config["env"]["DGX_MUSIC_HOME"] == "${user_config.data_dir}"
    assert manifest["user_config"]["model"]["default"] == str(tiny_checkpoint)
    assert manifest["user_config"]["data_dir"]["type"] == "directory"
    assert {tool["name"] for tool in manifest["tools"]} == TOOLS
    launcher = unpacked / manifest["server"]["entry_point"]
    assert launcher.stat().st_mode & 0o111, "the launcher must stay executable once unpacked"
    assert str(Path(DGX_MUSIC).absolute()) in launcher.read_text()  # the installed environment's server


@pytest.mark.anyio
async def test_the_bundle_starts_the_server_as_claude_desktop_would(
    mcpb: Path, bundle: Path, tmp_path: Path, tiny_checkpoint: Path
) -> None:
    unpacked = tmp_path / "installed"
    subprocess.run([mcpb, "unpack", bundle, unpacked], check=True, capture_output=True, timeout=120)
    manifest = json.loads((unpacked / "manifest.json").read_text())
    chosen = {"model": str(tiny_checkpoint), "data_dir": str(tmp_path / "chosen-home"), "offline": "true"}

    def substitute(text: str) -> str:
        text = text.replace("${__dirname}", str(unpacked))
        return re.sub(r"\$\{user_config\.(\w+)\}", lambda match: chosen[match.group(1)], text)

    config = manifest["server"]["mcp_config"]
    env = server_env(tmp_path / "unused", tiny_checkpoint)
    env.update({key: substitute(value) for key, value in config["env"].items()})
    params = StdioServerParameters(
        command=substitute(config["command"]), args=[substitute(arg) for arg in config["args"]], env=env
    )
    async with Client(params, mode="legacy") as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        page = structured(await client.call_tool("list_history", {"limit": 1}))
    assert names == TOOLS and page["items"] == []
    assert (tmp_path / "chosen-home" / "dgx-music.db").exists()  # the data directory the user chose
