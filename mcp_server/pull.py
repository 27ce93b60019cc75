"""`dgx-music pull MODEL`: fetch a checkpoint into the Hugging Face cache, then prove it loads offline.

The service runs with HF_HUB_OFFLINE=1, so a model is only usable once every file it needs is in the cache.
The check after the download loads the model the way the service does, with the hub switched off.

``cache_only`` is the service's one quick look before it loads a model: cached weights load with the hub
switched off, and an uncached model on a machine that cannot reach the hub fails at once with what to run,
instead of after transformers' half a minute of retries.
"""

from __future__ import annotations

import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from tqdm.std import tqdm

from engine import EngineError, ModelNotAvailableError, MusicEngine, demucs
from engine.models import looks_like_path
from mcp_server import families
from mcp_server.config import Settings

log = logging.getLogger(__name__)

HUB_CHECK_SECONDS = 3.0  # one connection attempt to the hub; a reachable hub answers far sooner
HUB_CHECK_REMEMBERED_SECONDS = 60.0  # a job claimed right after start-up does not wait for a second check
_hub_checks: dict[str, tuple[float, bool]] = {}  # endpoint -> (when checked, reachable)

# Other weight formats are skipped when a repo also has safetensors (musicgen repos ship both: 2x download).
NON_SAFETENSORS_WEIGHTS = ["*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.msgpack", "*.onnx", "*.ot"]


class PullError(EngineError):
    """The model could not be fetched or does not load; the message says why and what to do next.

    An ``EngineError`` so every front end that shows engine errors as one line shows this one too.
    """


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it, but looked up now rather than at import time."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def cached_snapshot(model_id: str) -> Path | None:
    """The cached snapshot directory of a hub model, without touching the network; None when not cached."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(model_id, local_files_only=True))
    except LocalEntryNotFoundError:
        return None


def hub_reachable(endpoint: str | None = None) -> bool:
    """Whether the Hugging Face endpoint (HF_ENDPOINT) answers within a few seconds; remembered a minute."""
    from huggingface_hub import constants

    url = endpoint or constants.ENDPOINT
    checked = _hub_checks.get(url)
    if checked is not None and time.monotonic() - checked[0] < HUB_CHECK_REMEMBERED_SECONDS:
        return checked[1]
    try:  # the standard library: the hub client's own HTTP stack differs between huggingface_hub releases
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=HUB_CHECK_SECONDS).close()
        reachable = True
    except urllib.error.HTTPError:  # any HTTP answer will do (proxies come from the environment)
        reachable = True
    except (OSError, ValueError) as error:  # refused, timed out, no DNS; ValueError: a malformed HF_ENDPOINT
        log.info("%s is not reachable (%s): models load from the local cache only", url, type(error).__name__)
        reachable = False
    _hub_checks[url] = (time.monotonic(), reachable)
    return reachable


def cache_only(model_id: str) -> bool:
    """Whether to load ``model_id`` without the hub (True), or let the load download it (False).

    Raises ``ModelNotAvailableError`` naming ``dgx-music pull`` when the model is in no cache and the hub is
    out of reach (or switched off), so the job fails in seconds with the fix.
    """
    if looks_like_path(model_id):
        return True
    if cached_snapshot(model_id) is not None:  # updates come through `dgx-music pull`, never at serve time
        return True
    if not hub_offline() and hub_reachable():
        return False
    from huggingface_hub import constants

    reason = "HF_HUB_OFFLINE is set" if hub_offline() else f"{constants.ENDPOINT} cannot be reached"
    raise ModelNotAvailableError(
        f"model {model_id!r} is not in the Hugging Face cache {constants.HF_HUB_CACHE} and {reason}; "
        f"run `dgx-music pull {model_id}` on a machine that reaches huggingface.co (with this HF_HOME), "
        "or set HF_HOME to a cache that has it"
    )


def weight_files(directory: Path) -> list[Path]:
    """The checkpoint's weight files in a snapshot or local directory (safetensors, else PyTorch pickles)."""
    return sorted(directory.glob("*.safetensors")) or sorted(directory.glob("pytorch_model*.bin"))


def rich_tqdm(progress: Progress) -> type[tqdm]:
    """A tqdm class whose bars are tasks of ``progress``, for huggingface_hub's ``tqdm_class`` hook.

    huggingface_hub creates its byte bars with total=0 and grows ``total`` as file sizes become known, so
    every refresh forwards both the count and the total.
    """

    class RichTqdm(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)  # huggingface_hub's own tqdm takes a name; tqdm proper rejects it
            kwargs["gui"] = True  # tqdm draws nothing itself; display() hands the state to rich
            super().__init__(*args, **kwargs)
            self.task = progress.add_task(self.desc or "", total=self.total or None)

        def display(self, *args: Any, **kwargs: Any) -> None:
            if hasattr(self, "task"):
                progress.update(self.task, completed=self.n, total=self.total or None, description=self.desc)

        def close(self) -> None:
            self.display()
            super().close()

    return RichTqdm


