"""export_session: clips in, a self-contained Ardour session directory and its manifest out."""

from __future__ import annotations

import math
import secrets
import shlex
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from . import song
from .audio import StoredClip, store_at_rate
from .errors import InvalidArgumentError, SessionWriteError
from .models import Clip, MarkerInfo, SessionManifest, TrackInfo
from .naming import audio_file_names, sanitize_session_name, unique_track_names
from .paths import discard, publish, reserve_session_dir, resolve_output_root
from .session_xml import METADATA_KEYS, SessionSpec, TrackSpec, clean_text, session_xml

Arrangement = Literal["sequential", "stacked", "explicit", "song"]
ARRANGEMENTS = ("sequential", "stacked", "explicit", "song")
SAMPLE_RATES = (44100, 48000, 88200, 96000, 192000)
NOTE_VALUES = (1, 2, 4, 8, 16, 32)
DEFAULT_BPM = 120.0
MAX_TRACKS = 128
_NUMERIC_METADATA = frozenset({"year", "disc_number", "total_discs", "track_number", "total_tracks"})


def export_session(
    clips: Sequence[Clip],
    session_name: str,
    root: Path,
    arrangement: Arrangement = "sequential",
    gap_s: float = 0.0,
    bpm: float | None = None,
    meter: tuple[int, int] = (4, 4),
    markers: Sequence[tuple[str, float]] = (),
    metadata: Mapping[str, str] | None = None,
    sample_rate: int = 48000,
    enable_osc: bool = False,
    if_exists: Literal["rename", "error"] = "rename",
    allowed_root: Path | None = None,
    include_mix: bool = True,
    variation_group: str = song.DEFAULT_VARIATION_GROUP,
) -> SessionManifest:
    """Write root/NAME/NAME.ardour with one track per clip and return (and write) its manifest.

    Arrangements: "sequential" puts clips one after another with `gap_s` between them, "stacked" starts
    them all at 0, "explicit" uses each Clip.start_s (the others ignore start_s); in these every clip start
    gets a marker named after its track. "song" lays out one song by each clip's role: the song ("mix")
    and its stems ("stem:NAME") aligned at 0, the mix muted when stems play it (or left out with
    `include_mix=False`); edits at their section's place, trimmed to the section, with markers at its
    bounds; variations at 0 in the route group `variation_group`. Tracks come in that order. The session
    range runs from 0 to the end of the last region.

    The directory appears complete or not at all: it is written under a hidden staging name, then renamed
    onto NAME, which was claimed with mkdir so concurrent exports never share one. The real path of `root`
    must lie inside `allowed_root` (default: `root` itself); the sanitised name cannot leave it. Clip gain
    goes to each region's gain (scale-amplitude); faders stay at 0 dB.
    """
    tempo = _check_arguments(clips, arrangement, gap_s, bpm, meter, sample_rate, if_exists)
    song.check_roles(clips)
    if arrangement == "song":
        group = song.check_group_name(variation_group)
        clips = song.select_clips(clips, include_mix)
    elif not include_mix:
        raise InvalidArgumentError(f"include_mix=False applies to arrangement 'song' (got {arrangement!r})")
    user_markers = _check_markers(markers, sample_rate)
    name = sanitize_session_name(session_name)
    meta = _check_metadata({"title": name, **(metadata or {})})
    out_root = resolve_output_root(Path(root), Path(allowed_root) if allowed_root is not None else Path(root))

    names = unique_track_names(clip.name for clip in clips)
    file_names = audio_file_names(names)

    session_dir = reserve_session_dir(out_root, name, if_exists)
    staging = out_root / f".{secrets.token_hex(8)}.partial"
    try:
        audiofiles = _make_layout(staging, session_dir.name)
        stored = [
            store_at_rate(clip.path, audiofiles / file_name, sample_rate)
            for clip, file_name in zip(clips, file_names, strict=True)
        ]
        frames = [s.frames for s in stored]
        if arrangement == "song":
            placements, track_markers = song.layout(clips, frames, names, sample_rate, group)
        else:
            starts = _arrange(clips, frames, arrangement, gap_s, sample_rate)
            placements = [song.Placement(start, 0, n) for start, n in zip(starts, frames, strict=True)]
            track_markers = list(zip(names, starts, strict=True))
        tracks = [
            TrackSpec(
                name=track_name,
                file_name=file_name,
                channels=s.channels,
                start=place.start,
                length=place.length,
                scale=10.0 ** (clip.gain_db / 20.0),
                comment=clip.comment,
                file_frames=s.frames,
                source_offset=place.source_offset,
                muted=place.muted,
                group=place.group,
            )
            for clip, s, place, track_name, file_name in zip(
                clips, stored, placements, names, file_names, strict=True
            )
        ]
        spec = SessionSpec(
            name=session_dir.name,
            rate=sample_rate,
            bpm=tempo,
            meter=meter,
            end=max(t.start + t.length for t in tracks),
            tracks=tracks,
            markers=sorted(track_markers + user_markers, key=lambda m: m[1]),
            metadata=meta,
            enable_osc=enable_osc,
        )
        manifest = _manifest(session_name, session_dir, spec, clips, stored)
        (staging / f"{spec.name}.ardour").write_bytes(session_xml(spec))
        (staging / "manifest.json").write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
        publish(staging, session_dir)
    except OSError as exc:
        discard(staging, session_dir)
        raise SessionWriteError(
            f"could not write the session into {str(out_root)!r} ({exc}); check free space and permissions"
        ) from exc
    except BaseException:
        discard(staging, session_dir)
        raise
    return manifest


