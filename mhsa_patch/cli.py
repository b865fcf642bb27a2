"""The ``mhsa-patch`` command line. It parses, prints and picks the exit code; the work happens elsewhere."""

from __future__ import annotations

from typing import Annotated

import typer

from mhsa_patch import __version__

app = typer.Typer(
    name="mhsa-patch",
    help="Add BoTNet's multi-head self-attention (MHSA) to an installed ultralytics, exactly and reversibly.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

from mhsa_patch.options import TargetOpt  # noqa: E402  (re-exported for register(app, TargetOpt))


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
    # Each command family lives in its own module with a register(app) function.
    from mhsa_patch import cli_engine

    cli_engine.register(app, TargetOpt)
    for name in ("cli_yaml", "cli_train"):
        try:
            module = __import__(f"mhsa_patch.{name}", fromlist=["register"])
        except ModuleNotFoundError as e:  # a command family not written yet
            if e.name != f"mhsa_patch.{name}":
                raise
            continue
        module.register(app, TargetOpt)


_register_commands()


def main() -> None:
    app()
