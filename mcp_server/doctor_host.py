"""The host checks of `dgx-music doctor`: the data directory, the database's schema revision, and Ardour
(its command-line tools load a session written here; without them sessions are still written, unverified).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from ardour_templates import ArdourExportError, Clip, export_session
from ardour_templates.verify import find_tool, inspect_session
from mcp_server.config import Settings
from mcp_server.doctor_report import GB, Check, _first_line


class HostChecks:
    """The host checks as ``Doctor`` methods; they depend on no earlier check."""

    settings: Settings

    def check_data_dir(self) -> Check:
        home = self.settings.home
        try:
            home.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=home, prefix=".doctor-"):
                pass
        except OSError as error:
            return Check(
                "data dir",
                "fail",
                f"{home} is not writable ({_first_line(error)}): give the server's user write access "
                "or point DGX_MUSIC_HOME elsewhere",
            )
        free = shutil.disk_usage(home).free
        if free < GB:
            return Check(
                "data dir", "warn", f"{home}: only {free / GB:.2f} GB free; each minute of audio is ~10 MB"
            )
        return Check("data dir", "pass", f"{home} is writable, {free / GB:.0f} GB free")

    def check_database(self) -> Check:
        from sqlalchemy.engine import make_url

        from storage.db import current_revision, database_url, head_revision, make_engine

        url = database_url(self.settings.home, self.settings.database_url)
        parsed = make_url(url)
        shown = parsed.render_as_string(hide_password=True)
        if parsed.get_backend_name() == "sqlite" and parsed.database and not Path(parsed.database).exists():
            return Check(
                "database",
                "warn",
                f"{parsed.database} does not exist yet: the server creates it when it starts, "
                "or run `dgx-music db upgrade`",
            )
        engine = make_engine(url)
        try:
            current = current_revision(engine)
        finally:
            engine.dispose()
        head = head_revision()
        if current == head:
            return Check("database", "pass", f"{shown} is migrated (revision {head})")
        return Check(
            "database",
            "fail",
            f"{shown} is at revision {current or 'none'} but this version needs {head}: run "
            "`dgx-music db upgrade` (or upgrade dgx-music if the database was made by a newer one)",
        )

    def check_ardour(self) -> Check:
        """ardourN-lua and ardourN-export present, and Ardour loads a session written the way export_to_ardour
        writes one (a 1 s tone on one track)."""
        try:
            tools = [find_tool("lua"), find_tool("export")]
        except ArdourExportError as error:
            return Check(
                "ardour",
                "warn",
                f"{error}; export_to_ardour still writes sessions, but nothing here can open or check them",
            )
        with tempfile.TemporaryDirectory(prefix="dgx-music-doctor-") as scratch:
            root = Path(scratch)
            tone = root / "tone.wav"
            seconds = np.arange(32_000) / 32_000
            sf.write(tone, (0.25 * np.sin(2 * np.pi * 440 * seconds)).astype(np.float32), 32_000)
            try:
                manifest = export_session(
                    [Clip(path=tone, name="doctor tone")], "doctor-check", root, allowed_root=root
                )
                view = inspect_session(manifest.ardour_file)
            except ArdourExportError as error:
                return Check("ardour", "fail", f"{' and '.join(tools)} present, but: {_first_line(error)}")
        names = [track.name for track in view.tracks]
        if names != ["doctor tone"]:
            return Check("ardour", "fail", f"Ardour loaded the test session with tracks {names}, not one")
        return Check(
            "ardour",
            "pass",
            f"{' and '.join(Path(tool).name for tool in tools)} load a session written here "
            f"(1 track, {view.sample_rate} Hz)",
        )
