"""Which family serves a model id, the operator's alias mappings, offline errors, stem names without
loading, and what each job of a finished request stores (stems: one shared gain against clipping)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine import ModelNotAvailableError
from engine.backend import GenerationResult
from engine.demucs.checkpoints import build_random_separator
from mcp_server import derive, families, operations
from mcp_server.config import ConfigError, Settings
from storage import Lineage, Operation, Store


def test_ids_resolve_to_their_family(tmp_path: Path, tiny_checkpoint: Path) -> None:
    song_dir = tmp_path / "song"
    song_dir.mkdir()
    (song_dir / "model_index.json").write_text("{}")
    settings = Settings.load({}, model_paths=f"ace-step={song_dir}, HTDemucs=/models/htdemucs")
    assert families.resolve("ace-step", settings) == str(song_dir)
    assert families.resolve("htdemucs", settings) == "/models/htdemucs"
    assert families.resolve("ace-step-base", settings) == "ACE-Step/acestep-v15-xl-base-diffusers"
    assert families.resolve("small", settings) == "facebook/musicgen-small"
    assert families.family_of(str(song_dir)) == "acestep"
    assert families.family_of("ACE-Step/acestep-v15-xl-turbo-diffusers") == "acestep"
    assert families.family_of("htdemucs_6s") == "demucs"
    assert families.family_of(str(build_random_separator(tmp_path / "sep"))) == "demucs"
    assert (
        families.family_of(str(tiny_checkpoint))
        == families.family_of("facebook/musicgen-small")
        == "musicgen"
    )
    assert families.licence_of("ace-step-base".replace("ace-step-base", families.acestep.BASE)) == "MIT"
    assert "non-commercial" in families.licence_of("facebook/musicgen-small")
    assert families.is_operator_model(str(song_dir), settings)
    assert not families.is_operator_model("/etc", settings)
    with pytest.raises(ConfigError, match="DGX_MUSIC_MODEL_PATHS"):
        Settings.load({"DGX_MUSIC_MODEL_PATHS": "no-equals-sign"})


def test_an_uncached_model_offline_names_the_short_pull_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    settings = Settings.load({}, device="cpu")
    with pytest.raises(ModelNotAvailableError, match=r"dgx-music pull ace-step`"):
        families.load(families.acestep.TURBO, settings)
    with pytest.raises(ModelNotAvailableError, match=r"dgx-music pull htdemucs_6s`"):
        families.load("htdemucs_6s", settings)


def test_stem_names_come_from_the_weights_without_loading(tmp_path: Path) -> None:
    assert derive.stem_names("htdemucs_6s")[-2:] == ("guitar", "piano")
    custom = build_random_separator(tmp_path / "sep", sources=("drums", "rest"))
    assert derive.stem_names(str(custom)) == ("drums", "rest")


def test_stems_that_would_clip_share_one_gain_and_history_says_so(data_home: Path) -> None:
    store = Store(data_home)
    source = store.create("song", "m", {"duration": 1.0})
    stems = store.create_many(
        "htdemucs",
        [("song (drums)", {}), ("song (bass)", {})],
        lineages=[Lineage(Operation.STEMS, parent_id=source.id, stem=name) for name in ("drums", "bass")],
    )
    drums = np.full((1, 100), 1.6, dtype=np.float32)
    bass = np.full((1, 100), 0.4, dtype=np.float32)
    result = GenerationResult(
        audio=drums + bass, sample_rate=100, seed=0, duration_s=1.0, loudness_lufs=None, peak_dbfs=0.0,
        steps=1, generation_seconds=0.1, stems={"drums": drums, "bass": bass},
    )  # fmt: skip
    stored = operations.outputs(stems, result)
    scaled = stored[stems[0].id].audio, stored[stems[1].id].audio
    assert float(scaled[0].max()) == pytest.approx(operations.CLIP_CEILING)
    assert float(scaled[0].max() / scaled[1].max()) == pytest.approx(4.0)  # one factor: the mix is kept
    history = operations.coding_history(stems[0], "cpu", 0, stored[stems[0].id].note)
    assert "stems of " in history and "stem drums" in history and "scaled by -4.09 dB" in history
    assert "licence MIT" in history


def test_a_family_whose_extra_is_not_installed_is_refused_with_the_pip_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The base install (the README's first command) has neither diffusers nor demucs: a client asking for
    a song or stems gets a tool error naming the extra, and a queued job fails with it, not an ImportError."""
    import importlib.util

    from engine import EngineError
    from mcp_server.service import JobService, ServiceError

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name in ("diffusers", "demucs") else real_find_spec(name, *args),
    )
    assert families.missing_extra("facebook/musicgen-small") is None
    settings = Settings.load({"DGX_MUSIC_HOME": str(tmp_path)})
    service = JobService(settings, run_worker=False)
    with pytest.raises(ServiceError, match=r"model: .*pip install 'dgx-music\[songs\]'"):
        service.resolve_model("ace-step")
    with pytest.raises(ServiceError, match=r"model: .*dgx-music\[stems\]"):
        service.resolve_model("htdemucs")
    with pytest.raises(EngineError, match=r"dgx-music\[songs\]"):
        families.load(families.acestep.resolve_model_id("ace-step"), settings)
