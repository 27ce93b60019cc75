"""Which model family serves a model id, and how the worker loads it (MusicGen, ACE-Step 1.5, Demucs).

A model id is what a job's ``model_name`` holds: a MusicGen alias or hub id or checkpoint directory, an
ACE-Step alias or hub id or diffusers-layout directory (``model_index.json``), or a Demucs separator name or
directory (``<name>.yaml`` + ``<sig>.safetensors``). ``resolve`` also applies the operator's
``DGX_MUSIC_MODEL_PATHS`` (alias -> local directory), so a client can name a tiny or private checkpoint the
operator configured without being able to name arbitrary paths.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from engine import acestep, demucs
from engine.models import looks_like_path
from engine.models import resolve_model_id as resolve_musicgen
from mcp_server.config import Settings

if TYPE_CHECKING:
    from engine.backend import Backend

Family = Literal["musicgen", "acestep", "demucs"]
LICENCES: dict[Family, str] = {
    "musicgen": "CC-BY-NC-4.0 (weights; non-commercial)",
    "acestep": "MIT",
    "demucs": demucs.LICENSE,
}


# the optional dependencies (pyproject extras) a family needs beyond the base install: (extra, module)
EXTRAS: dict[Family, tuple[str, str]] = {"acestep": ("songs", "diffusers"), "demucs": ("stems", "demucs")}


def missing_extra(model_id: str, argument: str = "model") -> str | None:
    """Why ``model_id`` (given as ``argument``) cannot run in this install (its family's extra is not
    installed), or None."""
    import importlib.util

    family = family_of(model_id)
    if family not in EXTRAS:
        return None
    extra, module = EXTRAS[family]
    if importlib.util.find_spec(module) is not None:
        return None
    what = "ACE-Step songs" if family == "acestep" else "Demucs stems"
    return (
        f"{argument}: {model_id!r} needs the {what} dependencies, which this server was installed without: "
        f"install them with `pip install 'dgx-music[{extra}]'` (or `[all]`) in the server's environment and "
        "restart it"
    )


def resolve(model: str, settings: Settings) -> str:
    """The model id a job records: an operator-mapped directory, else the family's alias table."""
    name = model.strip()
    mapped = settings.model_directories.get(name.lower())
    if mapped is not None:
        return mapped
    if name.lower() in acestep.ALIASES:
        return acestep.resolve_model_id(name)
    if name.lower() in demucs.PUBLISHED:
        return name.lower()
    return resolve_musicgen(name)


def resolve_name(model: str) -> str:
    """``resolve`` without the operator's mappings (pull, doctor: names as published)."""
    return resolve(model, Settings.load({}))


def family_of(model_id: str) -> Family:
    """The family of a resolved model id (from its name, or the layout of its directory)."""
    if model_id.lower() in demucs.PUBLISHED:
        return "demucs"
    if model_id in acestep.PUBLISHED or model_id.lower().startswith("ace-step/"):
        return "acestep"
    path = Path(model_id).expanduser()
    if path.is_dir():
        if (path / "model_index.json").is_file():
            return "acestep"
        if any(path.glob("*.yaml")) and not (path / "config.json").is_file():
            return "demucs"
    return "musicgen"


def weights_bytes(model_id: str) -> int | None:
    """Bytes of a model's weight files on disk (a directory, or the hub cache, every component folder
    included); None when unknown. The worker's estimate of what loading it will take."""
    published = demucs.PUBLISHED.get(model_id.lower())
    repo = published.repo_id if published is not None else model_id
    path = Path(repo).expanduser()
    if looks_like_path(repo):
        return sum(weights.stat().st_size for weights in path.rglob("*.safetensors")) or None
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    for marker in ("model_index.json", "config.json", f"{published.name}.yaml" if published else ""):
        try:
            cached = try_to_load_from_cache(repo, marker) if marker else None
        except HFValidationError:  # not a hub id either: nothing to measure
            return None
        if isinstance(cached, str):
            snapshot = Path(cached).parent
            return sum(weights.stat().st_size for weights in snapshot.rglob("*.safetensors")) or None
    return None


def licence_of(model_id: str) -> str:
    family = family_of(model_id)
    if family == "acestep":
        return str(acestep.licence_of(model_id))
    return LICENCES[family]


def is_operator_model(model_id: str, settings: Settings) -> bool:
    """A local directory the operator named (DGX_MUSIC_MODEL or DGX_MUSIC_MODEL_PATHS), not a client."""
    configured = {resolve(settings.model, settings), *settings.model_directories.values()}
    return model_id in configured


@dataclass
class LoadedModel:
    """A resident backend and what the worker, telemetry and logs say about it."""

    model_id: str
    family: Family
    core: Backend[Any]
    device: str
    dtype: str
    load_seconds: float
    memory_bytes: int


def load(model_id: str, settings: Settings) -> LoadedModel:
    """The backend of ``model_id`` with the server's device, dtype, batch size and offline rule.

    Raises ``engine.EngineError`` (``ModelNotAvailableError`` naming ``dgx-music pull``) when it cannot load.
    """
    from mcp_server.pull import cache_only

    family = family_of(model_id)
    started = time.monotonic()
    if family == "musicgen":
        from engine import MusicEngine

        engine = MusicEngine.load(
            model_id,
            device=settings.device,
            dtype=settings.dtype,
            backend=settings.backend,
            max_batch=settings.max_batch,
            cuda_graphs=settings.cuda_graph,
            # fails at once, with the fix, when the weights cannot come (no hub retries for tens of s)
            local_files_only=cache_only(model_id),
            kernel_cache=settings.kernel_cache_dir,
        )
        return LoadedModel(
            model_id,
            family,
            engine.core,
            engine.device,
            engine.dtype,
            engine.load_seconds,
            engine.memory_bytes,
        )
    from engine import EngineError, ModelNotAvailableError, loading, memory

    missing = missing_extra(model_id)
    if missing is not None:
        raise EngineError(missing)
    device = loading.select_device(settings.device)
    published = demucs.PUBLISHED.get(model_id.lower())
    pull_name = acestep.pull_command(model_id) if family == "acestep" else f"dgx-music pull {model_id}"
    try:  # the hub is asked at most once, quickly; the fix names the short pull command
        offline = cache_only(published.repo_id if published is not None else model_id)
    except ModelNotAvailableError as exc:
        raise ModelNotAvailableError(
            f"{family} model {model_id!r} is not downloaded and the hub cannot be reached: run `{pull_name}` "
            f"on a machine that reaches huggingface.co (with this HF_HOME) ({str(exc).split(';')[0]})"
        ) from None
    dtype = loading.select_dtype(device, None if settings.dtype == "int8" else settings.dtype)
    core: Backend[Any]
    if family == "acestep":
        from engine.acestep import AceStepBackend

        core = AceStepBackend.load(
            model_id,
            device=device,
            dtype=dtype,
            local_files_only=offline,
            max_batch=settings.max_batch,
            free_memory=lambda: memory.free_bytes(device),
        )
    else:
        from engine.demucs.backend import DemucsBackend

        batch = min(4, settings.max_batch)
        core = DemucsBackend.load(model_id, device=device, offline=offline, max_batch=batch)
    return LoadedModel(
        model_id,
        family,
        core,
        str(device),
        str(dtype).removeprefix("torch."),
        time.monotonic() - started,
        core.memory_bytes,
    )
