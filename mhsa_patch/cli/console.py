"""Output in the style of ultralytics' own logs: results on stdout, warnings and errors on stderr, one line each."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from mhsa_patch.errors import PatchError, UsageError

# emoji=False: rich would turn a FILE:LINE such as "tasks.py:100:" into "tasks.py💯" (its ":100:" emoji code)
out = Console(highlight=False, soft_wrap=True, emoji=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)

PREFIX = "[bold blue]mhsa-patch:[/] "


def header(target) -> None:
    """The first line of a command that works on a target, like ultralytics' own ``Ultralytics 8.x 🚀 ...``."""
    from mhsa_patch import __version__

    by = f" (imported by {escape(target.python)})" if getattr(target, "python", None) else ""
    out.print(
        f"[bold blue]mhsa-patch[/] {__version__} 🚀 ultralytics {target.version} at {escape(str(target.package))}{by}"
    )


def table(renderable) -> None:
    """A table on stdout. In a log (not a terminal) rich would fold it at 80 columns, in the middle of numbers: there
    it gets the width it needs instead, up to 240 columns."""
    if out.is_terminal:
        out.print(renderable)
    else:
        Console(highlight=False, width=240).print(renderable)


def info(msg: str) -> None:
    out.print(PREFIX + msg)


def warn(msg: str) -> None:
    err.print(f"[yellow]WARNING ⚠️[/] {escape(msg)}")


def fail(msg: str | PatchError, code: int = 1) -> NoReturn:
    """Print one line on stderr and exit (1: refusal or failure; 2: a :class:`UsageError`). Never a traceback."""
    if isinstance(msg, UsageError):
        msg, code = f"usage: {msg}", 2
    err.print(f"[red]ERROR ❌[/] {escape(str(msg))}")
    raise typer.Exit(code)
