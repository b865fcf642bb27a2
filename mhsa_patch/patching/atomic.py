"""Crash-safe file access confined to one package folder: atomic replacement, bounded no-follow reads, the lock.

The package folder is untrusted input (a fork cloned from anywhere can ship anything in it), so every read and write
of a file in it goes through ``confine``: the file's folder must resolve (symbolic links followed) inside the package
folder, and the file itself must not be a symbolic link. The final component is opened with ``O_NOFOLLOW`` where the
system has it; writes never open the destination at all (a new temporary file, then ``os.replace``, which replaces
a directory entry and follows no link).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

from mhsa_patch.errors import PatchError

TMP_PREFIX = ".mhsa-patch-"
TMP_SUFFIX = ".tmp"

# How long a run waits for another one working on the same package before giving up (seconds). An apply or revert
# takes about a second; a long wait means a stuck process. MHSA_PATCH_LOCK_TIMEOUT overrides it (a negative value
# waits forever).
LOCK_TIMEOUT = 120.0

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a planted FIFO must not block the open; no effect on regular files
_O_BINARY = getattr(os, "O_BINARY", 0)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _new_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _key(path: Path | str) -> str:
    return os.path.normcase(os.path.realpath(path))


def _inside(root: Path, path: Path | str) -> bool:
    """Whether ``path``, resolved, is ``root`` (resolved) or below it."""
    root_key, key = _key(root), _key(path)
    return key == root_key or key.startswith(root_key.rstrip(os.sep) + os.sep)


class Unsafe(PatchError):
    """A file the tool will not read or write (a link, a folder resolving outside the package, a huge file)."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")  # apply and revert add that nothing was changed; status never writes


def confine(root: Path, path: Path) -> Path:
    """``path`` if reading or writing it stays inside the package folder ``root``; else ``Unsafe`` (one line).

    Its folder must resolve inside ``root`` (a symlinked ``nn/`` pointing elsewhere is refused) and the file itself
    must not be a symbolic link, wherever it points (``os.replace`` would swap the link for a file, and a read would
    follow it).
    """
    if not _inside(root, path.parent):
        raise Unsafe(
            path,
            f"its folder resolves to {os.path.realpath(path.parent)}, outside the package {root} (a symbolic link); "
            "mhsa-patch reads and writes only inside the package",
        )
    if os.path.islink(path):
        try:
            where = f" to {os.readlink(path)}"
        except OSError:
            where = ""
        raise Unsafe(path, f"a symbolic link{where}; mhsa-patch reads and writes only regular files, never through links")
    return path


def read_confined(root: Path, path: Path, limit: int) -> bytes:
    """The bytes of the regular file ``path`` inside ``root``, opened without following a link, at most ``limit``.

    Raises ``FileNotFoundError`` if it is missing, ``Unsafe`` (one line) for a link, a non-regular file or a file
    over ``limit`` bytes (at most ``limit + 1`` bytes are ever read), ``OSError`` for the rest.
    """
    confine(root, path)
    try:
        fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_BINARY)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EMLINK) and os.path.islink(path):  # swapped for a link since confine
            raise Unsafe(path, "a symbolic link; mhsa-patch reads and writes only regular files, never through links") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Unsafe(path, "not a regular file")
        if st.st_size > limit:
            raise Unsafe(path, f"{st.st_size} bytes, over the {_size(limit)} limit")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise Unsafe(path, f"over the {_size(limit)} limit")
    return data


def _size(n: int) -> str:
    return f"{n // 2**20} MiB" if n % 2**20 == 0 else f"{n} bytes"


def write_atomic(path: Path, data: bytes, *, exclusive: bool = False, root: Optional[Path] = None) -> None:
    """Replace ``path`` by ``data`` in one step, keeping its permission bits (a new file gets the umask's).

    With ``exclusive``, raise ``FileExistsError`` instead if ``path`` appeared meanwhile. With ``root``, the write
    must stay inside that folder (see ``confine``): a ``PatchError`` otherwise, before anything is created.
    """
    if root is not None:
        confine(root, path)
    try:
        st = os.lstat(path)
        mode = st.st_mode & 0o7777 if stat.S_ISREG(st.st_mode) else _new_file_mode()
    except FileNotFoundError:
        mode = _new_file_mode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TMP_PREFIX + path.name + ".", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if exclusive and os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "exists", str(path))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def copy_atomic(src: Path, dst: Path) -> None:
    """``dst`` becomes a copy of ``src`` in one step, as :func:`write_atomic` writes (temporary file, ``fsync``,
    rename, ``fsync`` of the folder), streamed: a checkpoint is not read into memory whole."""
    import shutil

    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=TMP_PREFIX + dst.name + ".", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f, open(src, "rb") as s:
            shutil.copyfileobj(s, f, 1 << 20)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _new_file_mode())
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(dst.parent)


def fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_stale_temporaries(root: Path, folders: list[Path]) -> None:
    """Temporary files left by a process killed between mkstemp and os.replace (regular files, inside ``root``)."""
    for folder in folders:
        if not _inside(root, folder):
            continue
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder):
                if (
                    entry.name.startswith(TMP_PREFIX)
                    and entry.name.endswith(TMP_SUFFIX)
                    and entry.is_file(follow_symlinks=False)
                ):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)


# ----------------------------------------------------------------------------------------------------------------------
# The lock
# ----------------------------------------------------------------------------------------------------------------------


