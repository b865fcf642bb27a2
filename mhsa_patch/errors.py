"""The error types the CLI turns into a single line on stderr: exit code 1, or 2 for a usage error."""

from __future__ import annotations

from typing import Any, Optional, Sequence

UNCHANGED = "nothing was changed"  # said by the commands that write (apply, revert), never by status


class PatchError(Exception):
    """A refusal or failure the user can act on. ``str(err)`` is one line, naming the file, path or anchor.

    ``node``: the libcst node an edit refused at, so that the file's model can say ``FILE:LINE`` (edits see trees,
    not files). ``problems``: every refusal found at once, so that nobody is led through them one run at a time.
    """

    def __init__(self, message: str = "", node: Any = None, problems: Optional[Sequence[str]] = None):
        self.node = node
        self.problems = tuple(problems) if problems else (message,)
        if problems and len(problems) > 1:
            message = f"{len(problems)} problems: " + "; ".join(f"({i}) {p}" for i, p in enumerate(problems, 1))
        elif problems:
            message = problems[0]
        super().__init__(message)


class UsageError(PatchError):
    """A bad option value (``--scale q``, ``--at P7``): the command line is wrong, not the files. Exit code 2."""
