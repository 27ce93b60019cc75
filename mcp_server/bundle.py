"""`dgx-music bundle`: an MCP Bundle (``.mcpb``) that installs this server into Claude Desktop in one click.

The bundle carries no Python: its launcher runs the ``dgx-music`` of the environment that wrote it (torch and
the weights are far too big to ship, and the GPU build is machine-specific). Claude Desktop asks for the
``user_config`` values at install time and passes them to the server as environment variables.
"""

from __future__ import annotations

import json
import shlex
import stat
import sys
import zipfile
from pathlib import Path
from typing import Any, cast

import anyio

from mcp_server import __version__
from mcp_server.config import Settings

LAUNCHER = "server/dgx-music"
_PLATFORMS = {"linux": "linux", "darwin": "darwin", "win32": "win32"}


def installed_command() -> Path:
    """The console script of the running environment (next to its python; a venv's python is a symlink,
    so it is not resolved)."""
    return Path(sys.executable).absolute().parent / "dgx-music"


def manifest(settings: Settings) -> dict[str, Any]:
    """The bundle's manifest.json (MCPB manifest version 0.3)."""
    return {
        "manifest_version": "0.3",
        "name": "dgx-music",
        "display_name": "DGX Music",
        "version": __version__,
        "description": "Generate music from text on this machine's GPU with MusicGen; searchable history; "
        "Ardour sessions.",
        "long_description": "An MCP server that generates instrumental music from text with Meta's MusicGen "
        "on a local GPU (or CPU), keeps a searchable history of every generation, writes "
        "loudness-normalised WAVs and exports them as ready-to-open Ardour sessions.",
        "author": {"name": "DGX Music contributors"},
        "license": "MIT",
        "keywords": ["music", "musicgen", "audio", "ardour", "generation"],
        "server": {
            "type": "binary",
            "entry_point": LAUNCHER,
            "mcp_config": {
                "command": "${__dirname}/" + LAUNCHER,
                "args": ["serve"],
                "env": {
                    "DGX_MUSIC_MODEL": "${user_config.model}",
                    "DGX_MUSIC_HOME": "${user_config.data_dir}",
                    "HF_HUB_OFFLINE": "${user_config.offline}",
                },
            },
        },
        "tools": _tools(),
        "compatibility": {"platforms": [_PLATFORMS.get(sys.platform, "linux")]},
        "user_config": {
            "model": {
                "type": "string",
                "title": "Model",
                "description": "MusicGen alias (small, medium, large, melody, stereo-small, ...), Hugging "
                "Face id, or a local checkpoint directory. Fetch it first with `dgx-music pull MODEL`.",
                "default": settings.model,
                "required": True,
            },
            "data_dir": {
                "type": "directory",
                "title": "Data directory",
                "description": "Where the history database, the WAVs and the Ardour sessions are kept.",
                "default": str(settings.home),
                "required": True,
            },
            "offline": {
                "type": "boolean",
                "title": "Offline",
                "description": "Load weights only from the local Hugging Face cache (no network at start).",
                "default": True,
            },
        },
    }


def launcher_script(command: Path) -> str:
    """A shell launcher: the bundle's entry point, running the installed console script."""
    quoted = shlex.quote(str(command))
    return (
        "#!/bin/sh\n"
        "# Written by `dgx-music bundle`: runs dgx-music from the environment that built this bundle.\n"
        f"if [ ! -x {quoted} ]; then\n"
        f'  echo "dgx-music: {command} is gone; reinstall, then run dgx-music bundle again" >&2\n'
        "  exit 1\n"
        "fi\n"
        f'exec {quoted} "$@"\n'
    )


def write_bundle(out: Path, settings: Settings, command: Path | None = None) -> Path:
    """Write the ``.mcpb`` (a zip of manifest.json and the launcher) to ``out``; returns its path."""
    command = command or installed_command()
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("manifest.json", json.dumps(manifest(settings), indent=2) + "\n")
        entry = zipfile.ZipInfo(LAUNCHER)
        entry.external_attr = (stat.S_IFREG | 0o755) << 16  # executable once unpacked
        entry.compress_type = zipfile.ZIP_DEFLATED
        bundle.writestr(entry, launcher_script(command))
    return out


def _tools() -> list[dict[str, str]]:
    """The tools as the server lists them, so the install dialog and the server cannot disagree.

    Building the MCP server only registers the tool functions; none of them runs, so no service is needed.
    """
    from mcp_server.server import build_server
    from mcp_server.service import JobService

    app = build_server(cast(JobService, None))
    tools = anyio.run(app.list_tools)
    return [{"name": tool.name, "description": (tool.description or "").split("\n")[0]} for tool in tools]
