"""Ask Ardour itself what a session holds (ardour7-lua) and what it sounds like (ardour7-export).

Used by our tests and by anyone who wants proof that a generated session opens as intended. The tools are
found by name on PATH (ardour9-*, ardour8-*, ardour7-*), so this works with whichever Ardour is installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import soundfile as sf

from .errors import ArdourToolError

ARDOUR_VERSIONS = (9, 8, 7)
LINE_PREFIX = "@@ "
DEFAULT_ATTEMPTS = 4  # 7.3's exporter aborts in teardown in 10-35% of runs


@dataclass(frozen=True)
class RegionView:
    name: str
    position: int
    length: int
    start: int
    channels: int
    peak: float  # of the source data; Ardour does not apply scale_amplitude here
    scale_amplitude: float
    sources: list[str]


@dataclass(frozen=True)
class RouteView:
    name: str
    order: int
    is_track: bool
    is_master: bool
    inputs: int
    outputs: int
    gain: float
    muted: bool
    comment: str
    regions: list[RegionView] = field(default_factory=list)


@dataclass(frozen=True)
class GroupView:
    name: str
    routes: list[str]
    active: bool
    shares_mute: bool
    shares_solo: bool
    shares_gain: bool


@dataclass(frozen=True)
class LocationView:
    name: str
    start: int
    end: int
    is_mark: bool
    is_session_range: bool


@dataclass(frozen=True)
class SessionView:
    """A session as Ardour loaded it."""

    name: str
    sample_rate: int
    bpm: float
    divisions_per_bar: int
    note_value: int
    routes: list[RouteView]
    locations: list[LocationView]
    groups: list[GroupView] = field(default_factory=list)

    @property
    def tracks(self) -> list[RouteView]:
        return [route for route in self.routes if route.is_track]

    @property
    def markers(self) -> list[LocationView]:
        return [location for location in self.locations if location.is_mark]

    @property
    def session_range(self) -> LocationView | None:
        return next((loc for loc in self.locations if loc.is_session_range), None)


def find_tool(suffix: str) -> str:
    """The path of ardourN-SUFFIX (newest N first), e.g. find_tool("lua") -> "/usr/bin/ardour7-lua"."""
    for version in ARDOUR_VERSIONS:
        path = shutil.which(f"ardour{version}-{suffix}")
        if path:
            return path
    names = ", ".join(f"ardour{v}-{suffix}" for v in ARDOUR_VERSIONS)
    raise ArdourToolError(
        f"none of {names} is on PATH; install Ardour's command-line tools "
        "(Debian/Ubuntu: apt-get install ardour)"
    )


def _run(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            command, capture_output=True, encoding="utf-8", errors="replace", timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        raise ArdourToolError(
            f"{command[0]} did not finish within {timeout:g} s; is the session huge?"
        ) from exc


def inspect_session(
    ardour_file: Path, *, save_snapshot_as: str | None = None, attempts: int = 3, timeout: float = 120.0
) -> SessionView:
    """Load NAME.ardour headless with ardour7-lua and report the tracks, regions, tempo and locations it sees.

    With `save_snapshot_as`, Ardour also saves what it loaded as SESSION_DIR/<that>.ardour, which shows
    state Lua cannot reach (session metadata) in Ardour's own words.
    """
    script = resources.files("ardour_templates") / "inspect.lua"
    with resources.as_file(script) as script_path:
        command = [find_tool("lua"), str(script_path), str(ardour_file.parent), ardour_file.stem]
        command += [save_snapshot_as] if save_snapshot_as else []
        output = ""
        for _ in range(attempts):
            result = _run(command, timeout)
            output = result.stdout + result.stderr
            records = [
                json.loads(line[len(LINE_PREFIX) :])
                for line in result.stdout.splitlines()
                if line.startswith(LINE_PREFIX)
            ]
            if records and records[-1].get("kind") == "end":
                return _session_view(records)
    raise ArdourToolError(
        f"Ardour could not load {str(ardour_file)!r} ({attempts} attempts); "
        f"its last output:\n{output[-2000:]}"
    )


def _session_view(records: list[dict[str, object]]) -> SessionView:
    by_kind: dict[str, list[dict[str, object]]] = {}
    for record in records:
        by_kind.setdefault(str(record.pop("kind")), []).append(record)
    session, tempo = by_kind["session"][0], by_kind["tempo"][0]
    routes = {str(r["name"]): RouteView(**r) for r in by_kind.get("route", [])}  # type: ignore[arg-type]
    for region in by_kind.get("region", []):
        routes[str(region.pop("track"))].regions.append(RegionView(**region))  # type: ignore[arg-type]
    return SessionView(
        name=str(session["name"]),
        sample_rate=int(session["sample_rate"]),  # type: ignore[call-overload]
        bpm=float(tempo["bpm"]),  # type: ignore[arg-type]
        divisions_per_bar=int(tempo["divisions_per_bar"]),  # type: ignore[call-overload]
        note_value=int(tempo["note_value"]),  # type: ignore[call-overload]
        routes=sorted(routes.values(), key=lambda r: r.order),
        locations=[LocationView(**loc) for loc in by_kind.get("location", [])],  # type: ignore[arg-type]
        groups=[GroupView(**group) for group in by_kind.get("group", [])],  # type: ignore[arg-type]
    )


def render_session(
    ardour_file: Path, out_wav: Path, *, attempts: int = DEFAULT_ATTEMPTS, timeout: float = 300.0
) -> tuple[np.ndarray, int]:
    """Render the session range through the master bus as 32-bit float; returns (frames x channels, rate).

    A render counts only with exit status 0, "* Done." in the output and finite samples: 7.3's exporter
    sometimes aborts in teardown (exit 134) or leaves garbage, so it is retried up to `attempts` times.
    """
    command = [
        find_tool("export"),
        "-b",
        "float",
        "-o",
        str(out_wav),
        str(ardour_file.parent),
        ardour_file.stem,
    ]
    output = ""
    for _ in range(attempts):
        out_wav.unlink(missing_ok=True)
        result = _run(command, timeout)
        output = result.stdout + result.stderr
        if result.returncode != 0 or "* Done." not in output or not out_wav.exists():
            continue
        try:
            samples, rate = sf.read(str(out_wav), dtype="float32", always_2d=True)
        except sf.LibsndfileError:
            continue
        if samples.shape[0] > 0 and np.isfinite(samples).all():
            return samples, int(rate)
    raise ArdourToolError(
        f"ardour export of {str(ardour_file)!r} failed {attempts} times; its last output:\n{output[-2000:]}"
    )
