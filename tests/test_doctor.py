"""`dgx-music doctor`: the lines it prints, its exit status, and the blocker it names."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from mcp_server.config import Settings
from mcp_server.doctor import Doctor, PeakRss, kernels_for, run_doctor
from storage.db import make_engine, upgrade

DGX_MUSIC = str(Path(sys.prefix) / "bin" / "dgx-music")
HUB_ID = "dgx-test/musicgen-tiny"


def hub_cache(hf_home: Path, repo_id: str, checkpoint: Path) -> Path:
    """A Hugging Face cache holding ``checkpoint`` as ``repo_id``, laid out as `dgx-music pull` leaves it."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(checkpoint, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return hf_home


def doctor(tmp_path: Path, model: str, hf_home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(("DGX_MUSIC_", "HF_"))
    }
    environment.update(
        DGX_MUSIC_MODEL=model,
        DGX_MUSIC_HOME=str(tmp_path / "home"),
        HF_HOME=str(hf_home),
        HF_HUB_OFFLINE="1",
        COLUMNS="250",
    )
    return subprocess.run(
        [DGX_MUSIC, *args, "doctor"], capture_output=True, text=True, env=environment, timeout=300
    )


def status_of(output: str, name: str) -> str:
    """The PASS/WARN/FAIL/SKIP word of the line for check ``name``."""
    for line in output.splitlines():
        words = line.split(None, 1)
        if len(words) == 2 and words[1].startswith(name + " "):
            return words[0]
    raise AssertionError(f"no line for {name!r} in:\n{output}")


def test_doctor_passes_on_cpu_with_a_cached_tiny_checkpoint(tmp_path: Path, tiny_checkpoint: Path) -> None:
    hf_home = hub_cache(tmp_path / "hf", HUB_ID, tiny_checkpoint)
    environment = {**os.environ, "DGX_MUSIC_HOME": str(tmp_path / "home")}
    subprocess.run(
        [DGX_MUSIC, "db", "upgrade"], check=True, capture_output=True, env=environment, timeout=120
    )

    result = doctor(tmp_path, HUB_ID, hf_home)

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for name in (
        "torch build",
        "device",
        "bf16",
        "matmul",
        "model weights",
        "generation",
        "data dir",
        "database",
    ):
        assert status_of(out, name) == "PASS", name
    assert status_of(out, "ardour") == ("PASS" if shutil.which("ardour7-lua") else "WARN")
    assert status_of(out, "CUDA available") == ("PASS" if torch.cuda.is_available() else "WARN")
    assert f"torch {torch.__version__}" in out
    assert f"{HUB_ID}: 1 file(s)" in out and str(hf_home / "hub") in out
    assert "1 s of audio in" in out and "ms/step" in out
    assert "is migrated (revision" in out
    assert "Ready" in out


def test_doctor_fails_naming_the_missing_model(tmp_path: Path) -> None:
    result = doctor(tmp_path, "facebook/musicgen-small", tmp_path / "empty-hf")
    assert result.returncode == 1
    out = result.stdout
    assert status_of(out, "model weights") == "FAIL"
    assert "run `dgx-music pull facebook/musicgen-small`" in out
    assert status_of(out, "generation") == "SKIP"
    assert "Blocked by: model weights" in out
    assert "Traceback" not in result.stderr


def settings_for(home: Path, model: str = "facebook/musicgen-small") -> Settings:
    return Settings.load({}, home=home, model=model, device="cpu")


