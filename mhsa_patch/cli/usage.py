"""Usage errors and the usage line: the classes the app and its commands are built with.

One style for every usage error, whether click finds it (a missing option, ``--heads abc``, an unknown command) or a
command does (``--scale q``, ``--at P7``): one ``ERROR ❌ usage: ...`` line on stderr and exit 2, never typer's boxed
panel (which wraps a one-line message over several lines and a terminal's width).

Public API only, of typer and of the click classes typer exposes (its app and command classes, ``typer.BadParameter``):
the same code runs on every typer from 0.18 (the oldest that works with today's click) to the newest, which carries
its own copy of click and checks values with pydantic. The type column typer's help draws beside an argument
(``MODEL <str>``) is typer's own: typer 0.29 has no public way to hide it.
"""

from __future__ import annotations

import typer
from typer.core import TyperCommand, TyperGroup

USAGE_EXIT = 2

# The class click raises for every usage error (a missing option or argument, an unknown option or command, a bad
# value), taken from typer's public API: typer exports click's BadParameter, which click documents as a UsageError,
# and not UsageError itself. Never from typer's own copy of click (typer.core._click, private): typer 0.29 dropped its
# types module there, and reaching for it stopped the tool at import.
UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def usage_line(e: UsageError) -> str:
    """click's message in one line, pointing at the command's help: ``missing argument 'MODEL' (see ... --help)``."""
    msg = " ".join(e.format_message().split()).rstrip(".")
    msg = msg[:1].lower() + msg[1:]
    ctx = getattr(e, "ctx", None)
    return f"{msg} (see '{ctx.command_path} --help')" if ctx is not None else msg


def _one_line(e: UsageError):
    from mhsa_patch.cli.console import fail

    if type(e).__name__ == "NoArgsIsHelpError":  # `mhsa-patch` alone: the help, as click shows it
        raise e
    fail(f"usage: {usage_line(e)}", code=USAGE_EXIT)


class Group(TyperGroup):
    """The app: click's usage errors, at any level, become one line and exit 2."""

    def make_context(self, *args, **kwargs):
        try:
            return super().make_context(*args, **kwargs)
        except UsageError as e:
            _one_line(e)

    def invoke(self, ctx):
        # the subcommand's parse errors and a callback's BadParameter arrive here
        try:
            return super().invoke(ctx)
        except UsageError as e:
            _one_line(e)


class Command(TyperCommand):
    """A command whose usage line shows its arguments by their metavar: ``MODEL``, ``SRC MODEL``, ``[-- key=value ...]``,
    not typer's ``{MODEL}`` (or, from typer 0.29, ``[[-- key=value ...]]...``)."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument" and param.metavar:
                optional = not param.required and not param.metavar.startswith("[")
                pieces.append(f"[{param.metavar}]" if optional else param.metavar)
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces
