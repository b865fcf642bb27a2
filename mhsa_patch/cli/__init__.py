"""The ``mhsa-patch`` command line. It parses, prints and picks the exit code; the work happens elsewhere."""

from __future__ import annotations

from typing import Annotated

import typer

from mhsa_patch import __version__
from mhsa_patch.cli.usage import Command, Group

app = typer.Typer(
    name="mhsa-patch",
    help="Add BoTNet's multi-head self-attention (MHSA) to an installed ultralytics, exactly and reversibly.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=Group,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"mhsa-patch {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Add BoTNet's multi-head self-attention (MHSA) to an installed ultralytics, exactly and reversibly."""


def _register_commands() -> None:
    # Each command is a plain top-level function of its family's module; this is the one place that names them.
    from mhsa_patch.cli import ablate, gen_yaml, patch, verify

    for name, func in (
        ("apply", patch.apply),
        ("revert", patch.revert),
        ("status", patch.status),
        ("gen-yaml", gen_yaml.gen_yaml),
        ("check", verify.check),
        ("port-weights", verify.port_weights),
    ):
        app.command(name, cls=Command)(func)
    app.command("ablate", cls=Command, context_settings={"allow_interspersed_args": False})(ablate.ablate)


_register_commands()


def main() -> None:
    import sys

    from mhsa_patch.cli.ablate import optional_ray_address

    sys.argv[1:] = optional_ray_address(sys.argv[1:])
    app()
