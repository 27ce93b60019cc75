"""Sessions checked by Ardour itself: loaded with ardour7-lua, rendered with ardour7-export.

The expected mix is computed from the signals the test files were made from (tests/ardour_testing.py). Each
Ardour call costs ~2-4 s, so each test builds one rich session and checks everything about it at once.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from ardour_testing import assert_ardour_sees, assert_render_matches, noise_file, require_ardour, tone_file

from ardour_templates import Clip, export_session
from ardour_templates.verify import inspect_session


@pytest.fixture(scope="module", autouse=True)
def ardour_tools() -> None:
    require_ardour()


def test_mixed_session_is_loaded_and_rendered_by_ardour_as_written(tmp_path: Path) -> None:
    sources = [
        tone_file(tmp_path / "lead.wav", 32000, 2.0, [440.0]),
        noise_file(tmp_path / "pad.wav", 1.5, channels=2, seed=1),
        tone_file(tmp_path / "bass.wav", 48000, 1.0, [55.0], amp=0.5),
    ]
    params = json.dumps({"seed": 7, "temperature": 1.0, "duration": 2.0})
    clips = [
        Clip(
            path=sources[0].path,
            name='Lead "dreamy" <synth>',
            gain_db=-6.0,
            comment=f'dreamy lead <&> "x"\n{params}',
        ),
        Clip(path=sources[1].path, name="Pad – ünïcødé ☁", comment="airy pad"),
        Clip(path=sources[2].path, name="Bass", gain_db=3.0),
    ]
    manifest = export_session(
        clips,
        "Late Night Jam ü",
        tmp_path / "sessions",
        gap_s=0.5,
        bpm=96,
        meter=(3, 4),
        markers=[("Drop", 1.0)],
        metadata={"comment": "made by dgx-music", "artist": "tests", "genre": "ambient"},
        enable_osc=True,
    )
    assert [(t.start_samples, t.length_samples, t.channels) for t in manifest.tracks] == [
        (0, 96000, 1),
        (120000, 72000, 2),
        (216000, 48000, 1),
    ]

    view = inspect_session(manifest.ardour_file, save_snapshot_as="as-ardour-saw-it")
    assert_ardour_sees(view, manifest, clips)
    # Lua cannot read session metadata or protocols; Ardour's own save of what it loaded shows them.
    resaved = ET.parse(manifest.session_dir / "as-ardour-saw-it.ardour").getroot()
    metadata = {child.tag: child.text for child in resaved.iterfind("Metadata/*")}
    assert metadata == {
        "title": "Late Night Jam ü",
        "comment": "made by dgx-music",
        "artist": "tests",
        "genre": "ambient",
    }
    [osc] = [p for p in resaved.iter("Protocol") if p.get("name") == "Open Sound Control (OSC)"]
    assert osc.get("active") == "1"

    assert_render_matches(manifest, sources, tmp_path)


def test_eight_stacked_tracks(tmp_path: Path) -> None:
    sources, clips = [], []
    for n in range(8):
        seconds = 0.6 + 0.1 * n
        if n % 2:
            source = noise_file(tmp_path / f"n{n}.wav", seconds, channels=1 + n % 4 // 2, seed=n)
        else:
            source = tone_file(tmp_path / f"t{n}.wav", 32000, seconds, [150.0 * (n + 1), 97.0 * (n + 1)])
        sources.append(source)
        clips.append(Clip(path=source.path, name=f"Layer {n}", gain_db=-9.0 + 1.5 * n, comment=f"layer {n}"))
    manifest = export_session(clips, "eight layers", tmp_path / "sessions", arrangement="stacked")
    assert [t.channels for t in manifest.tracks] == [2, 1, 2, 2, 2, 1, 2, 2]
    assert all(t.start_samples == 0 for t in manifest.tracks)

    assert_ardour_sees(inspect_session(manifest.ardour_file), manifest, clips)
    assert_render_matches(manifest, sources, tmp_path)


def test_hostile_existing_name_and_explicit_start(tmp_path: Path) -> None:
    root = tmp_path / "sessions"
    filler = tone_file(tmp_path / "filler.wav", 48000, 0.5, [330.0])
    first = export_session([Clip(path=filler.path, name="x")], "../../etc", root)
    assert first.session_dir == root.resolve() / "etc"

    source = tone_file(tmp_path / "late.wav", 32000, 1.0, [220.0, 330.0])
    clips = [Clip(path=source.path, name="Late entry", start_s=1.5, gain_db=-3.0, comment="")]
    manifest = export_session(clips, "../../etc", root, arrangement="explicit")
    assert manifest.session_name == "etc (2)" and manifest.renamed
    assert manifest.ardour_file == root.resolve() / "etc (2)" / "etc (2).ardour"
    assert (manifest.tracks[0].start_samples, manifest.length_samples) == (72000, 72000 + 48000)
    assert sorted(p.name for p in root.iterdir()) == ["etc", "etc (2)"]

    assert_ardour_sees(inspect_session(manifest.ardour_file), manifest, clips)
    assert_render_matches(manifest, [source], tmp_path)
