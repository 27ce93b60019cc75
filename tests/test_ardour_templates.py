"""export_session without Ardour: names, paths, refusals, the manifest, the XML invariants Ardour relies on.

What Ardour itself makes of the sessions is in test_ardour_sessions.py.
"""

from __future__ import annotations

import json
import os
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ardour_templates import (
    ArdourExportError,
    AudioInputError,
    Clip,
    InvalidArgumentError,
    InvalidNameError,
    SessionExistsError,
    SessionManifest,
    SessionWriteError,
    UnsafePathError,
    export_session,
)
from ardour_templates.naming import sanitize_session_name, unique_track_names


def tone(path: Path, rate: int = 48000, seconds: float = 0.5, channels: int = 1, freq: float = 440.0) -> Path:
    t = np.arange(round(seconds * rate)) / rate
    data = np.stack([0.4 * np.sin(2 * np.pi * freq * (c + 1) * t) for c in range(channels)], axis=1)
    sf.write(str(path), data.astype(np.float32), rate)
    return path


@pytest.fixture
def clip_file(tmp_path: Path) -> Path:
    return tone(tmp_path / "clip.wav")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../etc", "etc"),
        ("..", None),
        ("/", None),
        ("  \x00\x1f\t ", None),
        (".hidden", "hidden"),
        ("a/b\\c:d", "a-b-c-d"),
        ("My Song é 🎵", "My Song é 🎵"),
        ("x\u202eevil", "x evil"),
        ("tabs\tand\nnewlines", "tabs and newlines"),
        ("-rf", "rf"),
    ],
)
def test_session_names_are_single_readable_path_components(raw: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(InvalidNameError, match="session_name"):
            sanitize_session_name(raw)
    else:
        assert sanitize_session_name(raw) == expected


def test_long_unicode_names_are_capped_on_a_character_boundary() -> None:
    name = sanitize_session_name("é" * 500)
    assert len(name.encode("utf-8")) <= 120
    assert set(name) == {"é"}


def test_track_names_are_unique_and_avoid_master() -> None:
    assert unique_track_names(["Bass", "bass", "Master", "", "a:b", "Bass"]) == [
        "Bass",
        "bass (2)",
        "Master (2)",
        "Track 4",
        "a-b",
        "Bass (3)",
    ]


def test_manifest_is_written_and_matches_what_is_returned(tmp_path: Path, clip_file: Path) -> None:
    manifest = export_session([Clip(path=clip_file, name="Lead")], "song", tmp_path)
    on_disk = SessionManifest.model_validate_json(manifest.manifest_file.read_text(encoding="utf-8"))
    assert on_disk == manifest
    assert manifest.session_dir == tmp_path.resolve() / "song"
    assert manifest.ardour_file == manifest.session_dir / "song.ardour"
    assert manifest.bpm == 120.0 and manifest.meter == (4, 4) and manifest.sample_rate == 48000
    assert manifest.osc_enabled is False and not manifest.renamed and manifest.notes == []
    assert manifest.open_command.endswith(str(manifest.ardour_file))
    for sub in ("peaks", "analysis", "dead", "export", "externals", "plugins", "interchange/song/midifiles"):
        assert (manifest.session_dir / sub).is_dir(), sub
    assert manifest.tracks[0].file.parent == manifest.session_dir / "interchange" / "song" / "audiofiles"
    assert json.loads(manifest.manifest_file.read_text())["tracks"][0]["strip_id"] == 1


def test_existing_name_is_renamed_or_refused_never_overwritten(tmp_path: Path, clip_file: Path) -> None:
    first = export_session([Clip(path=clip_file, name="A")], "../../etc", tmp_path)
    assert first.session_name == "etc" and first.renamed
    assert first.session_dir.parent == tmp_path.resolve()
    before = first.ardour_file.read_bytes()

    second = export_session([Clip(path=clip_file, name="B")], "../../etc", tmp_path)
    assert second.session_name == "etc (2)" and second.renamed
    assert second.ardour_file == tmp_path.resolve() / "etc (2)" / "etc (2).ardour"
    assert any("already exists" in note for note in second.notes)
    assert any("sanitised" in note for note in second.notes)
    assert first.ardour_file.read_bytes() == before

    with pytest.raises(SessionExistsError, match="if_exists"):
        export_session([Clip(path=clip_file, name="C")], "etc", tmp_path, if_exists="error")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.wav", "etc", "etc (2)"]  # no staging left


def test_symlinks_out_of_the_allowed_root_are_refused(tmp_path: Path, clip_file: Path) -> None:
    allowed, outside = tmp_path / "sessions", tmp_path / "elsewhere"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "escape").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="outside the allowed directory"):
        export_session([Clip(path=clip_file, name="A")], "s", allowed / "escape", allowed_root=allowed)
    with pytest.raises(UnsafePathError):
        export_session(
            [Clip(path=clip_file, name="A")], "s", allowed / ".." / "elsewhere", allowed_root=allowed
        )
    assert list(outside.iterdir()) == []

    # A symlink sitting where the session would go counts as an existing session, and is left alone.
    (allowed / "taken").symlink_to(outside, target_is_directory=True)
    manifest = export_session([Clip(path=clip_file, name="A")], "taken", allowed, allowed_root=allowed)
    assert manifest.session_name == "taken (2)"
    assert list(outside.iterdir()) == []

    nested = export_session(
        [Clip(path=clip_file, name="A")], "n", allowed / "user" / "x", allowed_root=allowed
    )
    assert nested.session_dir == allowed.resolve() / "user" / "x" / "n"


