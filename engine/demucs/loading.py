"""Loading a separator the way demucs 4.1 does: a bag file (<name>.yaml) naming one safetensors file per
model, from the Hugging Face cache (published names) or from a local directory in the same layout.

Nothing here reads the environment: whether the hub may be asked is the caller's `offline` argument.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from demucs.apply import BagOfModels
from demucs.hf import load_safetensors_model
from demucs.htdemucs import HTDemucs
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

from engine.demucs.errors import SeparatorError
from engine.demucs.names import DEFAULT_SEPARATOR, SeparatorLocation, resolve_separator
from engine.demucs.separator import DemucsSeparator
from engine.errors import ModelNotAvailableError


def load_bag(location: SeparatorLocation, *, offline: bool, cache_dir: Path | None = None) -> BagOfModels:
    """The models of a separator as one BagOfModels (a single model is a bag of one), in eval mode."""
    if location.directory is not None:
        directory = location.directory
        bag_file = _bag_file(directory)
        bag = _read_bag(bag_file, lambda sig: directory / f"{sig}.safetensors", location.name)
    else:
        assert location.published is not None
        fetch = _hub_fetcher(location, offline=offline, cache_dir=cache_dir)
        bag = _read_bag(
            fetch(f"{location.name}.yaml"), lambda sig: fetch(f"{sig}.safetensors"), location.name
        )
    bag.eval()
    return bag


def _bag_file(directory: Path) -> Path:
    bags = sorted(directory.glob("*.yaml"))
    if len(bags) != 1:
        found = ", ".join(p.name for p in bags) or "none"
        raise SeparatorError(
            f"model={str(directory)!r}: a separator directory holds exactly one <name>.yaml bag file "
            f"(found: {found}); point at the directory of one model"
        )
    return bags[0]


def _read_bag(bag_file: Path, model_file: Callable[[str], Path], name: str) -> BagOfModels:
    try:
        bag: dict[str, Any] = yaml.safe_load(bag_file.read_text(encoding="utf-8"))
        signatures = [str(sig) for sig in bag["models"]]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise SeparatorError(
            f"separator {name!r}: {bag_file} is not a demucs bag file with a 'models' list ({exc})"
        ) from exc
    models = []
    for sig in signatures:
        path = model_file(sig)
        if not path.is_file():
            raise ModelNotAvailableError(
                f"separator {name!r}: {bag_file.name} lists model {sig}, but {path} is missing; "
                "copy the whole model directory again"
            )
        model = load_safetensors_model(path)
        if not isinstance(model, HTDemucs):
            raise SeparatorError(
                f"separator {name!r}: {path.name} holds a {type(model).__name__}; only HTDemucs (demucs v4) "
                "models are supported"
            )
        models.append(model)
    return BagOfModels(models, bag.get("weights"), bag.get("segment"))


def _hub_fetcher(
    location: SeparatorLocation, *, offline: bool, cache_dir: Path | None
) -> Callable[[str], Path]:
    published = location.published
    assert published is not None
    pull = f"dgx-music pull {location.name}"

    def fetch(filename: str) -> Path:
        try:
            return Path(
                hf_hub_download(
                    published.repo_id,
                    filename,
                    cache_dir=str(cache_dir) if cache_dir is not None else None,
                    local_files_only=offline,
                )
            )
        except LocalEntryNotFoundError:
            why = (
                "offline, and it is not in the local cache"
                if offline
                else "it is not in the local cache and the hub could not be reached"
            )
            raise ModelNotAvailableError(
                f"separator {location.name!r} ({published.repo_id}) is unavailable: {why}; "
                f"run `{pull}` while online"
            ) from None
        except (HfHubHTTPError, OSError) as exc:
            raise ModelNotAvailableError(
                f"separator {location.name!r} ({published.repo_id}) could not be downloaded ({exc}); "
                f"check the network, or run `{pull}` while online"
            ) from None

    return fetch


def load_separator(
    model: str | Path = DEFAULT_SEPARATOR,
    *,
    device: str | torch.device | None = None,
    offline: bool = False,
    cache_dir: Path | None = None,
    max_batch: int = 4,
) -> DemucsSeparator:
    """Load a separator by published name (htdemucs, htdemucs_6s, htdemucs_ft) or local directory.

    `offline`: use only files already in the Hugging Face cache (`cache_dir`, default the hub's own), never
    the network. `device`: default CUDA when available, else the CPU.
    """
    location = resolve_separator(model)
    target = (
        torch.device(device)
        if device is not None
        else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    if target.type == "cuda" and not torch.cuda.is_available():
        raise SeparatorError(
            f"device={str(device)!r} was asked for but this torch build sees no CUDA GPU; use device 'cpu'"
        )
    bag = load_bag(location, offline=offline, cache_dir=cache_dir)
    return DemucsSeparator(bag, location.name, target, max_batch=max_batch)
