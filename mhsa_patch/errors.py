"""The error types the CLI turns into a single line on stderr: exit code 1, or 2 for a usage error."""


class PatchError(Exception):
    """A refusal or failure the user can act on. ``str(err)`` is one line, naming the file, path or anchor."""


class UsageError(PatchError):
    """A bad option value (``--scale q``, ``--at P7``): the command line is wrong, not the files. Exit code 2."""