def pull_model(model: str, console: Console, *, skip_if_offline: bool = False) -> None:
    """Fetch ``model`` (alias, hub id or local directory) into the HF cache, then check it loads offline.

    ``skip_if_offline``: when the hub cannot be reached, say so and return instead of failing (the README's
    first command pulls the default model on machines that can, and starts the server either way).
    """
    family = families.family_of(families.resolve_name(model))
    separator = demucs.PUBLISHED.get(model.strip().lower())
    # a separator is fetched by its repository; ACE-Step and MusicGen aliases name theirs
    model_id = separator.repo_id if separator is not None else families.resolve_name(model)
    if looks_like_path(model_id):
        directory = Path(model_id).expanduser().resolve()
        if family != "musicgen":
            console.print(f"{directory} is a local {family} checkpoint: nothing to download.")
        elif not (directory / "config.json").is_file() or not weight_files(directory):
            raise PullError(
                f"{directory} is not a checkpoint directory (it needs config.json and model.safetensors); "
                "give a hub id such as facebook/musicgen-small, or a directory saved with save_pretrained"
            )
        console.print(f"{directory} is a local checkpoint: nothing to download.")
    elif hub_offline():
        snapshot = cached_snapshot(model_id)
        if snapshot is None:
            raise PullError(
                f"cannot download {model_id}: HF_HUB_OFFLINE=1 is set; run `HF_HUB_OFFLINE=0 dgx-music pull "
                f"{model_id}` on a machine that reaches huggingface.co, or copy a Hugging Face cache that "
                "holds it to $HF_HOME/hub"
            )
        console.print(f"{model_id} is already cached at {snapshot} (offline: not checked for updates).")
    elif not hub_reachable():
        from huggingface_hub import constants

        snapshot = cached_snapshot(model_id)
        if snapshot is not None:
            console.print(f"{model_id} is cached at {snapshot}; {constants.ENDPOINT} is out of reach.")
        elif skip_if_offline:
            console.print(
                f"Skipped: {constants.ENDPOINT} cannot be reached, so {model_id} was not downloaded. The "
                f"server starts without it; run `dgx-music pull {model_id}` once this machine is online."
            )
            return
        else:
            raise PullError(
                f"cannot download {model_id}: {constants.ENDPOINT} does not answer (checked for "
                f"{HUB_CHECK_SECONDS:g} s); check the network, HTTPS_PROXY or HF_ENDPOINT, then pull again"
            )
    else:
        snapshot = _download(model_id, console)
        console.print(f"{model_id} is in the cache at {snapshot}.")
    name = separator.name if separator is not None else model_id
    if family == "musicgen":
        _verify_offline_load(model_id, console)
    else:
        _verify_family_load(name, family, console)
    console.print(f"licence of {name}: {families.licence_of(name)}")


def _verify_family_load(model_id: str, family: str, console: Console) -> None:
    """ACE-Step and Demucs: load once from the cache alone, on the CPU, as the worker will."""
    settings = Settings.load({}, device="cpu", dtype="bfloat16" if family == "acestep" else "float32")
    with console.status(f"Checking that {model_id} loads offline..."), _hub_switched_off():
        try:
            loaded = families.load(model_id, settings)
        except EngineError as error:
            raise PullError(f"{model_id} was fetched but does not load: {error}") from None
    loaded.core.close()
    console.print(
        f"[green]OK[/] {model_id} loads offline in {loaded.load_seconds:.1f} s: it can serve with "
        "HF_HUB_OFFLINE=1."
    )


def _download(model_id: str, console: Console) -> Path:
    from huggingface_hub import HfApi, snapshot_download

    # HTTPError is the HTTP client's error base (httpx's, or httpx2's in huggingface_hub 2.x) as the hub
    # library imports it: connection failures raise it directly, and the hub's own HTTP errors subclass it.
    from huggingface_hub.errors import GatedRepoError, HTTPError, RepositoryNotFoundError

    try:
        files = HfApi().list_repo_files(model_id)
        has_safetensors = any(name.endswith(".safetensors") for name in files)
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        with progress:
            path = snapshot_download(
                model_id,
                ignore_patterns=NON_SAFETENSORS_WEIGHTS if has_safetensors else None,
                tqdm_class=rich_tqdm(progress),
            )
    except GatedRepoError:
        raise PullError(
            f"{model_id} is gated: accept its licence on huggingface.co, run `hf auth login`, then pull again"
        ) from None
    except RepositoryNotFoundError:
        raise PullError(
            f"no model {model_id!r} on huggingface.co; use a MusicGen id such as facebook/musicgen-small "
            "or an alias (small, medium, large, melody, stereo-small, ...)"
        ) from None
    except (HTTPError, OSError) as error:  # OSError: disk full, cache not writable; partial files resume
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise PullError(
            f"downloading {model_id} failed ({reason}); check the network, HTTPS_PROXY or HF_ENDPOINT, "
            "then run the same pull again: it resumes where it stopped"
        ) from None
    return Path(path)


@contextmanager
def _hub_switched_off() -> Iterator[None]:
    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["HF_HUB_OFFLINE"]
        else:
            os.environ["HF_HUB_OFFLINE"] = previous


def _verify_offline_load(model_id: str, console: Console) -> None:
    # On the CPU so a pull never competes with a running service for the GPU; bf16 halves the RAM it needs.
    with console.status(f"Checking that {model_id} loads offline..."), _hub_switched_off():
        try:
            engine = MusicEngine.load(model_id, device="cpu", dtype="bfloat16")
        except EngineError as error:
            raise PullError(f"{model_id} was fetched but does not load: {error}") from None
    console.print(
        f"[green]OK[/] {model_id} loads offline in {engine.load_seconds:.1f} s "
        f"({engine.sample_rate} Hz, {engine.audio_channels} channel(s)): it can serve with HF_HUB_OFFLINE=1."
    )
