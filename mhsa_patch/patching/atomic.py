"""Crash-safe file writes: atomic replacement, directory fsync, and the lock that serializes runs on one package."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

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
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
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
