"""deploy/: the systemd unit, the env file template, the install script, the torch build choice, and pull."""

from __future__ import annotations

import io
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from rich.console import Console
from rich.progress import Progress

from mcp_server.cli import app
from mcp_server.pull import PullError, pull_model, rich_tqdm

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "deploy" / "dgx-music.service"
ENV_TEMPLATE = REPO / "deploy" / "dgx-music.env"
INSTALL = REPO / "deploy" / "install.sh"
TORCH = REPO / "deploy" / "torch.sh"
SERVICE_BINARY = "/opt/dgx-music/venv/bin/dgx-music"

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (apt-get install systemd)"
)


def directives(path: Path) -> dict[str, list[str]]:
    """KEY -> values of a unit or env file (systemd allows a key more than once)."""
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def verifiable_copy(tmp_path: Path, text: str) -> Path:
    """The unit with ExecStart pointing at an existing binary, so verify judges the unit and not this host."""
    unit = tmp_path / "dgx-music.service"
    unit.write_text(text.replace(SERVICE_BINARY, shutil.which("true") or "/bin/true"))
    return unit


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, cwd=unit.parent, timeout=60
    )


# --- the unit ---------------------------------------------------------------------------------------------


@needs_systemd_analyze
def test_unit_passes_systemd_analyze_verify_without_warnings(tmp_path: Path) -> None:
    result = verify(verifiable_copy(tmp_path, UNIT.read_text()))
    # verify exits 0 on unknown keys and unparsable values (it only warns), so any output is a failure.
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


@needs_systemd_analyze
@pytest.mark.parametrize(
    ("original", "broken"),
    [("Restart=on-failure", "Restart=on-failur"), ("ProtectSystem=strict", "ProtectSytem=strict")],
)
def test_verify_catches_a_typo_in_the_unit(tmp_path: Path, original: str, broken: str) -> None:
    result = verify(verifiable_copy(tmp_path, UNIT.read_text().replace(original, broken)))
    assert broken.split("=")[0] in result.stderr or "Failed to parse" in result.stderr


@needs_systemd_analyze
def test_unit_hardening_scores_ok_in_systemd_analyze_security(tmp_path: Path) -> None:
    unit = verifiable_copy(tmp_path, UNIT.read_text())
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert match, result.stdout[-2000:] + result.stderr
    assert float(match.group(1)) <= 2.5, result.stdout


def test_unit_runs_hardened_as_its_own_user_with_http_on_loopback() -> None:
    unit = directives(UNIT)
    required = {
        "User": "dgx-music",
        "Group": "dgx-music",
        "Restart": "on-failure",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "EnvironmentFile": "/etc/dgx-music/dgx-music.env",
    }
    assert {key: unit.get(key, [None])[-1] for key in required} == required
    assert "DGX_MUSIC_HOST=127.0.0.1" in unit["Environment"][0].split()
    assert "--transport http" in unit["ExecStart"][0]


def test_every_path_the_service_writes_is_in_read_write_paths() -> None:
    writable = directives(UNIT)["ReadWritePaths"][0].split()
    env = directives(ENV_TEMPLATE)
    for key in ("DGX_MUSIC_HOME", "HF_HOME", "XDG_CACHE_HOME"):
        path = Path(env[key][-1])
        assert any(path.is_relative_to(allowed) for allowed in writable), f"{key}={path} not in {writable}"


def test_exec_start_arguments_parse_with_the_real_cli() -> None:
    """ExecStart's flags and the env file's defaults are accepted by `dgx-music serve` as it is today."""
    env = {**dict(item.split("=", 1) for item in directives(UNIT)["Environment"][0].split())}
    env.update({key: values[-1] for key, values in directives(ENV_TEMPLATE).items()})
    words = directives(UNIT)["ExecStart"][0].split()
    assert words[0] == SERVICE_BINARY
    args = [re.sub(r"\$\{(\w+)\}", lambda match: env[match.group(1)], word) for word in words[1:]]
    command = typer.main.get_command(app)
    context = command.make_context("dgx-music", list(args), resilient_parsing=False)
    serve = command.get_command(context, args[0])  # type: ignore[attr-defined]
    assert serve is not None
    params = serve.make_context("serve", args[1:], parent=context).params
    assert (str(params["transport"].value), params["host"], params["port"]) == ("http", "127.0.0.1", 8000)


# --- install.sh -------------------------------------------------------------------------------------------


def run_install(root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(("DGX_MUSIC_", "HF_"))
    }
    return subprocess.run(
        [str(INSTALL), "--root", str(root), "--no-systemctl", "--venv-from", sys.prefix, *extra],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )


