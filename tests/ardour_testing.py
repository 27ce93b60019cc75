"""Helpers for tests that have Ardour itself load and render sessions (ardour7-lua, ardour7-export).

The expected mix is computed from the signals the test files were made from (analytic tones at the session
rate, or the exact noise samples), never from the files export_session wrote.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ardour_templates import Clip, SessionManifest
from ardour_templates.errors import ArdourToolError
from ardour_templates.verify import SessionView, find_tool, render_session

RATE = 48000
MONO_TO_STEREO = 10 ** (-3 / 20)  # Ardour's default panner: centre, -3 dB per side
FADE_GUARD = 80  # Ardour fades each region edge over 64 samples


def require_ardour() -> None:
    """Skip without Ardour's tools, except in CI, which must have them."""
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
            track.source_offset_samples,
        )
        assert seen.muted == track.muted
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
        offset = track.source_offset_samples
        assert source.ideal.shape[0] >= offset + track.length_samples
        if track.muted:
            continue
        signal = source.ideal[offset : offset + track.length_samples] * 10 ** (track.gain_db / 20)
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
        if track.muted:
            continue
        for edge in (track.start_samples, track.start_samples + track.length_samples):
            keep[max(0, edge - FADE_GUARD) : edge + FADE_GUARD] = False
    for channel in range(2):
        got, want = rendered[keep, channel], expected[keep, channel]
        assert np.corrcoef(got, want)[0, 1] >= 0.999, f"channel {channel} does not match the expected mix"
        # Correlation ignores level; the least-squares gain checks clip gain and pan law too.
        assert float(got @ want / (want @ want)) == pytest.approx(1.0, abs=0.01)