def _check_arguments(
    clips: Sequence[Clip],
    arrangement: str,
    gap_s: float,
    bpm: float | None,
    meter: tuple[int, int],
    sample_rate: int,
    if_exists: str,
) -> float:
    """Validate the scalar arguments; returns the tempo to use."""
    if not 1 <= len(clips) <= MAX_TRACKS:
        raise InvalidArgumentError(f"clips: pass 1 to {MAX_TRACKS} clips (got {len(clips)})")
    if arrangement not in ARRANGEMENTS:
        raise InvalidArgumentError(
            f"arrangement must be 'sequential', 'stacked', 'explicit' or 'song' (got {arrangement!r})"
        )
    if arrangement == "explicit" and any(clip.start_s is None for clip in clips):
        missing = [clip.name for clip in clips if clip.start_s is None]
        raise InvalidArgumentError(
            f"arrangement 'explicit' needs start_s on every clip; missing on {missing}: set start_s "
            "(seconds) or use arrangement 'sequential' or 'stacked'"
        )
    if not (math.isfinite(gap_s) and 0.0 <= gap_s <= 3600.0):
        raise InvalidArgumentError(f"gap_s must be between 0 and 3600 seconds (got {gap_s})")
    tempo = DEFAULT_BPM if bpm is None else float(bpm)
    if not (math.isfinite(tempo) and 20.0 <= tempo <= 400.0):
        raise InvalidArgumentError(f"bpm must be between 20 and 400, or None for {DEFAULT_BPM:g} (got {bpm})")
    if len(meter) != 2 or not 1 <= meter[0] <= 64 or meter[1] not in NOTE_VALUES:
        raise InvalidArgumentError(
            f"meter must be (beats per bar 1-64, note value one of {NOTE_VALUES}), e.g. (4, 4) (got {meter})"
        )
    if sample_rate not in SAMPLE_RATES:
        raise InvalidArgumentError(f"sample_rate must be one of {SAMPLE_RATES} (got {sample_rate})")
    if if_exists not in ("rename", "error"):
        raise InvalidArgumentError(f"if_exists must be 'rename' or 'error' (got {if_exists!r})")
    return tempo


def _check_markers(markers: Sequence[tuple[str, float]], rate: int) -> list[tuple[str, int]]:
    result = []
    for name, at in markers:
        if not (math.isfinite(at) and 0.0 <= at <= 86_400.0):
            raise InvalidArgumentError(
                f"marker {name!r}: time must be between 0 and 86400 seconds (got {at})"
            )
        label = clean_text(str(name)).strip()[:200]
        if not label:
            raise InvalidArgumentError(f"marker at {at} s has an empty name; give every marker a name")
        result.append((label, round(at * rate)))
    return result