def _lock_folders() -> Iterator[Path]:
    """Where lock files may go: ``MHSA_PATCH_LOCK_DIR`` if set (absolute), the user's cache folder, else a per-user
    folder in the temporary folder."""
    chosen = os.environ.get("MHSA_PATCH_LOCK_DIR", "")
    if os.path.isabs(chosen):
        yield Path(chosen)
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA")
        if base:
            yield Path(base) / "mhsa-patch" / "locks"
    else:
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        if os.path.isabs(xdg):
            yield Path(xdg) / "mhsa-patch" / "locks"
        with contextlib.suppress(RuntimeError, KeyError):
            home = Path.home()
            yield home / ("Library/Caches" if sys.platform == "darwin" else ".cache") / "mhsa-patch" / "locks"
    user = str(os.getuid()) if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    yield Path(tempfile.gettempdir()) / f"mhsa-patch-locks-{user}"


def lock_file(package: Path) -> Path:
    """The lock file for a package folder, named by the hash of its resolved path.

    Not in the package: filelock needs a file (``locked`` removes it again, see there), and ``revert`` must leave the
    package byte-identical to the stock one, with no extra file, not even for an instant. Not in a shared folder
    such as /tmp either, where another user could plant or lock the name. The cost: two different users patching one
    shared install do not serialize (each takes their own lock); only a user who can write the package can patch it,
    and every write stays atomic.
    """
    name = sha256(_key(package).encode("utf-8", "surrogateescape"))[:32] + ".lock"
    problems = []
    for folder in _lock_folders():
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            if folder.is_dir() and os.access(folder, os.W_OK):
                return folder / name
            problems.append(f"{folder}: not writable")
        except OSError as e:
            problems.append(f"{folder}: {e.strerror or e}")
    raise PatchError(f"no folder for the lock file of {package} ({'; '.join(problems)}); nothing was changed")


def lock_timeout() -> float:
    raw = os.environ.get("MHSA_PATCH_LOCK_TIMEOUT", "")
    try:
        return float(raw) if raw.strip() else LOCK_TIMEOUT
    except ValueError:
        raise PatchError(f"MHSA_PATCH_LOCK_TIMEOUT={raw!r}: not a number of seconds") from None


def _held_inode(lock) -> Optional[tuple[int, int]]:
    """(device, inode) of the file ``lock`` holds, or None where filelock does not say (then nothing is removed)."""
    fd = getattr(getattr(lock, "_context", None), "lock_file_fd", None)
    if not isinstance(fd, int):
        return None
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _names_inode(path: Path, inode: tuple[int, int]) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == inode


_LOCK_NAME = re.compile(r"[0-9a-f]{32}\.lock")


def _prune_stale(own: Path) -> None:
    """Remove the lock files that no run holds in the folder of ``own`` (left by killed runs, or by versions of the
    tool that kept them), by the same rule as ``locked``: take the lock without waiting, check that the name still
    names the locked file, remove it while holding the lock. A file some run holds or is taking is left alone."""
    import filelock

    with contextlib.suppress(OSError):
        for entry in os.scandir(own.parent):
            if entry.name == own.name or not _LOCK_NAME.fullmatch(entry.name) or not entry.is_file(follow_symlinks=False):
                continue
            lock = filelock.FileLock(entry.path, timeout=0)
            try:
                lock.acquire()
            except (filelock.Timeout, OSError):
                continue
            try:
                inode = _held_inode(lock)
                if inode is not None and _names_inode(Path(entry.path), inode):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
            finally:
                lock.release()


@contextlib.contextmanager
def locked(package: Path) -> Iterator[None]:
    """Exclusive lock on a package folder, on every platform (``filelock``: flock on POSIX, msvcrt on Windows).

    Waits up to ``lock_timeout()`` seconds for another run, then refuses with one line. The lock goes with the
    process: a killed run never leaves it held.

    The lock file goes again when the run is done (POSIX), without the classic race of removing a flock file: a
    waiter may have opened the file before the holder removed it and then locks an inode that no longer has a name,
    while a third run creates a new file and locks that. So the holder removes the name *while it still holds the
    lock*, and every run, once it holds a lock, checks that the path still names the inode it locked; if not (it
    was removed or replaced meanwhile) it lets go and takes the lock again. filelock 3.x leaves the file and does no
    such check (recent filelock checks for a removed inode itself). On Windows filelock itself removes it after
    release where it can (a file another process has open cannot be removed there), so nothing is removed here.
    A run killed while holding the lock leaves its file; the next run removes such stale files (``_prune_stale``).
    """
    import filelock

    path = lock_file(package)
    timeout = lock_timeout()
    deadline = time.monotonic() + timeout if timeout >= 0 else None
    while True:
        left = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
        lock = filelock.FileLock(str(path), timeout=left)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise PatchError(
                f"another mhsa-patch is working on {package} (lock held, waited {timeout:g} s; lock file {path}); "
                "nothing was changed"
            ) from None
        except OSError as e:
            raise PatchError(f"{path}: cannot take the lock ({e.strerror or e}); nothing was changed") from None
        inode = _held_inode(lock) if os.name == "posix" else None  # nothing is removed on Windows: no check needed
        if inode is None or _names_inode(path, inode):
            break
        lock.release()  # the file was removed by the run before us: take the lock on the file the path names now
    if inode is not None:
        _prune_stale(path)
    try:
        yield
    finally:
        if inode is not None and _names_inode(path, inode):
            with contextlib.suppress(OSError):
                os.unlink(path)  # still holding the lock: a waiter on this inode will see it gone and retry
        lock.release()
