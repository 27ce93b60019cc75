"""Input files for continue_from / melody_from: only inside the allowed directories, with '..' and symlinks
resolved first; DGX_MUSIC_INPUT_DIRS configures them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mcp_server.config import Settings
from mcp_server.inputs import InputPathError, resolve_input


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path, Path]:
    inputs, sessions, outside = tmp_path / "inputs", tmp_path / "sessions", tmp_path / "outside"
    for directory in (inputs, sessions / "song" / "interchange" / "song" / "audiofiles", outside):
        directory.mkdir(parents=True)
    (inputs / "take.wav").write_bytes(b"RIFF")
    (sessions / "song" / "interchange" / "song" / "audiofiles" / "clip.wav").write_bytes(b"RIFF")
    (outside / "secret.wav").write_bytes(b"RIFF")
    return inputs, sessions, outside


def _refused(path: str, allowed: list[Path], argument: str = "continue_from") -> str:
    with pytest.raises(InputPathError) as error:
        resolve_input(path, allowed, argument)
    assert error.value.argument == argument and str(error.value).startswith(f"{argument}: ")
    return str(error.value)


def test_files_inside_the_allowed_directories_resolve(dirs: tuple[Path, Path, Path]) -> None:
    inputs, sessions, _ = dirs
    allowed = [inputs, sessions]
    assert (
        resolve_input(str(inputs / "take.wav"), allowed, "continue_from") == (inputs / "take.wav").resolve()
    )
    clip = sessions / "song" / "interchange" / "song" / "audiofiles" / "clip.wav"
    assert resolve_input(str(clip), allowed, "melody_from") == clip.resolve()
    # A relative name is looked up in each allowed directory in turn.
    assert resolve_input("take.wav", allowed, "continue_from") == (inputs / "take.wav").resolve()
    assert resolve_input("song/interchange/song/audiofiles/clip.wav", allowed, "x") == clip.resolve()
    # '..' that stays inside is fine: only where a path really leads counts.
    assert (
        resolve_input(str(inputs / ".." / "inputs" / "take.wav"), allowed, "x")
        == (inputs / "take.wav").resolve()
    )
    # A symlink to a file inside the allowed directories is that file.
    (inputs / "alias.wav").symlink_to(clip)
    assert resolve_input("alias.wav", allowed, "x") == clip.resolve()


def test_paths_leading_outside_are_refused(dirs: tuple[Path, Path, Path]) -> None:
    inputs, sessions, outside = dirs
    allowed = [inputs, sessions]
    assert "outside the input directories" in _refused(str(outside / "secret.wav"), allowed)
    assert "outside the input directories" in _refused("../outside/secret.wav", allowed, "melody_from")
    assert "outside" in _refused(str(inputs / ".." / "outside" / "secret.wav"), allowed)
    (inputs / "link.wav").symlink_to(outside / "secret.wav")
    assert "symlinks" in _refused("link.wav", allowed)
    (inputs / "escape").symlink_to(outside, target_is_directory=True)
    assert "outside" in _refused(str(inputs / "escape" / "secret.wav"), allowed)
    assert "outside" in _refused("/etc/passwd", allowed)


def test_missing_and_odd_paths_are_refused(dirs: tuple[Path, Path, Path]) -> None:
    inputs, sessions, _ = dirs
    allowed = [inputs, sessions]
    message = _refused("nope.wav", allowed)
    assert "no file 'nope.wav'" in message and str(inputs) in message and str(sessions) in message
    assert "not a regular file" in _refused(str(inputs), allowed)
    assert "empty or invalid" in _refused("  ", allowed)
    assert "empty or invalid" in _refused("a\x00b", allowed)
    assert "DGX_MUSIC_INPUT_DIRS" in _refused("take.wav", [])


def test_input_directories_setting(tmp_path: Path) -> None:
    home = tmp_path / "home"
    default = Settings.load({"DGX_MUSIC_HOME": str(home)})
    assert default.input_directories == (home.resolve() / "inputs", home.resolve() / "sessions")
    configured = Settings.load(
        {"DGX_MUSIC_HOME": str(home), "DGX_MUSIC_INPUT_DIRS": os.pathsep.join(["/srv/takes", "mine", ""])}
    )
    assert configured.input_directories == (Path("/srv/takes"), home.resolve() / "mine")
