"""Crash-safe writes: a lock, a journal, atomic file replacement.

While the patch is applied, the package holds one file of the tool's, ``.mhsa-patch-journal.json``, with the
original text and the hashes of each patched file. Every change of state goes through it:

apply:  journal(state=applying, originals) -> replace files -> journal(state=applied)
revert: journal(state=reverting)           -> replace files -> delete journal

Each file replacement and each journal write is atomic (temporary file in the same folder, fsync, ``os.replace``).
A process killed at any instant therefore leaves either no journal (files untouched or fully reverted), a journal
``applied`` (fully patched), or a journal in ``applying``/``reverting``: ``recover`` then rolls the install back to
the originals, and every command runs it first. Concurrent runs serialize on an ``flock`` of the package folder.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Optional

from mhsa_patch.errors import PatchError
from mhsa_patch.patching.atomic import fsync_dir, write_atomic

JOURNAL = ".mhsa-patch-journal.json"


class Journal:
    """The journal file of one package folder."""

    def __init__(self, package: Path):
        self.path = package / JOURNAL

    def read(self) -> Optional[dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise PatchError(f"{self.path}: unreadable journal ({e}); delete it after checking the files") from None
        if not isinstance(data, dict) or data.get("tool") != "mhsa-patch":
            raise PatchError(f"{self.path}: not an mhsa-patch journal")
        return data

    def write(self, data: dict[str, Any]) -> None:
        write_atomic(self.path, (json.dumps({"tool": "mhsa-patch", **data}, indent=1) + "\n").encode("utf-8"))

    def delete(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        fsync_dir(self.path.parent)
