"""The .ardour XML (format 7002: written by Ardour 7.3-8.3, loaded by 7, 8 and 9), built with ElementTree.

Only what Ardour needs to load the session without repairs; it fills in the rest (solo/mute controls,
pannables, automation lists) with defaults and writes them on the first save. See
shared/notes/ardour-sessions.md for the pitfalls each element below avoids.
"""

from __future__ import annotations

import itertools
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass

SESSION_FORMAT = "7002"
SUPERCLOCK_RATE = 282_240_000  # Ardour 7's superclock ticks per second; every supported rate divides it
FIRST_ID = 100  # Ardour numbers its own objects from 1; ours start above them
# The keys of Ardour's SessionMetadata, spelled as Ardour writes them.
METADATA_KEYS = frozenset({
    "description", "comment", "copyright", "isrc", "year", "grouping", "title", "subtitle", "artist",
    "album_artist", "lyricist", "composer", "conductor", "remixer", "arranger", "engineer", "producer",
    "dj_mixer", "mixer", "instructor", "course", "album", "compilation", "disc_subtitle", "disc_number",
    "total_discs", "track_number", "total_tracks", "genre", "barcode",
})  # fmt: skip
OSC_PROTOCOL = "Open Sound Control (OSC)"
# XML 1.0 cannot carry these at all, not even escaped: drop them rather than write a file nobody can parse.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


@dataclass(frozen=True)
class TrackSpec:
    name: str
    file_name: str  # inside interchange/NAME/audiofiles/
    channels: int
    start: int  # samples: the region's position on the timeline
    length: int  # samples: the region's length
    scale: float  # linear region gain (scale-amplitude)
    comment: str
    file_frames: int  # samples in the file (the whole-file region)
    source_offset: int = 0  # samples into the file where the region begins
    muted: bool = False
    group: str | None = None  # the route group the track belongs to


@dataclass(frozen=True)
class SessionSpec:
    name: str
    rate: int
    bpm: float
    meter: tuple[int, int]
    end: int  # samples; the session range is [0, end]
    tracks: list[TrackSpec]
    markers: list[tuple[str, int]]
    metadata: dict[str, str]
    enable_osc: bool


def clean_text(text: str) -> str:
    return _XML_ILLEGAL.sub("", text)


def _sub(parent: ET.Element, tag: str, **attrs: object) -> ET.Element:
    return ET.SubElement(parent, tag, {k.replace("_", "-"): clean_text(str(v)) for k, v in attrs.items()})


class _Ids:
    def __init__(self) -> None:
        self._counter: Iterator[int] = itertools.count(FIRST_ID)
        self.last = FIRST_ID - 1

    def __call__(self) -> int:
        self.last = next(self._counter)
        return self.last