def test_missing_checkpoint_directory_is_a_blocker(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-checkpoint"
    check = Doctor(
        settings_for(tmp_path, str(missing)), Console(file=io.StringIO()), require_cuda=False
    ).check_weights()
    assert check.status == "fail" and f"no complete checkpoint for {missing}" in check.detail


def test_database_behind_head_is_a_blocker_and_head_passes(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'dgx-music.db'}")
    upgrade(engine, tmp_path, revision="0001")
    check = Doctor(settings_for(tmp_path), Console(file=io.StringIO()), require_cuda=False).check_database()
    assert check.status == "fail" and "run `dgx-music db upgrade`" in check.detail

    upgrade(engine, tmp_path)
    engine.dispose()
    check = Doctor(settings_for(tmp_path), Console(file=io.StringIO()), require_cuda=False).check_database()
    assert check.status == "pass"


def test_unwritable_data_dir_is_a_blocker(tmp_path: Path) -> None:
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    check = Doctor(
        settings_for(blocked / "home"), Console(file=io.StringIO()), require_cuda=False
    ).check_data_dir()
    assert check.status == "fail" and "DGX_MUSIC_HOME" in check.detail


def test_gpu_mode_requires_cuda(tmp_path: Path) -> None:
    console = Console(file=io.StringIO(), width=250)
    code = run_doctor(settings_for(tmp_path).model_copy(update={"device": None}), console, gpu_only=True)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert "model weights" not in out  # only the device checks run
    if torch.cuda.is_available():
        assert code == 0 and status_of(out, "matmul") == "PASS"
    else:
        assert code == 1 and status_of(out, "CUDA available") == "FAIL"


def test_full_mode_reports_latency_and_peak_memory(tmp_path: Path, tiny_checkpoint: Path) -> None:
    console = Console(file=io.StringIO(), width=250)
    settings = settings_for(tmp_path, model=str(tiny_checkpoint))
    code = run_doctor(settings, console, full=True, durations=(1.0,))
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert code == 0, out
    assert status_of(out, "1 s audio") == "PASS"
    assert "s for 1 s of audio; peak" in out


@pytest.mark.slow
def test_full_mode_holds_16_seconds_to_the_targets(tmp_path: Path, tiny_checkpoint: Path) -> None:
    console = Console(file=io.StringIO(), width=250)
    code = run_doctor(settings_for(tmp_path, model=str(tiny_checkpoint)), console, full=True)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert "target < 30 s" in out and "target < 30 GB" in out
    assert code == (0 if status_of(out, "latency 16 s") == "PASS" else 1)
    assert status_of(out, "memory 16 s") == "PASS"


def test_peak_rss_sees_a_short_lived_allocation() -> None:
    with PeakRss(interval_s=0.005).watch() as rss:
        before = rss.peak
        block = np.ones(200_000_000 // 8)  # 200 MB, touched so it is resident
        block.sum()
        del block
    assert rss.peak - before > 150_000_000


@pytest.mark.parametrize(
    ("capability", "arch_list", "runs"),
    [
        ((12, 1), ["sm_80", "sm_90", "sm_100", "sm_120"], True),  # GB10 on a CUDA 13 build
        ((12, 1), ["sm_121"], True),
        ((12, 1), ["sm_50", "sm_80", "sm_90"], False),  # an older build: no Blackwell kernels
        ((12, 1), ["sm_80", "compute_90"], True),  # PTX is JIT-compiled for newer GPUs
        ((9, 0), ["sm_100", "sm_120", "compute_100"], False),
        ((12, 0), ["sm_121"], False),  # a cubin never runs on a lower minor version
    ],
)
def test_kernel_support_follows_cuda_compatibility_rules(
    capability: tuple[int, int], arch_list: list[str], runs: bool
) -> None:
    assert kernels_for(*capability, arch_list) is runs


def test_ardour_check_loads_a_session_it_writes(tmp_path: Path) -> None:
    check = Doctor(settings_for(tmp_path), Console(file=io.StringIO()), require_cuda=False).check_ardour()
    if shutil.which("ardour7-lua") is None and not os.environ.get("CI"):
        pytest.skip("Ardour is not installed (apt-get install ardour); CI installs it")
    assert check.status == "pass", check.detail
    assert "ardour7-lua" in check.detail or "ardour8-lua" in check.detail or "ardour9-lua" in check.detail
    assert "load a session written here (1 track, 48000 Hz)" in check.detail


def test_missing_ardour_is_a_warning_naming_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no ardourN-* anywhere
    check = Doctor(settings_for(tmp_path), Console(file=io.StringIO()), require_cuda=False).check_ardour()
    assert check.status == "warn"
    assert (
        "ardour9-lua, ardour8-lua, ardour7-lua" in check.detail and "apt-get install ardour" in check.detail
    )
