"""Random-weight HTDemucs separators written on disk in the layout demucs 4.1 loads (for tests and bench).

The layout is that of the published Hugging Face repositories: `<name>.yaml` lists the models of the bag,
and each model is `<sig>.safetensors` whose metadata holds the class and its init arguments as JSON
(fractions encoded as demucs.hf decodes them). Loading goes through demucs.hf.load_safetensors_model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, cast

import torch
import yaml
from demucs.htdemucs import HTDemucs
from safetensors.torch import save_file

from engine.demucs.names import FOUR_STEMS

# ~0.36 M parameters; separates 10 s in about a second on one core. depth stays 4: at depth 2 the
# cross-transformer sees ~16x more time steps and gets slower, not faster.
TINY = {"channels": 8, "depth": 4, "t_layers": 1, "t_heads": 2, "dconv_comp": 2, "segment": 4}
# The published htdemucs / htdemucs_ft models' init arguments (their safetensors metadata); the rest are
# HTDemucs defaults.
HTDEMUCS = {
    "channels": 48, "growth": 2, "nfft": 4096, "depth": 4, "multi_freqs": [], "dconv_mode": 3,
    "dconv_depth": 2, "dconv_comp": 8, "dconv_init": 1e-3, "bottom_channels": 512, "t_layers": 5,
    "t_heads": 8, "t_hidden_scale": 4.0, "t_dropout": 0.02, "segment": Fraction(39, 5),
}  # fmt: skip
ARCHITECTURES: dict[str, dict[str, Any]] = {"tiny": TINY, "htdemucs": HTDEMUCS}


def _encode(value: Any) -> Any:
    if isinstance(value, Fraction):
        return {"_type": "fraction", "numerator": value.numerator, "denominator": value.denominator}
    if isinstance(value, (list, tuple)):
        return [_encode(item) for item in value]
    return value


def save_model(model: HTDemucs, directory: Path) -> str:
    """Write one model as <sig>.safetensors (sig: the first 8 hex digits of its weights' sha256)."""
    init: tuple[list[Any], dict[str, Any]] = cast(Any, model)._init_args_kwargs  # demucs' capture_init
    args, kwargs = init
    state = {key: tensor.detach().contiguous().cpu() for key, tensor in model.state_dict().items()}
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].numpy().tobytes())
    sig = digest.hexdigest()[:8]
    metadata = {
        "klass": f"{HTDemucs.__module__}.{HTDemucs.__name__}",
        "args": json.dumps(_encode(list(args))),
        "kwargs": json.dumps({key: _encode(value) for key, value in kwargs.items()}),
    }
    save_file(state, str(directory / f"{sig}.safetensors"), metadata=metadata)
    return sig


def build_random_separator(
    directory: Path,
    *,
    name: str = "htdemucs",
    sources: Sequence[str] = FOUR_STEMS,
    architecture: Literal["tiny", "htdemucs"] = "tiny",
    models: int = 1,
    seed: int = 0,
) -> Path:
    """A separator with random weights in `directory`. `models` > 1 makes a bag: with one model per source,
    each model is that source's specialist (htdemucs_ft's weights); otherwise the models are averaged.
    Returns the directory (pass it as the `model` argument)."""
    directory.mkdir(parents=True, exist_ok=True)
    signatures = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(models):
            signatures.append(
                save_model(HTDemucs(sources=list(sources), **ARCHITECTURES[architecture]), directory)
            )
    bag: dict[str, Any] = {"models": signatures}
    if models == len(sources):  # one specialist per source, as htdemucs_ft; otherwise all weigh alike
        bag["weights"] = [[1.0 if k == m else 0.0 for k in range(models)] for m in range(models)]
    (directory / f"{name}.yaml").write_text(yaml.safe_dump(bag), encoding="utf-8")
    return directory
