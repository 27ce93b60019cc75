"""`dgx-music`: generate into the shared history, browse it, manage the schema, and fail in one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import soundfile as sf
from mcp_testing import DGX_MUSIC, server_env
from typer.testing import CliRunner, Result

from ardour_templates.verify import inspect_session
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
    assert result.stdout == f"{out}\n"  # only the path: the summary is for people, on stderr
    assert "LUFS" in result.stderr and "wall" in result.stderr and "seed 3" in result.stderr
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
        (["generate", "x", "--duration", "0"], ["duration", "[1, 300]"]),
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
        [DGX_MUSIC, "generate", "a tune", "--duration", "301"],
        env=server_env(data_home, tiny_checkpoint),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == "error: duration: duration must be in [1, 300] seconds (got 301.0)"


@pytest.mark.slow  # keeps the default suite near 10 min; .ci/run runs it
def test_scripts_get_only_the_path_unwrapped_and_json_on_request(tmp_path: Path) -> None:
    """As a script runs it: stdout a pipe (no terminal, so rich would wrap at 80 columns), a long path, and
    the tiny checkpoint made the way the README says."""
    checkpoint = tmp_path / "tiny-checkpoint"
    made = subprocess.run(
        [sys.executable, "-m", "engine.musicgen.checkpoints", str(checkpoint)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert made.returncode == 0 and made.stdout == f"{checkpoint}\n", made.stderr
    home = tmp_path / ("a-data-directory-with-a-long-name-" * 3) / "home"
    env = server_env(home, checkpoint)
    env.pop("COLUMNS", None)
    take = subprocess.run(
        [DGX_MUSIC, "generate", "tape-saturated drums", "--duration", "1", "--seed", "5"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert take.returncode == 0, take.stderr
    [path] = take.stdout.splitlines()
    assert take.stdout == path + "\n" and len(path) > 80 and Path(path).is_file()
    assert path.startswith(str(home / "outputs")) and path.endswith(".wav")
    assert "seed 5" in take.stderr and "wall" in take.stderr
    as_json = subprocess.run(
        [DGX_MUSIC, "generate", "tape-saturated drums", "--duration", "1", "--seed", "5", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert as_json.returncode == 0, as_json.stderr
    job = json.loads(as_json.stdout)  # one object, nothing else on stdout
    assert (
        job["status"] == "completed" and job["params"]["seed"] == 5 and Path(job["audio"]["path"]).is_file()
    )


def test_export_writes_an_ardour_session_from_short_ids(run: Run, data_home: Path) -> None:
    ids = []
    for seed in ("1", "2"):
        result = run("generate", "modular synth sequence", "--duration", "1", "--seed", seed, "--json")
        assert result.exit_code == 0, result.output
        ids.append(json.loads(result.stdout)["job_id"])
    listed = run("history", "modular")
    assert all(job_id[:8] in listed.stdout for job_id in ids)

    exported = run("export", ids[0][:8], ids[1][:8], "--name", "Synth takes", "--gap", "0.5")
    assert exported.exit_code == 0, exported.output
    ardour_file = Path(exported.stdout.strip())
    assert exported.stdout == f"{ardour_file}\n" and ardour_file.is_file() and ardour_file.suffix == ".ardour"
    assert ardour_file.is_relative_to(data_home / "sessions") and "2 track(s)" in exported.stderr
    manifest = json.loads((ardour_file.parent / "manifest.json").read_text())
    assert [track["name"] for track in manifest["tracks"]] == [
        "modular synth sequence",
        "modular synth sequence (2)",
    ]
    if shutil.which("ardour7-lua") or os.environ.get("CI"):
        view = inspect_session(ardour_file)
        assert len(view.tracks) == 2

    one_line_error(run("export", "0000000000", "--name", "x"), "0000000000", "not found")
    one_line_error(run("export", ids[0][:7], "--name", "x"), "not found", "8+")


def test_history_family_shows_a_pieces_tree(run: Run, data_home: Path) -> None:
    from storage import Lineage, Operation, Store

    store = Store(data_home, None)
    params = {"seed": 1, "temperature": 1.0, "top_k": 250, "top_p": 0.0, "guidance_scale": 3.0}
    params["loudness_lufs"] = -14.0
    root = store.create("the first riff", "tiny", {"duration": 5.0, **params})
    continued = Lineage(Operation.CONTINUE, parent_id=root.id)
    child = store.create("the first riff", "tiny", {"duration": 10.0, **params}, lineage=continued)
    grandchild = store.create(
        "a coda", "tiny", {"duration": 4.0, **params}, lineage=Lineage(Operation.CONTINUE, parent_id=child.id)
    )
    store.create("unrelated", "tiny", {"duration": 1.0, **params})
    result = run("history", "--family", grandchild.id[:8])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    headers = [line for line in lines if "pending" in line]
    assert len(headers) == 3 and "unrelated" not in result.stdout
    assert headers[0].startswith(root.id[:8])
    assert headers[1].startswith(f"    continue of {root.id[:8]}: {child.id[:8]}")
    assert headers[2].startswith(f"        continue of {child.id[:8]}: {grandchild.id[:8]}")
    as_json = json.loads(run("history", "--family", root.id, "--json").stdout)
    assert [job["lineage"]["parent_id"] for job in as_json] == [None, root.id, child.id]
