"""Typer options shared by several commands (import them at module level: annotations are evaluated by name)."""

from typing import Annotated, Optional

import typer

TargetOpt = Annotated[
    Optional[str],
    typer.Option(
        "--target",
        "-t",
        help="ultralytics package folder (holding nn/tasks.py) or a folder containing ultralytics/. "
        "Default: the ultralytics this Python imports.",
        show_default=False,
    ),
]
