"""Typer options shared by several commands (import them at module level: annotations are evaluated by name)."""

from __future__ import annotations

import shlex
from typing import Annotated, Optional

import typer

from mhsa_patch.cli.console import fail, header, warn
from mhsa_patch.errors import UsageError
from mhsa_patch.patching.discover import Resolved, resolve
from mhsa_patch.patching.target import Target

TargetOpt = Annotated[
    Optional[str],
    typer.Option(
        "--target",
        "-t",
        metavar="PATH",
        help="ultralytics package folder (holding nn/tasks.py) or a folder containing ultralytics/. "
        "Default: the ultralytics that 'python' started in the current folder imports.",
        show_default=False,
    ),
]

PythonOpt = Annotated[
    Optional[str],
    typer.Option(
        "--python",
        metavar="PATH",
        help="Act on the ultralytics this Python interpreter imports when started in the current folder "
        "(a conda env, a notebook kernel's venv); its children run under it too. Not with --target.",
        show_default=False,
    ),
]


def pick_target(target: Optional[str], python: Optional[str]) -> Resolved:
    """``--target`` or ``--python`` (or neither) to the copy to act on; both together are a usage error (exit 2).

    Raises :class:`PatchError` for the caller to print.
    """
    if target is not None and python is not None:
        fail(UsageError("--python and --target cannot be combined: --target names the copy, --python finds it"))
    return resolve(target, python)


def apply_command(target: Optional[str], python: Optional[str]) -> str:
    """The shortest ``apply`` that patches the copy this command acted on: the same ``--target`` / ``--python`` the
    user gave (as given: it is run from the same folder), none when the default copy was used."""
    cmd = "mhsa-patch apply"
    if target is not None:
        cmd += f" --target {shlex.quote(target)}"
    if python is not None:
        cmd += f" --python {shlex.quote(python)}"
    return cmd


def warn_shadow(res: Resolved) -> None:
    """One line when several copies are visible: which one is acted on, which one it shadows or is shadowed by."""
    if res.note:
        warn(res.note)


def open_target(target: Optional[str], python: Optional[str], *, header_line: bool = True) -> Target:
    """The copy to act on, announced: its header line (not when stdout is data: a dry run's diff, --json), then the
    shadow note. Raises :class:`PatchError` for the caller to print."""
    res = pick_target(target, python)
    if header_line:
        header(res.target)
    warn_shadow(res)
    return res.target