def test_concurrent_exports_of_one_name_get_distinct_directories(tmp_path: Path, clip_file: Path) -> None:
    with ThreadPoolExecutor(4) as pool:
        manifests = list(
            pool.map(
                lambda _: export_session([Clip(path=clip_file, name="A")], "same", tmp_path / "o"), range(4)
            )
        )
    assert sorted(m.session_name for m in manifests) == ["same", "same (2)", "same (3)", "same (4)"]
    for m in manifests:
        assert ET.parse(m.ardour_file).getroot().get("name") == m.session_name


def test_a_root_that_is_a_file_is_reported(tmp_path: Path, clip_file: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(SessionWriteError, match="writable directory"):
        export_session([Clip(path=clip_file, name="A")], "s", tmp_path / "file")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"arrangement": "explicit"}, "start_s"),
        ({"arrangement": "shuffled"}, "arrangement"),
        ({"bpm": 0.0}, "bpm must be between 20 and 400"),
        ({"bpm": float("nan")}, "bpm"),
        ({"meter": (4, 3)}, "meter"),
        ({"gap_s": -1.0}, "gap_s"),
        ({"sample_rate": 32000}, "sample_rate must be one of"),
        ({"metadata": {"mood": "sad"}}, "metadata keys"),
        ({"metadata": {"year": "last year"}}, "whole number"),
        ({"markers": [("", 1.0)]}, "empty name"),
        ({"markers": [("m", -1.0)]}, "marker"),
        ({"if_exists": "overwrite"}, "if_exists"),
    ],
)
def test_bad_arguments_name_the_argument(tmp_path: Path, clip_file: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        export_session([Clip(path=clip_file, name="A")], "s", tmp_path, **kwargs)
    assert list(tmp_path.iterdir()) == [clip_file]


def test_unusable_audio_is_refused_and_leaves_nothing_behind(tmp_path: Path) -> None:
    audio = tmp_path / "in"
    audio.mkdir()
    out = tmp_path / "out"
    surround = tone(audio / "surround.wav", channels=3)
    (audio / "not-audio.wav").write_text("hello")
    for path, match in [
        (surround, "3 channels"),
        (audio / "not-audio.wav", "cannot be read"),
        (audio / "missing.wav", "cannot be read"),
    ]:
        with pytest.raises(AudioInputError, match=match):
            export_session([Clip(path=path, name="A")], "s", out)
    assert not out.exists() or list(out.iterdir()) == []
    assert issubclass(AudioInputError, ArdourExportError)


def test_clip_fields_are_validated() -> None:
    with pytest.raises(ValueError, match="gain_db"):
        Clip(path=Path("x.wav"), name="x", gain_db=100.0)
    with pytest.raises(ValueError, match="start_s"):
        Clip(path=Path("x.wav"), name="x", start_s=-1.0)


def test_session_xml_keeps_the_invariants_ardour_needs(tmp_path: Path) -> None:
    a = tone(tmp_path / "a.wav", rate=32000)
    b = tone(tmp_path / "b.wav", channels=2)
    hostile = 'prompt with <xml> & "quotes"\x00\x07 and \ufffe junk'
    manifest = export_session(
        [Clip(path=a, name="Lead", comment=hostile), Clip(path=b, name="Pad")],
        "xml check",
        tmp_path / "out",
        markers=[("Drop", 0.25)],
        metadata={"comment": "c\x01"},
    )
    raw = manifest.ardour_file.read_bytes()
    root = ET.fromstring(raw)
    assert root.get("version") == "7002" and root.get("sample-rate") == "48000"
    ids = [int(e.get("id", "")) for e in root.iter() if e.get("id") is not None]
    assert len(ids) == len(set(ids)) and int(root.get("id-counter", "0")) > max(ids)
    for tag in (
        "Config",
        "Sources",
        "Regions",
        "Locations",
        "Playlists",
        "Routes",
        "RouteGroups",
        "TempoMap",
    ):
        assert root.find(tag) is not None, tag
    options = {o.get("name"): o.get("value") for o in root.iter("Option")}
    assert options["native-file-data-format"] == "FormatFloat"
    assert [loc.get("flags") for loc in root.iter("Location")].count("IsSessionRange") == 1
    # Whitespace-only text inside an element (e.g. "<RouteGroups>\n</RouteGroups>") crashes Ardour 7.3.
    for element in root.iter():
        if len(element) == 0 and element.text is not None:
            assert element.text.strip(), element.tag
    assert b"\x00" not in raw and b"\x07" not in raw
    comment = next(root.iter("Comment")).text or ""
    assert comment.startswith('prompt with <xml> & "quotes"') and "\ufffe" not in comment
    assert root.find("ControlProtocols") is None  # OSC stays off unless asked for
    for route in root.iter("Route"):
        amp = [p for p in route.iter("Processor") if p.get("type") == "amp"]
        assert len(amp) == 1 and amp[0].find("Controllable[@name='gaincontrol']") is not None
    # The stereo file is two sources of one name, one per channel.
    pad_sources = [s for s in root.iter("Source") if s.get("name") == "Pad.wav"]
    assert sorted(str(s.get("channel")) for s in pad_sources) == ["0", "1"]


def test_audio_is_stored_at_session_rate_as_float(tmp_path: Path) -> None:
    a = tone(tmp_path / "a.wav", rate=32000, seconds=1.0)
    b = tone(tmp_path / "b.wav", rate=44100, seconds=1.0, channels=2)
    manifest = export_session([Clip(path=a, name="A"), Clip(path=b, name="B")], "rates", tmp_path / "out")
    for track, source_rate in zip(manifest.tracks, (32000, 44100), strict=True):
        info = sf.info(str(track.file))
        assert (info.samplerate, info.subtype) == (48000, "FLOAT")
        assert info.frames == track.length_samples == 48000
        assert track.resampled and track.source_sample_rate == source_rate
    assert [t.channels for t in manifest.tracks] == [1, 2]


def test_arrangements_place_clips_in_samples(tmp_path: Path) -> None:
    a = tone(tmp_path / "a.wav", rate=32000, seconds=1.0)  # 48000 samples once resampled
    b = tone(tmp_path / "b.wav", seconds=0.5)
    clips = [Clip(path=a, name="A", start_s=2.0), Clip(path=b, name="B", start_s=0.125)]
    out = tmp_path / "out"
    seq = export_session(clips, "seq", out, arrangement="sequential", gap_s=0.25)
    assert [t.start_samples for t in seq.tracks] == [0, 48000 + 12000]
    assert seq.length_samples == 60000 + 24000
    stacked = export_session(clips, "stacked", out, arrangement="stacked")
    assert [t.start_samples for t in stacked.tracks] == [0, 0] and stacked.length_samples == 48000
    explicit = export_session(clips, "explicit", out, arrangement="explicit", markers=[("Intro", 0.0)])
    assert [t.start_samples for t in explicit.tracks] == [96000, 6000]
    assert explicit.length_samples == 96000 + 48000
    assert [(m.name, m.start_samples) for m in explicit.markers] == [("Intro", 0), ("B", 6000), ("A", 96000)]


def test_writing_a_four_track_thirty_second_session_is_quick(tmp_path: Path) -> None:
    """The figure reported in the issue: 4 mono 32 kHz clips of 30 s, resampled to 48 kHz."""
    clips = [
        Clip(path=tone(tmp_path / f"{n}.wav", rate=32000, seconds=30.0, freq=110.0 * (n + 1)), name=f"T{n}")
        for n in range(4)
    ]
    started = time.perf_counter()
    manifest = export_session(clips, "timing", tmp_path / "out")
    elapsed = time.perf_counter() - started
    print(f"\n4 tracks x 30 s (32 kHz -> 48 kHz): {elapsed:.2f} s")
    assert manifest.length_samples == 4 * 30 * 48000
    assert elapsed < 20.0, f"writing took {elapsed:.1f} s"
    assert os.path.getsize(manifest.tracks[0].file) > 30 * 48000 * 4
