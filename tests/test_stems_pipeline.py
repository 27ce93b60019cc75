"""The three parts of stems together, as the worker and export_to_ardour will chain them: an 8 s
generation is split by the separator, each stem is stored as a generation linked to its source, and the
song and its stems open in Ardour as five aligned tracks (the issue's acceptance, below the MCP layer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ardour_testing import RATE, require_ardour

from ardour_templates import Clip, export_session
from ardour_templates.verify import inspect_session
from engine.audio import integrated_loudness, peak_dbfs
from engine.demucs import load_separator
from engine.demucs.checkpoints import build_random_separator
from storage import Lineage, Operation, Status, Store

SOURCE_RATE = 32000


def test_generate_separate_store_and_open_in_ardour(tmp_path: Path, data_home: Path) -> None:
    require_ardour()
    store = Store(data_home)
    source = store.create("lofi piano at night", "facebook/musicgen-small", {"duration": 8.0})
    store.claim("facebook/musicgen-small", 1)
    song = (0.2 * np.random.default_rng(0).standard_normal((1, 8 * SOURCE_RATE))).astype(np.float32)
    source = store.complete(
        source.id, song, SOURCE_RATE, loudness_lufs=None, peak_dbfs=None, generation_seconds=1.0,
        device="cpu", seed=1,
    )  # fmt: skip

    separator = load_separator(build_random_separator(tmp_path / "htdemucs-tiny"), device="cpu")
    stems = store.create_many(
        separator.name,
        [(f"{source.prompt} ({name})", {}) for name in separator.sources],
        lineages=[Lineage(Operation.STEMS, parent_id=source.id, stem=name) for name in separator.sources],
    )
    claimed = store.claim(separator.name, len(stems))
    assert [job.id for job in claimed] == [job.id for job in stems]
    result = separator.separate(song, SOURCE_RATE)
    assert result is not None
    for job in claimed:
        audio = result.stems[job.lineage.stem or ""]
        store.complete(
            job.id, audio, result.sample_rate, loudness_lufs=integrated_loudness(audio, result.sample_rate),
            peak_dbfs=peak_dbfs(audio), generation_seconds=result.separation_seconds, device="cpu", seed=None,
        )  # fmt: skip

    family = store.family(source.id)
    assert [g.id for g in family] == [source.id, *(job.id for job in stems)]
    for stem in family[1:]:
        assert stem.status is Status.COMPLETED and stem.lineage.parent_id == source.id
        assert (stem.sample_rate, stem.duration_s, stem.channels) == (SOURCE_RATE, 8.0, 1)

    paths = [g.file_path for g in family if g.file_path is not None and g.file_path.is_file()]
    assert len(paths) == 5
    clips = (
        [Clip(path=paths[0], name="Song", role="mix")]
        + [  # the files as the store holds them
            Clip(path=path, name=g.lineage.stem or "", role=f"stem:{g.lineage.stem}")
            for g, path in zip(family[1:], paths[1:], strict=True)
        ]
    )
    manifest = export_session(clips, "lofi stems", tmp_path / "sessions", arrangement="song")
    view = inspect_session(manifest.ardour_file)
    assert [t.name for t in view.tracks] == ["Song", "drums", "bass", "other", "vocals"]
    assert [t.muted for t in view.tracks] == [True, False, False, False, False]
    for track in view.tracks:
        [region] = track.regions
        assert (region.position, region.start, region.length) == (0, 0, 8 * RATE)
        assert region.peak > 0