def env_file(root: Path) -> Path:
    return root / "etc" / "dgx-music" / "dgx-music.env"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_install_into_a_root_creates_everything_then_doctor_passes(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    root = tmp_path / "root"
    result = run_install(root, "--model", str(tiny_checkpoint))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS generation" in result.stdout and "Ready" in result.stdout

    assert (root / "etc/systemd/system/dgx-music.service").read_text() == UNIT.read_text()
    template = root / "etc/systemd/system/dgx-music-worker@.service"
    assert template.read_text() == (REPO / "deploy" / "dgx-music-worker@.service").read_text()
    assert (root / "opt/dgx-music/SCALE-OUT.md").is_file()
    assert (root / "opt/dgx-music/venv").resolve() == Path(sys.prefix).resolve()
    for directory in ("var/lib/dgx-music", "var/lib/dgx-music/huggingface", "var/lib/dgx-music/cache"):
        assert mode(root / directory) == 0o750, directory
    env = directives(env_file(root))
    assert mode(env_file(root)) == 0o640
    assert env["DGX_MUSIC_MODEL"] == [str(tiny_checkpoint)]
    assert re.fullmatch(r"[0-9a-f]{64}", env["DGX_MUSIC_TOKEN"][0])
    assert env["HF_HUB_OFFLINE"] == ["1"]
    # Doctor ran against the root's data directory, not the system's.
    assert f"{root}/var/lib/dgx-music is writable" in result.stdout


def test_reinstall_keeps_the_env_file_and_its_token(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert run_install(root, "--no-doctor").returncode == 0
    path = env_file(root)
    edited = path.read_text().replace("DGX_MUSIC_LOG_LEVEL=INFO", "DGX_MUSIC_LOG_LEVEL=DEBUG")
    path.write_text(edited)
    path.chmod(0o644)

    again = run_install(root, "--no-doctor", "--model", "facebook/musicgen-medium")
    assert again.returncode == 0, again.stderr
    assert path.read_text() == edited  # token, edits and model kept; --model only seeds a new file
    assert mode(path) == 0o640  # but a loosened mode is tightened again: the file holds the token

    path.write_text(re.sub(r"(?m)^DGX_MUSIC_TOKEN=.*$", "DGX_MUSIC_TOKEN=", edited))
    assert run_install(root, "--no-doctor").returncode == 0
    token = directives(path)["DGX_MUSIC_TOKEN"]
    assert len(token) == 1 and re.fullmatch(r"[0-9a-f]{64}", token[0])
    assert "DGX_MUSIC_LOG_LEVEL=DEBUG" in path.read_text()


def test_install_reports_doctor_blocker(tmp_path: Path) -> None:
    result = run_install(tmp_path / "root", "--model", str(tmp_path / "no-such-checkpoint"))
    assert result.returncode == 1
    assert "FAIL model weights" in result.stdout
    assert "doctor found a blocker" in result.stderr


def test_install_rejects_unknown_options(tmp_path: Path) -> None:
    result = run_install(tmp_path / "root", "--frobnicate")
    assert result.returncode == 2 and "unknown option --frobnicate" in result.stderr
    assert not (tmp_path / "root").exists()


# --- torch.sh: which build for which machine ---------------------------------------------------------------


def fake_machine(tmp_path: Path, arch: str, driver_cuda: str | None) -> dict[str, str]:
    """PATH with stand-ins for `uname` and `nvidia-smi`, the two things torch.sh reads about the machine."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "uname").write_text(f'#!/bin/sh\n[ "$1" = -m ] && echo {arch} || echo Linux\n')
    if driver_cuda is not None:
        banner = f"| NVIDIA-SMI 580.95   Driver Version: 580.95   CUDA Version: {driver_cuda}     |"
        (bin_dir / "nvidia-smi").write_text(f"#!/bin/sh\necho '{banner}'\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    environment = {key: value for key, value in os.environ.items() if key != "DGX_MUSIC_TORCH"}
    # Only the fakes and the shell's basics: a real nvidia-smi elsewhere on PATH must not be found.
    environment["PATH"] = f"{bin_dir}:/usr/bin:/bin" if driver_cuda else f"{bin_dir}:/bin"
    return environment


@pytest.mark.parametrize(
    ("arch", "driver_cuda", "expected"),
    [
        ("aarch64", "13.0", "cu130"),  # DGX Spark
        ("aarch64", "12.8", "cpu"),  # PyTorch publishes no CUDA 12 aarch64 wheels to fall back on
        ("x86_64", "13.1", "cu130"),
        ("x86_64", "12.8", "cu128"),
        ("x86_64", "12.4", "cpu"),
        ("x86_64", None, "cpu"),
    ],
)
def test_torch_build_follows_arch_and_driver(
    tmp_path: Path, arch: str, driver_cuda: str | None, expected: str
) -> None:
    if driver_cuda is None and Path("/bin/nvidia-smi").exists():
        pytest.skip("a real nvidia-smi is in /bin")
    result = subprocess.run(
        ["bash", str(TORCH), "flavour"],
        capture_output=True,
        text=True,
        env=fake_machine(tmp_path, arch, driver_cuda),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected, result.stderr


def test_torch_build_can_be_forced(tmp_path: Path) -> None:
    environment = {**fake_machine(tmp_path, "x86_64", None), "DGX_MUSIC_TORCH": "cu128"}
    result = subprocess.run(["bash", str(TORCH), "flavour"], capture_output=True, text=True, env=environment)
    assert result.stdout.strip() == "cu128"


# --- pull ---------------------------------------------------------------------------------------------------


def test_pull_offline_fails_with_an_actionable_line(tmp_path: Path) -> None:
    environment = {
        **{key: value for key, value in os.environ.items() if not key.startswith("DGX_MUSIC_")},
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1",
    }
    result = subprocess.run(
        [str(Path(sys.prefix) / "bin" / "dgx-music"), "pull", "small"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert "facebook/musicgen-small" in message and "HF_HUB_OFFLINE=1" in message
    assert "HF_HUB_OFFLINE=0 dgx-music pull facebook/musicgen-small" in message


def test_pull_accepts_a_local_checkpoint_and_proves_it_loads(tiny_checkpoint: Path) -> None:
    console = Console(file=io.StringIO(), width=200)
    pull_model(str(tiny_checkpoint), console)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert "is a local checkpoint: nothing to download" in output
    assert "loads offline" in output


def test_pull_rejects_a_directory_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(PullError, match=re.escape(str(tmp_path))):
        pull_model(str(tmp_path), Console(file=io.StringIO()))


def test_download_progress_reaches_rich_as_huggingface_hub_drives_it() -> None:
    progress = Progress(console=Console(file=io.StringIO()))
    bar_class = rich_tqdm(progress)
    # huggingface_hub opens its byte bars with total=0 and grows the total as file sizes become known.
    bar = bar_class(desc="Downloading bytes", total=0, initial=0, unit="B", unit_scale=True)
    bar.total = 1000
    bar.update(400)
    bar.refresh()
    bar.update(600)
    bar.close()
    (task,) = progress.tasks
    assert (task.description, task.completed, task.total) == ("Downloading bytes", 1000, 1000)


# --- justfile -----------------------------------------------------------------------------------------------

JUST = shutil.which("just", path=f"{Path(sys.prefix) / 'bin'}:{os.environ.get('PATH', '')}")
RECIPES = [
    "init",
    "validate-gpu",
    "test-model",
    "serve",
    "generate",
    "test",
    "test-unit",
    "test-integration",
    "test-coverage",
    "lint",
    "format",
    "typecheck",
    "quality",
    "db-init",
    "db-migrate",
    "benchmark",
    "gpu-status",
    "profile-memory",
    "deploy-dgx",
]


@pytest.mark.skipif(JUST is None, reason="just not installed (it comes with the test extra: rust-just)")
def test_justfile_parses_and_has_every_recipe_the_team_uses() -> None:
    assert JUST is not None
    listed = subprocess.run(
        [JUST, "--summary"], capture_output=True, text=True, cwd=REPO, check=True
    ).stdout.split()
    aliases = subprocess.run([JUST, "--list"], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert [name for name in RECIPES if name not in listed and f"alias: {name}" not in aliases] == []


@pytest.mark.skipif(JUST is None, reason="just not installed (it comes with the test extra: rust-just)")
def test_just_generate_passes_the_prompt_as_one_argument() -> None:
    assert JUST is not None
    result = subprocess.run(
        [JUST, "--dry-run", "generate", "lofi beat, it's warm", "16"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert "dgx-music generate 'lofi beat, it'\\''s warm' --duration 16" in result.stderr


# --- the worker template (scale-out) ----------------------------------------------------------------------

WORKER_TEMPLATE = REPO / "deploy" / "dgx-music-worker@.service"


def worker_instance(tmp_path: Path) -> Path:
    """An instance of the template (verify needs an instance name) pointing at an existing binary."""
    unit = tmp_path / "dgx-music-worker@gpu0.service"
    unit.write_text(WORKER_TEMPLATE.read_text().replace(SERVICE_BINARY, shutil.which("true") or "/bin/true"))
    return unit


@needs_systemd_analyze
def test_worker_template_passes_systemd_analyze_verify_without_warnings(tmp_path: Path) -> None:
    result = verify(worker_instance(tmp_path))
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


@needs_systemd_analyze
def test_worker_template_is_as_hardened_as_the_service(tmp_path: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(worker_instance(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert match, result.stdout[-2000:] + result.stderr
    assert float(match.group(1)) <= 2.5, result.stdout


def test_worker_template_runs_the_worker_with_health_on_loopback() -> None:
    unit = directives(WORKER_TEMPLATE)
    env = dict(item.split("=", 1) for item in unit["Environment"][0].split())
    assert env["DGX_MUSIC_WORKER_HOST"] == "127.0.0.1" and env["DGX_MUSIC_WORKER_ID"] == "%H-%i"
    assert unit["EnvironmentFile"] == ["/etc/dgx-music/dgx-music.env", "-/etc/dgx-music/worker-%i.env"]
    words = unit["ExecStart"][0].split()
    assert words[0] == SERVICE_BINARY
    args = [re.sub(r"\$\{(\w+)\}", lambda match: env[match.group(1)], word) for word in words[1:]]
    command = typer.main.get_command(app)
    context = command.make_context("dgx-music", list(args), resilient_parsing=False)
    worker = command.get_command(context, args[0])  # type: ignore[attr-defined]
    assert worker is not None
    params = worker.make_context("worker", args[1:], parent=context).params
    assert (params["host"], params["port"]) == ("127.0.0.1", 8100)
