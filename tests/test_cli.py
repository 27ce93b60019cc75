"""`dgx-music`: generate into the shared history, browse it, manage the schema, and fail in one line."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import soundfile as sf
from mcp_testing import DGX_MUSIC, server_env
from typer.testing import CliRunner, Result

from mcp_server.cli import app

Run = Callable[..., Result]


@pytest.fixture
def run(tiny_checkpoint: Path, data_home: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    monkeypatch.setenv("DGX_MUSIC_HOME", str(data_home))
    monkeypatch.setenv("DGX_MUSIC_MODEL", str(tiny_checkpoint))
    monkeypatch.setenv("DGX_MUSIC_DEVICE", "cpu")
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def one_line_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(fragment in lines[0] for fragment in fragments), lines[0]
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_generate_keeps_the_take_in_the_history_and_copies_it(run: Run, tmp_path: Path) -> None:
    out = tmp_path / "takes" / "piano.wav"
    result = run("generate", "gentle piano arpeggio", "--duration", "1", "--seed", "3", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert str(out) in result.stdout and "LUFS" in result.stdout and "wall" in result.stdout
    assert "seed 3" in result.stdout
    samples, rate = sf.read(out, always_2d=True)
    assert samples.shape[0] == rate and abs(samples).max() > 0

    listed = run("history", "piano")
    assert listed.exit_code == 0 and "gentle piano arpeggio" in listed.stdout and "completed" in listed.stdout
    assert "no generations match" in run("history", "trombone").stderr
    assert "gentle piano" in run("history", "--status", "completed", "--limit", "1").stdout
    [job] = json.loads(run("history", "--json").stdout)
    assert job["status"] == "completed" and job["params"]["seed"] == 3 and job["audio"]["duration_s"] == 1.0


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["generate", "x", "--duration", "0"], ["duration", "[1, 30]"]),
        (["generate", "   "], ["prompt", "not blank"]),
        (["generate", "x", "--loudness", "3"], ["loudness_lufs", "[-40, -6]"]),
        (["history", "--status", "done"], ["status"]),
    ],
)
def test_invalid_input_is_one_actionable_line(run: Run, args: list[str], fragments: list[str]) -> None:
    one_line_error(run(*args), *fragments)


def test_unknown_model_is_one_actionable_line(run: Run, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    one_line_error(
        run("generate", "x", "--duration", "1", "--model", str(missing)), str(missing), "not available"
    )


def test_invalid_setting_names_the_variable(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DGX_MUSIC_MAX_BATCH", "0")
    one_line_error(run("serve"), "DGX_MUSIC_MAX_BATCH", "--max-batch", "greater than or equal to 1")


def test_token_is_never_echoed(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DGX_MUSIC_TOKEN", "short-secret")
    result = run("serve", "--transport", "http")
    one_line_error(result, "DGX_MUSIC_TOKEN", "at least 16")
    assert "short-secret" not in result.output + result.stderr


def test_db_current_and_upgrade(run: Run) -> None:
    before = run("db", "current")
    assert before.exit_code == 0 and "none (empty)" in before.stdout and "db upgrade" in before.stdout
    upgraded = run("db", "upgrade")
    assert upgraded.exit_code == 0 and "(head)" in upgraded.stdout
    after = run("db", "current")
    assert after.exit_code == 0 and "up to date" in after.stdout


def test_console_script_fails_in_one_line(tiny_checkpoint: Path, data_home: Path) -> None:
    result = subprocess.run(
        [DGX_MUSIC, "generate", "a tune", "--duration", "31"],
        env=server_env(data_home, tiny_checkpoint),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == "error: duration: duration must be in [1, 30] seconds (got 31.0)"
