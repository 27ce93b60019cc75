"""The "song" arrangement: a song, its stems, an edit and variations, as Ardour itself loads and plays them.

Random noise stands in for every part, so the render shows which tracks sound: a muted mix that still
played, or an edit not trimmed to its section, would break the correlation with the expected mix.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from ardour_testing import RATE, Source, assert_ardour_sees, assert_render_matches, noise_file, require_ardour

from ardour_templates import Clip, InvalidArgumentError, export_session
from ardour_templates.verify import inspect_session

STEMS = ("drums", "bass", "other", "vocals")


def musicgen_like(path: Path, seconds: float, seed: int) -> Source:
    """Noise written at 32 kHz mono, as MusicGen outputs; the ideal is what soxr makes of it at 48 kHz."""
    import soxr

    data = (0.2 * np.random.default_rng(seed).standard_normal((round(seconds * 32000), 1))).astype(np.float32)
    sf.write(str(path), data, 32000)
    return Source(path, soxr.resample(data, 32000, RATE, quality="HQ").astype(np.float64))


def song_parts(tmp_path: Path, seconds: float = 2.0) -> tuple[list[Clip], dict[str, Source]]:
    """Parts given out of order: the arrangement puts mix, stems, edit, variations in that order."""
    sources = {"mix": musicgen_like(tmp_path / "song.wav", seconds, seed=0)}
    for n, stem in enumerate(STEMS, start=1):
        sources[stem] = musicgen_like(tmp_path / f"{stem}.wav", seconds, seed=n)
    sources["edit"] = noise_file(tmp_path / "edit.wav", seconds, channels=2, seed=10)
    sources["take 2"] = noise_file(tmp_path / "take2.wav", seconds, channels=2, seed=11)
    sources["take 3"] = noise_file(tmp_path / "take3.wav", seconds, channels=1, seed=12)
    clips = [
        Clip(path=sources["take 2"].path, name="Take 2", role="variation"),
        Clip(
            path=sources["edit"].path,
            name="Bridge edit",
            role="edit",
            section=(0.5, 1.25),
            comment="brighter",
        ),
        *(Clip(path=sources[stem].path, name=stem.title(), role=f"stem:{stem}") for stem in STEMS),
        Clip(path=sources["mix"].path, name="Song", role="mix", comment="lofi piano at night"),
        Clip(path=sources["take 3"].path, name="Take 3", role="variation", gain_db=-6.0),
    ]
    return clips, sources


@pytest.fixture(scope="module")
def ardour() -> None:
    require_ardour()


def test_song_stems_edit_and_variations_as_ardour_sees_and_plays_them(tmp_path: Path, ardour: None) -> None:
    clips, sources = song_parts(tmp_path)
    manifest = export_session(clips, "song parts", tmp_path / "sessions", arrangement="song", bpm=90)
    order = ["mix", *STEMS, "edit", "take 2", "take 3"]
    assert [t.role for t in manifest.tracks] == [
        "mix", *(f"stem:{s}" for s in STEMS), "edit", "variation", "variation"
    ]  # fmt: skip
    song_length = 2 * RATE
    by_role = {t.role: t for t in manifest.tracks}
    assert by_role["mix"].muted and not any(t.muted for t in manifest.tracks[1:])
    for stem in STEMS:
        track = by_role[f"stem:{stem}"]
        assert (track.start_samples, track.length_samples, track.source_offset_samples) == (0, song_length, 0)
    edit = by_role["edit"]
    assert (edit.start_samples, edit.source_offset_samples, edit.length_samples) == (24000, 24000, 36000)
    assert [(t.name, t.group) for t in manifest.tracks if t.role == "variation"] == [
        ("Take 2", "Variations"), ("Take 3", "Variations")
    ]  # fmt: skip
    assert [(m.name, m.start_samples) for m in manifest.markers] == [
        ("Bridge edit start", 24000), ("Bridge edit end", 60000)
    ]  # fmt: skip
    assert json.loads(manifest.manifest_file.read_text())["tracks"][1]["role"] == "stem:drums"

    view = inspect_session(manifest.ardour_file)
    by_name = {clip.name: clip for clip in clips}
    track_names = ["Song", *(s.title() for s in STEMS), "Bridge edit", "Take 2", "Take 3"]
    assert [t.name for t in manifest.tracks] == track_names
    assert_ardour_sees(view, manifest, [by_name[name] for name in track_names])
    mix, *stem_tracks = view.tracks[:5]
    assert mix.muted and [r.position for r in mix.regions] == [0]
    for seen in stem_tracks:  # every stem region at 0 with the source's length, as Ardour loaded it
        [region] = seen.regions
        assert (region.position, region.length, region.start) == (0, song_length, 0) and not seen.muted
    [group] = view.groups
    assert (group.name, group.routes, group.active) == ("Variations", ["Take 2", "Take 3"], True)
    assert group.shares_mute and group.shares_solo

    assert_render_matches(manifest, [sources[key] for key in order], tmp_path)


def test_leaving_the_mix_out(tmp_path: Path) -> None:
    clips, _ = song_parts(tmp_path, seconds=1.5)
    manifest = export_session(clips, "stems only", tmp_path / "s", arrangement="song", include_mix=False)
    assert [t.role for t in manifest.tracks][:4] == [f"stem:{s}" for s in STEMS]
    assert "mix" not in {t.role for t in manifest.tracks} and not any(t.muted for t in manifest.tracks)
    assert sorted(p.name for p in manifest.tracks[0].file.parent.iterdir()) == sorted(
        f"{n}.wav" for n in ("Drums", "Bass", "Other", "Vocals", "Bridge edit", "Take 2", "Take 3")
    )
    root = ET.parse(manifest.ardour_file).getroot()
    [group] = root.iterfind("RouteGroups/RouteGroup")
    routes = {r.get("name"): r.get("id") for r in root.iterfind("Routes/Route")}
    assert group.get("routes") == f"{routes['Take 2']} {routes['Take 3']}"


def test_a_song_without_stems_plays_its_mix(tmp_path: Path) -> None:
    clips, _ = song_parts(tmp_path, seconds=1.5)
    kept = [c for c in clips if c.role in ("mix", "edit")]
    manifest = export_session(
        kept, "mix and edit", tmp_path / "s", arrangement="song", variation_group="Takes"
    )
    assert [(t.role, t.muted) for t in manifest.tracks] == [("mix", False), ("edit", False)]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda cs: [c.model_copy(update={"role": None}) if c.role != "edit" else c for c in cs],
         "needs a role on every clip"),
        (lambda cs: [*cs, cs[-2]], "one clip with role 'mix'"),
        (lambda cs: [*cs, cs[2].model_copy(update={"name": "Drums again"})], r"\['stem:drums'\] appear"),
        (lambda cs: [c for c in cs if c.role in ("edit", "variation")], "needs the song"),
        (lambda cs: [c.model_copy(update={"role": "stem:Drums!"}) if c.role != "edit" else c for c in cs],
         "is not a role"),
        (lambda cs: [c.model_copy(update={"section": None}) for c in cs], "role 'edit' needs section"),
        (lambda cs: [c.model_copy(update={"section": (0.5, 9.0)}) if c.role == "edit" else c for c in cs],
         "section ends at 9 s but the clip lasts 1.500 s"),
        (lambda cs: [c.model_copy(update={"section": (2.0, 1.0)}) if c.role == "edit" else c for c in cs],
         "0 <= start_s < end_s"),
    ],
)  # fmt: skip
def test_song_arguments_are_checked(tmp_path: Path, change: object, message: str) -> None:
    clips, _ = song_parts(tmp_path, seconds=1.5)
    with pytest.raises(InvalidArgumentError, match=message):
        export_session(change(clips), "bad", tmp_path / "s", arrangement="song")  # type: ignore[operator]
    assert not (tmp_path / "s").exists() or list((tmp_path / "s").iterdir()) == []


def test_other_arrangements_refuse_song_only_arguments(tmp_path: Path) -> None:
    clips, _ = song_parts(tmp_path, seconds=1.5)
    with pytest.raises(InvalidArgumentError, match="include_mix=False applies to arrangement 'song'"):
        export_session(clips, "x", tmp_path / "s", arrangement="stacked", include_mix=False)
    with pytest.raises(InvalidArgumentError, match="variation_group must be a non-empty name"):
        export_session(clips, "x", tmp_path / "s", arrangement="song", variation_group=" ")
    stacked = export_session(clips, "x", tmp_path / "s", arrangement="stacked")  # roles are recorded only
    assert [t.role for t in stacked.tracks][:2] == ["variation", "edit"]
    assert all(t.start_samples == 0 and t.source_offset_samples == 0 and not t.muted for t in stacked.tracks)
