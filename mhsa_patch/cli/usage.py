"""Usage errors and help placeholders: the click classes the app and its commands are built with.

One style for every usage error, whether click finds it (a missing option, ``--heads abc``, an unknown command) or a
command does (``--scale q``, ``--at P7``): one ``ERROR ❌ usage: ...`` line on stderr and exit 2, never typer's boxed
panel (which wraps a one-line message over several lines and a terminal's width).
"""

from __future__ import annotations

import typer.core
from typer.core import TyperCommand, TyperGroup

# typer 0.28 carries its own copy of click (typer._click), whose exceptions and types are not click's; older
# releases use click itself. Take whichever the commands are built with.
click = getattr(typer.core, "_click", None) or typer.core.click

USAGE_EXIT = 2


def usage_line(e: click.exceptions.UsageError) -> str:
    """click's message in one line, pointing at the command's help: ``missing argument 'MODEL' (see ... --help)``."""
    msg = " ".join(e.format_message().split()).rstrip(".")
    msg = msg[:1].lower() + msg[1:]
    ctx = getattr(e, "ctx", None)
    return f"{msg} (see '{ctx.command_path} --help')" if ctx is not None else msg


def _one_line(e: click.exceptions.UsageError):
    from mhsa_patch.cli.console import fail

    if type(e).__name__ == "NoArgsIsHelpError":  # `mhsa-patch` alone: the help, as click shows it
        raise e
    fail(f"usage: {usage_line(e)}", code=USAGE_EXIT)


class Group(TyperGroup):
    """The app: click's usage errors, at any level, become one line and exit 2."""

    def make_context(self, *args, **kwargs):
        try:
            return super().make_context(*args, **kwargs)
        except click.exceptions.UsageError as e:
            _one_line(e)

    def invoke(self, ctx):
        # the subcommand's parse errors and a callback's BadParameter arrive here
        try:
            return super().invoke(ctx)
        except click.exceptions.UsageError as e:
            _one_line(e)


class Command(TyperCommand):
    """A command whose usage line shows ``MODEL``, not typer's ``{MODEL}`` for a required argument."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        return [p[1:-1] if p.startswith("{") and p.endswith("}") else p for p in super().collect_usage_pieces(ctx)]


class Text(click.types.ParamType):
    """A plain string argument whose help row shows its name (``MODEL``) alone, without typer's ``<str>``."""

    name = "text"

    def get_metavar(self, param, ctx=None) -> str:  # noqa: ARG002 - click's signature
        return ""

    def convert(self, value, param, ctx):
        return str(value)
