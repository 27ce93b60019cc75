"""Checkpoint loading: the offline / missing-model error, device and dtype selection, silence on stdout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine import EngineError, ModelNotAvailableError, MusicEngine, loading
from engine.musicgen import loading as musicgen_loading


def test_unknown_hub_id_offline_names_model_cache_and_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelNotAvailableError) as caught:
        MusicEngine.load("facebook/musicgen-does-not-exist", device="cpu")
    message = str(caught.value)
    assert "\n" not in message
    assert "facebook/musicgen-does-not-exist" in message
    assert str(tmp_path / "hub") in message
    assert "dgx-music pull facebook/musicgen-does-not-exist" in message
    assert "HF_HOME" in message


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_missing_local_checkpoint(tmp_path: Path, make: str) -> None:
    directory = tmp_path / "checkpoint"
    if make == "empty":
        directory.mkdir()
    with pytest.raises(ModelNotAvailableError) as caught:
        MusicEngine.load(str(directory), device="cpu")
    message = str(caught.value)
    assert "\n" not in message and str(directory) in message and "config.json" in message


def test_alias_of_uncached_model_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelNotAvailableError, match="facebook/musicgen-stereo-large"):
        MusicEngine.load("stereo-large", device="cpu")


def test_dtype_override_and_invalid_dtype() -> None:
    cpu = torch.device("cpu")
    assert loading.select_dtype(cpu, "bfloat16") == torch.bfloat16
    assert loading.select_dtype(cpu, "float32") == torch.float32
    with pytest.raises(EngineError, match=r"dtype 'fp8'.*bfloat16, float16, float32"):
        loading.select_dtype(cpu, "fp8")


def test_default_dtype_follows_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    for native, expected in [(True, torch.bfloat16), (False, torch.float32)]:
        monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda native=native: native)
        assert loading.select_dtype(torch.device("cpu")) == expected


def test_device_selection() -> None:
    assert loading.select_device("cpu") == torch.device("cpu")
    assert loading.select_device() == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(EngineError, match="device 'tpu'"):
        loading.select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(EngineError, match="no CUDA GPU"):
            loading.select_device("cuda")


def test_load_reports_facts_and_prints_nothing(
    tiny_stereo_checkpoint: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("DGX_MUSIC_MODEL", "DGX_MUSIC_DTYPE", "DGX_MUSIC_DEVICE", "DGX_MUSIC_BACKEND"):
        monkeypatch.setenv(name, "ignored by engine")  # only mcp_server.config reads the environment
    engine = MusicEngine.load(str(tiny_stereo_checkpoint), device="cpu", dtype="float32")
    assert capfd.readouterr().out == ""
    assert engine.model_id == str(tiny_stereo_checkpoint)
    assert (engine.device, engine.dtype) == ("cpu", "float32")
    assert (engine.sample_rate, engine.audio_channels, engine.frame_rate) == (32_000, 2, 50)
    assert engine.load_seconds > 0 and engine.memory_bytes > 0
    assert engine.max_batch_size >= 1


def test_int8_quantises_only_the_decoder_and_still_generates(tiny_checkpoint: Path) -> None:
    from torch.ao.nn.quantized.dynamic import Linear as Int8Linear

    from engine import GenerationRequest

    engine = MusicEngine.load(str(tiny_checkpoint), device="cpu", dtype="int8")
    assert engine.dtype == "int8" and engine.backend == "batched"
    model = engine._loaded.model
    decoder_linears = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Linear | Int8Linear)]
    assert decoder_linears and all(isinstance(m, Int8Linear) for m in decoder_linears)
    assert not any(isinstance(m, Int8Linear) for m in model.text_encoder.modules())
    assert next(model.audio_encoder.parameters()).dtype == torch.float32

    request = GenerationRequest(prompt="lofi piano", duration=1.5, seed=11)
    first, again = engine.generate([request]), engine.generate([request])
    assert first[0] is not None and again[0] is not None
    assert first[0].audio.shape == (1, 48_000)
    assert abs(first[0].audio).max() > 0 and torch.equal(
        torch.from_numpy(first[0].audio), torch.from_numpy(again[0].audio)
    )
    assert first[0].loudness_lufs is not None and abs(first[0].loudness_lufs + 14) < 0.5


def test_int8_is_refused_off_the_cpu() -> None:
    with pytest.raises(EngineError, match=r"int8.*CPU"):
        musicgen_loading.load("unused", torch.device("meta"), torch.qint8)


def test_engine_reads_no_environment() -> None:
    """Settings reach engine as arguments; mcp_server.config is the only reader of DGX_MUSIC_*."""
    engine_dir = Path(__file__).resolve().parents[1] / "engine"
    readers = [
        f"{path.relative_to(engine_dir.parent)}:{number}"
        for path in sorted(engine_dir.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if "os.environ" in line or "getenv" in line
    ]
    assert readers == []
