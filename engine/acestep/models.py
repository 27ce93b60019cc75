"""Names and licences of the published ACE-Step 1.5 checkpoints (cheap to import: no torch, no diffusers).

``doctor``, ``pull`` and the README's model table read the licence facts from here, so that what a user is
told about a model and what the engine loads come from one table.
"""

from __future__ import annotations

from dataclasses import dataclass

TURBO = "ACE-Step/acestep-v15-xl-turbo-diffusers"  # guidance-distilled: 8 steps, no CFG
BASE = "ACE-Step/acestep-v15-xl-base-diffusers"  # CFG, more steps

ALIASES: dict[str, str] = {
    "ace-step": TURBO,
    "ace-step-turbo": TURBO,
    "acestep": TURBO,
    "ace-step-base": BASE,
    "acestep-base": BASE,
}


@dataclass(frozen=True)
class Licence:
    name: str  # SPDX identifier where there is one
    commercial_use: bool | None  # None: not known for this checkpoint
    url: str  # where the terms are stated

    def __str__(self) -> str:
        return self.name


_ACE_STEP_LICENCE = Licence(
    name="MIT",
    commercial_use=True,
    url="https://huggingface.co/ACE-Step/Ace-Step1.5",
)


@dataclass(frozen=True)
class Checkpoint:
    model_id: str
    pull_name: str  # what ``dgx-music pull`` takes for it
    licence: Licence
    summary: str  # one line for the README's model table and ``doctor``


PUBLISHED: dict[str, Checkpoint] = {
    TURBO: Checkpoint(
        TURBO,
        "ace-step",
        _ACE_STEP_LICENCE,
        "ACE-Step 1.5 XL turbo: songs with lyrics up to 10 min, 48 kHz stereo, 8 steps; generate, edit",
    ),
    BASE: Checkpoint(
        BASE,
        "ace-step-base",
        _ACE_STEP_LICENCE,
        "ACE-Step 1.5 XL base: as turbo with classifier-free guidance (guidance_scale) and more steps",
    ),
}

UNKNOWN_LICENCE = Licence(name="see the checkpoint's model card", commercial_use=None, url="")


def resolve_model_id(name: str) -> str:
    """Map an alias to its hub id; hub ids and paths pass through unchanged (aliases are case-insensitive)."""
    stripped = name.strip()
    return ALIASES.get(stripped.lower(), stripped)


def is_alias(name: str) -> bool:
    return name.strip().lower() in ALIASES


def licence_of(model_id: str) -> Licence:
    """The licence of a published checkpoint; for other ids and local directories, a pointer to their card."""
    checkpoint = PUBLISHED.get(resolve_model_id(model_id))
    return checkpoint.licence if checkpoint else UNKNOWN_LICENCE


def pull_command(model_id: str) -> str:
    """The ``dgx-music pull`` command that fetches ``model_id`` (the turbo alias for anything unpublished)."""
    checkpoint = PUBLISHED.get(resolve_model_id(model_id))
    return f"dgx-music pull {checkpoint.pull_name if checkpoint else 'ace-step'}"
