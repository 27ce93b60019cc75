"""Sessions checked by Ardour itself: loaded with ardour7-lua, rendered with ardour7-export.

The expected mix is computed from the signals the test files were made from (analytic tones at the session
rate, or the exact noise samples), never from the files export_session wrote. Each Ardour call costs ~2-4 s,
so each test builds one rich session and checks everything about it at once.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ardour_templates import Clip, SessionManifest, export_session
from ardour_templates.errors import ArdourToolError
from ardour_templates.verify import SessionView, find_tool, inspect_session, render_session

RATE = 48000
MONO_TO_STEREO = 10 ** (-3 / 20)  # Ardour's default panner: centre, -3 dB per side
FADE_GUARD = 80  # Ardour fades each region edge over 64 samples


@pytest.fixture(scope="module", autouse=True)
def ardour_tools() -> None:
    try:
        find_tool("lua")
        find_tool("export")
    except ArdourToolError as exc:
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail(f"CI must have Ardour installed: {exc}")
        pytest.skip(str(exc))


@dataclass(frozen=True)
class Source:
    path: Path
    ideal: np.ndarray  # frames x channels at RATE: what the clip should sound like in the session


def tone_file(path: Path, rate: int, seconds: float, freqs: list[float], amp: float = 0.4) -> Source:
    """Sines at `rate` on disk; the ideal is the same sines sampled at the session rate."""
    write = np.arange(round(seconds * rate)) / rate
    ideal = np.arange(round(seconds * RATE)) / RATE
    sf.write(
        str(path), np.stack([amp * np.sin(2 * np.pi * f * write) for f in freqs], 1).astype(np.float32), rate
    )
    return Source(path, np.stack([amp * np.sin(2 * np.pi * f * ideal) for f in freqs], 1))


def noise_file(path: Path, seconds: float, channels: int, seed: int) -> Source:
    data = (0.2 * np.random.default_rng(seed).standard_normal((round(seconds * RATE), channels))).astype(
        np.float32
    )
    sf.write(str(path), data, RATE)
    return Source(path, data.astype(np.float64))


def assert_ardour_sees(view: SessionView, manifest: SessionManifest, clips: list[Clip]) -> None:
    assert view.name == manifest.session_name
    assert view.sample_rate == manifest.sample_rate == RATE
    assert view.bpm == pytest.approx(manifest.bpm)
    assert (view.divisions_per_bar, view.note_value) == manifest.meter
    assert [r.name for r in view.routes if r.is_master] == ["Master"]
    assert [t.name for t in view.tracks] == [t.name for t in manifest.tracks]
    assert [t.order for t in view.tracks] == [t.strip_id for t in manifest.tracks]
    for seen, track, clip in zip(view.tracks, manifest.tracks, clips, strict=True):
        assert seen.inputs == track.channels and seen.outputs == 2
        assert seen.comment == clip.comment
        assert seen.gain == pytest.approx(1.0)  # clip gain lives in the region, the fader stays at 0 dB
        [region] = seen.regions
        assert (region.position, region.length, region.start) == (
            track.start_samples,
            track.length_samples,
            0,
        )
        assert region.channels == track.channels
        assert region.peak > 0.05, f"{track.name}: silent region (missing or unreadable file?)"
        assert region.scale_amplitude == pytest.approx(10 ** (clip.gain_db / 20), rel=1e-5)
        assert {os.path.realpath(s) for s in region.sources} == {os.path.realpath(track.file)}
    assert sorted((m.name, m.start) for m in view.markers) == sorted(
        (m.name, m.start_samples) for m in manifest.markers
    )
    assert view.session_range is not None
    assert (view.session_range.start, view.session_range.end) == (0, manifest.length_samples)


def expected_mix(manifest: SessionManifest, sources: list[Source]) -> np.ndarray:
    mix = np.zeros((manifest.length_samples, 2))
    for track, source in zip(manifest.tracks, sources, strict=True):
        assert source.ideal.shape[0] == track.length_samples
        signal = source.ideal * 10 ** (track.gain_db / 20)
        if track.channels == 1:
            signal = np.repeat(signal * MONO_TO_STEREO, 2, axis=1)
        mix[track.start_samples : track.start_samples + track.length_samples] += signal
    return mix


def assert_render_matches(manifest: SessionManifest, sources: list[Source], tmp_path: Path) -> None:
    rendered, rate = render_session(manifest.ardour_file, tmp_path / "render.wav")
    assert rate == RATE and rendered.shape == (manifest.length_samples, 2)
    expected = expected_mix(manifest, sources)
    keep = np.ones(manifest.length_samples, dtype=bool)
    for track in manifest.tracks:
        for edge in (track.start_samples, track.start_samples + track.length_samples):
            keep[max(0, edge - FADE_GUARD) : edge + FADE_GUARD] = False
    for channel in range(2):
        got, want = rendered[keep, channel], expected[keep, channel]
        assert np.corrcoef(got, want)[0, 1] >= 0.999, f"channel {channel} does not match the expected mix"
        # Correlation ignores level; the least-squares gain checks clip gain and pan law too.
        assert float(got @ want / (want @ want)) == pytest.approx(1.0, abs=0.01)


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
