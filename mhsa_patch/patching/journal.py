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
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

from mhsa_patch.errors import PatchError

JOURNAL = ".mhsa-patch-journal.json"
TMP_PREFIX = ".mhsa-patch-"
TMP_SUFFIX = ".tmp"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _new_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_atomic(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Replace ``path`` by ``data`` in one step, keeping its permission bits (a new file gets the umask's).

    With ``exclusive``, raise ``FileExistsError`` instead if ``path`` appeared meanwhile.
    """
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = _new_file_mode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TMP_PREFIX + path.name + ".", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if exclusive and path.exists():
            raise FileExistsError(errno.EEXIST, "exists", str(path))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_stale_temporaries(folders: list[Path]) -> None:
    """Temporary files left by a process killed between mkstemp and os.replace."""
    for folder in folders:
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder):
                if entry.name.startswith(TMP_PREFIX) and entry.name.endswith(TMP_SUFFIX):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)


@contextlib.contextmanager
def locked(package: Path) -> Iterator[None]:
    """Exclusive lock on the package folder itself, so no lock file is left behind."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; atomic writes still keep every file whole
        yield
        return
    fd = os.open(package, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


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
        _fsync_dir(self.path.parent)
