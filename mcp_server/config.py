"""Settings of the server and the CLI: environment variables, overridden by command-line flags.

Every field has one environment variable (``DGX_MUSIC_<FIELD>``). An invalid value raises ``ConfigError``
whose message names the variable, what it allows and what was given.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.models import resolve_model_id

ENV_PREFIX = "DGX_MUSIC_"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

# Never echoed back in an error message or a log line.
SECRET_FIELDS = {("token",), ("database_url",)}


class ConfigError(Exception):
    """A setting is invalid; the message names the variable or flag and the allowed values."""


def _xdg(variable: str, fallback: str) -> Path:
    """The XDG base directory ``variable`` names, else ``~/<fallback>``."""
    xdg = os.environ.get(variable)
    return Path(xdg) if xdg else Path.home() / fallback


def default_home() -> Path:
    """$XDG_DATA_HOME/dgx-music, else ~/.local/share/dgx-music (the same rule as the storage package)."""
    return _xdg("XDG_DATA_HOME", ".local/share") / "dgx-music"


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    home: Path = Field(default_factory=default_home, description="Data directory: database, audio, sessions.")
    model: str = Field(
        "facebook/musicgen-small", min_length=1, description="Default model (alias, hub id, path)."
    )
    device: str | None = Field(None, description="cuda, cuda:N or cpu; unset = CUDA when available.")
    dtype: Literal["bfloat16", "float16", "float32", "int8"] | None = None
    token: str | None = Field(
        None, repr=False, min_length=16, description="Bearer token for HTTP transports."
    )
    database_url: str | None = Field(None, repr=False)
    backend: Literal["auto", "batched", "reference"] = Field(
        "auto", description="MusicGen decoding: our batching step (auto/batched) or transformers' generate."
    )
    cuda_graph: bool = Field(True, description="Capture the decode step as CUDA graphs (0 turns it off).")
    kernel_cache: Path | None = Field(
        None,
        description="Where the fp32 CPU decoder's small-row kernel is built once and kept (default "
        "$XDG_CACHE_HOME/dgx-music/kernels, i.e. ~/.cache/dgx-music/kernels).",
    )
    max_batch: int = Field(8, ge=1, le=64, description="Most jobs decoded together in one batch.")
    model_wait_s: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="How long jobs for a model that is not loaded wait before busy models stop taking new "
        "jobs so it can be loaded.",
    )
    max_queue: int = Field(64, ge=1, le=100_000, description="Most pending jobs before new ones are refused.")
    job_timeout_s: float = Field(600.0, gt=0, le=86_400, description="A job running longer than this fails.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    allowed_hosts: str | None = Field(
        None, description="Extra Host names (comma-separated) HTTP clients may use, e.g. behind a proxy."
    )
    model_paths: str | None = Field(
        None,
        description="Aliases the operator maps to local checkpoint directories, NAME=DIR comma-separated, "
        "e.g. "
        "'ace-step=/models/acestep,htdemucs=/models/htdemucs': clients naming NAME get DIR.",
        pattern=r"^\s*[^=,\s][^=,]*=[^,]+(,\s*[^=,\s][^=,]*=[^,]+)*\s*$",
    )
    edit_model: str = Field(
        "ace-step", min_length=1, description="The ACE-Step model edit_music and remix use unless told."
    )
    separator: str = Field("htdemucs", min_length=1, description="The default stem separator (Demucs).")
    input_dirs: str | None = Field(
        None,
        description="Directories (separated by ':') whose audio files requests may continue or follow; "
        "unset = HOME/inputs and HOME/sessions; a relative entry is taken under HOME.",
    )
    # Scale-out (docs/SCALE-OUT.md): several workers and front-ends on one PostgreSQL database.
    outputs: Path | None = Field(
        None, description="Audio directory (default HOME/outputs); every host mounts the same one."
    )
    worker_id: str | None = Field(
        None,
        min_length=1,
        max_length=120,
        pattern=r"^[A-Za-z0-9._:@-]+$",
        description="This worker's name in the workers table (default: host name and data directory).",
    )
    worker_models: str = Field(
        "*", min_length=1, description="Models this worker serves, comma-separated; * = any model."
    )
    lease_s: float = Field(
        30.0,
        ge=1,
        le=3600,
        description="A claimed job goes back to the queue when its worker has not renewed it for this long.",
    )

    @property
    def sessions_dir(self) -> Path:
        """The only directory Ardour sessions are written under."""
        return self.home / "sessions"

    @property
    def input_directories(self) -> tuple[Path, ...]:
        """Where audio for ``continue_from`` / ``melody_from`` may be read (``mcp_server.inputs``)."""
        if not self.input_dirs:
            return (self.home / "inputs", self.sessions_dir)
        entries = [entry.strip() for entry in self.input_dirs.split(os.pathsep) if entry.strip()]
        return tuple(self.home / Path(entry).expanduser() for entry in entries)

    @property
    def model_directories(self) -> dict[str, str]:
        """DGX_MUSIC_MODEL_PATHS as {alias (lower case): directory}."""
        pairs = (entry.split("=", 1) for entry in (self.model_paths or "").split(",") if "=" in entry)
        return {name.strip().lower(): str(Path(path.strip()).expanduser()) for name, path in pairs}

    @property
    def kernel_cache_dir(self) -> Path:
        """DGX_MUSIC_KERNEL_CACHE, else $XDG_CACHE_HOME/dgx-music/kernels (~/.cache/dgx-music/kernels): one
        build per machine, shared by every data directory (each test's home, each worker)."""
        if self.kernel_cache is not None:
            return self.kernel_cache.expanduser()
        return _xdg("XDG_CACHE_HOME", ".cache") / "dgx-music" / "kernels"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / "server.log"

    @property
    def lock_file(self) -> Path:
        """One worker per data directory, or per worker id when several share one (a GPU each)."""
        return self.home / ("worker.lock" if self.worker_id is None else f"worker-{self.worker_id}.lock")

    @property
    def worker_name(self) -> str:
        """The worker id, else one that stays the same across restarts of this host's worker on this home,
        so a restarted worker takes its own interrupted jobs back at once."""
        if self.worker_id is not None:
            return self.worker_id
        digest = hashlib.sha256(str(self.home).encode()).hexdigest()[:8]
        return f"{socket.gethostname()}-{digest}"

    @property
    def served_models(self) -> list[str]:
        """Resolved model ids this worker serves; ["*"] = any."""
        names = [name.strip() for name in self.worker_models.split(",") if name.strip()]
        return ["*"] if "*" in names or not names else [resolve_model_id(name) for name in names]

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``env`` (default ``os.environ``), then flags in ``overrides`` (None = not given)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            raw = env.get(ENV_PREFIX + name.upper(), "").strip()
            if raw:
                values[name] = raw
        values.update({name: value for name, value in overrides.items() if value is not None})
        try:
            settings = cls(**values)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc, flag_style=True)) from None
        outputs = settings.outputs.expanduser().resolve() if settings.outputs else None
        return settings.model_copy(update={"home": settings.home.expanduser().resolve(), "outputs": outputs})


def describe_validation_error(exc: ValidationError, *, flag_style: bool = False) -> str:
    """One line per problem: ``name: what is wrong (got VALUE)`` — pydantic's own text minus its noise."""
    parts = []
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"]) or "value"
        if flag_style:
            name = f"{ENV_PREFIX}{name.upper()} / --{name.replace('_', '-')}"
        message = str(error["msg"]).removeprefix("Value error, ")
        given = error.get("input")
        secret = error["loc"][:1] in SECRET_FIELDS
        shown = "" if secret or isinstance(given, dict) or "(got" in message else f" (got {_short(given)})"
        parts.append(f"{name}: {message}{shown}")
    return "; ".join(parts)


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_loopback(host: str) -> bool:
    """Only literal loopback addresses and ``localhost``: a DNS name such as ``127.x.example`` can resolve
    anywhere, so it counts as reachable from other machines."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_http_exposure(token: str | None, host: str) -> None:
    """Off loopback anyone on the network could use this GPU and read the history: require a token."""
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"--host {host} is reachable from other machines; set DGX_MUSIC_TOKEN (16+ random characters, "
            "e.g. `openssl rand -hex 32`) so every request must carry it, or bind --host 127.0.0.1"
        )