class _Builder:
    def __init__(self, spec: SessionSpec) -> None:
        self.spec = spec
        self.ids = _Ids()

    def time(self, samples: int) -> str:
        return f"a{samples * (SUPERCLOCK_RATE // self.spec.rate)}"

    def build(self) -> ET.Element:
        spec = self.spec
        root = ET.Element(
            "Session",
            {"version": SESSION_FORMAT, "name": clean_text(spec.name), "sample-rate": str(spec.rate)},
        )
        config = _sub(root, "Config")
        _sub(config, "Option", name="native-file-data-format", value="FormatFloat")
        _sub(config, "Option", name="native-file-header-format", value="WAVE")
        self.metadata(_sub(root, "Metadata"))
        sources, regions = _sub(root, "Sources"), _sub(root, "Regions")
        self.locations(_sub(root, "Locations"))
        routes, playlists = _sub(root, "Routes"), _sub(root, "Playlists")
        self.route(routes, "Master", self.ids(), inputs=2, order=0)
        members: dict[str, list[int]] = {}
        for order, track in enumerate(spec.tracks, start=1):
            source_ids = [self.source(sources, track, channel) for channel in range(track.channels)]
            self.region(regions, track, source_ids, whole_file=True)
            route_id, playlist_id = self.ids(), self.ids()
            if track.group is not None:
                members.setdefault(track.group, []).append(route_id)
            self.route(routes, track.name, route_id, inputs=track.channels, order=order, track=track,
                       playlist_id=playlist_id)  # fmt: skip
            playlist = _sub(playlists, "Playlist", id=playlist_id, name=track.name, type="audio",
                            orig_track_id=route_id, pgroup_id="", shared_with_ids="", frozen=0,
                            combine_ops=0)  # fmt: skip
            self.region(playlist, track, source_ids, whole_file=False)
        _sub(root, "Bundles")
        groups = _sub(root, "RouteGroups")  # required even when empty: without it the session does not load
        for group, route_ids in members.items():
            # Shares gain (relatively), mute, solo, selection...: one click mutes or solos the whole group.
            _sub(groups, "RouteGroup", id=self.ids(), rgba=0, used_to_share_gain=0, name=group, hidden=0,
                 active=1, relative=1, gain=1, mute=1, solo=1, recenable=1, select=1, route_active=1, color=1,
                 monitoring=1, group_master_number=-1, routes=" ".join(map(str, route_ids)))  # fmt: skip
        self.tempo_map(_sub(root, "TempoMap", superclocks_per_second=SUPERCLOCK_RATE))
        if spec.enable_osc:
            _sub(_sub(root, "ControlProtocols"), "Protocol", name=OSC_PROTOCOL, active=1)
        root.set("id-counter", str(self.ids.last + 1))
        return root

    def metadata(self, node: ET.Element) -> None:
        for key, value in sorted(self.spec.metadata.items()):
            ET.SubElement(node, key).text = clean_text(value)

    def locations(self, node: ET.Element) -> None:
        # Without the session range ardour7-export writes an empty file and still exits 0.
        self.location(node, "session", 0, self.spec.end, "IsSessionRange")
        for name, at in self.spec.markers:
            self.location(node, name, at, at, "IsMark")

    def location(self, node: ET.Element, name: str, start: int, end: int, flags: str) -> None:
        _sub(node, "Location", id=self.ids(), name=name, start=self.time(start), end=self.time(end),
             flags=flags, locked=0, timestamp=0, cue=0)  # fmt: skip

    def source(self, node: ET.Element, track: TrackSpec, channel: int) -> int:
        source_id = self.ids()
        # A stereo file is two sources with one name, told apart by channel.
        _sub(node, "Source", name=track.file_name, type="audio", flags="", id=source_id, captured_for="",
             take_id="", channel=channel, origin="", gain=1)  # fmt: skip
        return source_id

    def region(self, node: ET.Element, track: TrackSpec, source_ids: list[int], *, whole_file: bool) -> None:
        position, offset, length = (0, 0, track.file_frames) if whole_file else (
            track.start, track.source_offset, track.length
        )  # fmt: skip
        attrs: dict[str, object] = {
            "name": track.file_name.removesuffix(".wav") if whole_file else f"{track.name}.1",
            "muted": 0, "opaque": 1, "locked": 0, "video-locked": 0, "automatic": 0,
            "whole-file": int(whole_file), "import": 0, "external": 0, "sync-marked": 0, "left-of-split": 0,
            "right-of-split": 0, "hidden": 0, "position-locked": 0, "valid-transients": 0,
            "start": self.time(offset),  # offset into the source
            "length": f"{self.time(length)}@{self.time(position)}",  # length and position in one
            "sync-position": self.time(0), "stretch": 1, "shift": 1, "layering-index": 0, "tags": "",
            "type": "audio", "envelope-active": 0, "default-fade-in": 1, "default-fade-out": 1,
            "fade-in-active": 1, "fade-out-active": 1, "scale-amplitude": repr(track.scale),
            "id": self.ids(), "channels": len(source_ids),
        }  # fmt: skip
        for n, source_id in enumerate(source_ids):
            attrs[f"source-{n}"] = attrs[f"master-source-{n}"] = source_id
        _sub(node, "Region", **attrs)

    def route(self, node: ET.Element, name: str, route_id: int, *, inputs: int, order: int,
              track: TrackSpec | None = None, playlist_id: int = 0) -> None:  # fmt: skip
        """The master bus (track=None) or an audio track; both end in a stereo main-outs."""
        attrs: dict[str, object] = dict(version=SESSION_FORMAT, id=route_id, name=name, default_type="audio",
                                        strict_io=int(track is None), active=1, denormal_protection=0,
                                        meter_point="MeterPostFader", disk_io_point="DiskIOPreFader",
                                        meter_type="MeterPeak")  # fmt: skip
        if track is not None:
            attrs.update(audio_playlist=playlist_id, saved_meter_point="MeterPostFader",
                         alignment_choice="Automatic", mode="Normal")  # fmt: skip
        route = _sub(node, "Route", **attrs)
        flags = "MasterOut,OrderSet" if track is None else "AudioTrack,OrderSet"
        _sub(route, "PresentationInfo", order=order, flags=flags, color=0)
        self.io(route, name, "Input", inputs)
        self.io(route, name, "Output", 2)
        if track is not None and track.muted:
            _sub(route, "MuteMaster", mute_point="PreFader,PostFader,Listen,Main", muted=1)
            _sub(route, "Controllable", name="mute", id=self.ids(), flags="Toggle,RealTime", value=1)
        if track is not None:
            self.processor(route, "diskwriter", f"recorder:{name}", record_safe=0)
            self.processor(route, "diskreader", f"player:{name}")
        # Without an amp processor holding its gaincontrol, Ardour logs an error and rebuilds the route.
        for kind, control in (("trim", "trimcontrol"), ("amp", "gaincontrol")):
            amp = self.processor(route, kind, "Amp")
            _sub(amp, "Controllable", name=control, id=self.ids(), flags="GainLike", value=1)
        self.processor(route, "meter", f"meter-{name}")
        outs = self.processor(route, "main-outs", name, own_input=1, own_output=0, output=name, role="Main")
        _sub(outs, "PannerShell", bypassed=0, user_panner="", linked_to_route=1)
        if track is not None and track.comment:
            ET.SubElement(route, "Comment").text = clean_text(track.comment)

    def processor(self, route: ET.Element, kind: str, name: str, **extra: object) -> ET.Element:
        return _sub(route, "Processor", id=self.ids(), name=name, active=1, user_latency=0,
                    use_user_latency=0, type=kind, **extra)  # fmt: skip

    def io(self, route: ET.Element, name: str, direction: str, ports: int) -> None:
        # Inputs stay unconnected (no capture hardware is assumed); outputs feed the master, which feeds
        # the first two playback ports.
        io = _sub(route, "IO", name=name, id=self.ids(), direction=direction, default_type="audio")
        kind = "in" if direction == "Input" else "out"
        for n in range(1, ports + 1):
            port = _sub(io, "Port", type="audio", name=f"{name}/audio_{kind} {n}")
            if direction == "Output":
                target = "system:playback_" if name == "Master" else "Master/audio_in "
                _sub(port, "Connection", other=f"{target}{n}")

    def tempo_map(self, node: ET.Element) -> None:
        bpm = repr(float(self.spec.bpm))
        _sub(_sub(node, "Tempos"), "Tempo", npm=bpm, enpm=bpm, note_type=4, type="Tempo::Constant", active=1,
             locked_to_meter=0, continuing=0, sclock=0, quarters="0:0", bbt="1|1|0", omega=0)  # fmt: skip
        divisions, note_value = self.spec.meter
        _sub(_sub(node, "Meters"), "Meter", note_value=note_value, divisions_per_bar=divisions, sclock=0,
             quarters="0:0", bbt="1|1|0")  # fmt: skip
        _sub(node, "MusicTimes")


def session_xml(spec: SessionSpec) -> bytes:
    """The .ardour document; empty containers are self-closing (whitespace inside one crashes Ardour 7.3)."""
    root = _Builder(spec).build()
    ET.indent(root, space="  ")
    body = ET.tostring(root, encoding="unicode")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{body}\n'.encode()
