"""One line of the `dgx-music doctor` report: a check's name, its pass/warn/fail/skip status and what to do.

Shared by the groups of checks (``doctor_device``, ``doctor_model``, ``doctor_host``) and the runner
(``doctor``), with the few formatting helpers their details use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rich.console import Console
from rich.markup import escape

Status = Literal["pass", "warn", "fail", "skip"]
STYLE: dict[Status, str] = {"pass": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}
GB = 1e9


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str


def _line(console: Console, check: Check) -> None:
    label = f"[{STYLE[check.status]}]{check.status.upper():<4}[/]"
    console.print(f"{label} {check.name:<16} {escape(check.detail)}", soft_wrap=True, highlight=False)


def _size(count: float) -> str:
    return f"{count / GB:.2f} GB" if count >= 0.1 * GB else f"{count / 1e6:.1f} MB"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:300]
