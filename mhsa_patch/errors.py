"""The one error type the CLI turns into a single line on stderr and exit code 1."""


class PatchError(Exception):
    """A refusal or failure the user can act on. ``str(err)`` is one line, naming the file, path or anchor."""