def _check_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    unknown = sorted(set(metadata) - METADATA_KEYS)
    if unknown:
        raise InvalidArgumentError(
            f"metadata keys {unknown} are not Ardour session metadata; use some of {sorted(METADATA_KEYS)}"
        )
    for key in _NUMERIC_METADATA & set(metadata):
        if not str(metadata[key]).isdigit():
            raise InvalidArgumentError(f"metadata {key!r} must be a whole number (got {metadata[key]!r})")
    return {key: str(value)[:10_000] for key, value in metadata.items() if str(value)}


def _arrange(
    clips: Sequence[Clip], lengths: Sequence[int], arrangement: str, gap_s: float, rate: int
) -> list[int]:
    """Start of each clip in samples. Sequential sums lengths in samples, so no rounding drift accumulates."""
    if arrangement == "stacked":
        return [0] * len(clips)
    if arrangement == "explicit":
        return [round((clip.start_s or 0.0) * rate) for clip in clips]
    gap, starts, at = round(gap_s * rate), [], 0
    for length in lengths:
        starts.append(at)
        at += length + gap
    return starts


def _manifest(
    requested: str, session_dir: Path, spec: SessionSpec, clips: Sequence[Clip], stored: Sequence[StoredClip]
) -> SessionManifest:
    rate = spec.rate
    audiofiles = session_dir / "interchange" / spec.name / "audiofiles"
    ardour_file = session_dir / f"{spec.name}.ardour"
    notes = []
    if spec.name != requested:
        first = sanitize_session_name(requested)
        if first != requested:
            notes.append(
                f"name {requested!r} was sanitised to {first!r} (path separators, dots, control characters)"
            )
        if spec.name != first:
            notes.append(f"a session named {first!r} already exists, so this one is {spec.name!r}")
    return SessionManifest(
        requested_name=requested,
        session_name=spec.name,
        renamed=spec.name != requested,
        notes=notes,
        session_dir=session_dir,
        ardour_file=ardour_file,
        manifest_file=session_dir / "manifest.json",
        sample_rate=rate,
        bpm=spec.bpm,
        meter=spec.meter,
        length_samples=spec.end,
        length_s=spec.end / rate,
        tracks=[
            TrackInfo(
                strip_id=n,
                name=t.name,
                file=audiofiles / t.file_name,
                source_file=clip.path,
                channels=t.channels,
                source_sample_rate=a.source_rate,
                resampled=a.source_rate != rate,
                gain_db=clip.gain_db,
                start_samples=t.start,
                length_samples=t.length,
                start_s=t.start / rate,
                length_s=t.length / rate,
                role=clip.role,
                muted=t.muted,
                group=t.group,
                source_offset_samples=t.source_offset,
            )
            for n, (t, clip, a) in enumerate(zip(spec.tracks, clips, stored, strict=True), start=1)
        ],
        markers=[MarkerInfo(name=label, start_samples=at, start_s=at / rate) for label, at in spec.markers],
        metadata=spec.metadata,
        open_command=shlex.join([ardour_binary(), str(ardour_file)]),
        osc_enabled=spec.enable_osc,
    )


def _make_layout(directory: Path, name: str) -> Path:
    """The folders Ardour creates for a new session (it expects them on open); returns audiofiles/."""
    directory.mkdir()
    for sub in ("peaks", "analysis", "dead", "export", "externals", "plugins"):
        (directory / sub).mkdir()
    interchange = directory / "interchange" / name
    (interchange / "midifiles").mkdir(parents=True)
    (interchange / "audiofiles").mkdir()
    return interchange / "audiofiles"


def ardour_binary() -> str:
    """The newest Ardour launcher on PATH (distributions name it ardourN or ardour), else plain 'ardour'."""
    for candidate in ("ardour9", "ardour8", "ardour7", "ardour"):
        if shutil.which(candidate):
            return candidate
    return "ardour"
