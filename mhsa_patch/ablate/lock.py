"""The experiment's lock and each run's: one ``ablate`` per experiment folder, one trainer per run.

A lock is a file (``<dir>/ablate.lock``; ``<dir>/locks/<run>.lock`` for a run, taken by the run's own child) that
its holder keeps ``flock``-ed and that names the holder: host, PID, since when, and a run's device. The kernel lets
go of a ``flock`` when its process dies, and NFS v4 carries it across machines; the file's modification time is the
holder's heartbeat (touched every :data:`HEARTBEAT` seconds) for the filesystems where it does not (a
``local_lock=flock`` mount, a filesystem without locks). So:

* the lock is free, and the file names nobody: taken;
* it is held (``flock`` refused), or the file names a live holder on this host, or one on another host whose
  heartbeat is younger than :data:`STALE_AFTER`: :class:`Busy`, naming the holder;
* the file names a holder that is dead (this host: its PID is gone; another host: no heartbeat for
  :data:`STALE_AFTER`): taken over, with a warning that names it.

Releasing empties the file (and keeps it: removing a ``flock``-ed file races with a process that opened it just
before). :func:`holder` reads a lock without taking it: ``ablate --status`` never locks and never writes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from mhsa_patch.errors import PatchError

HEARTBEAT = 20.0  # seconds between two touches of a held lock file
STALE_AFTER = 120.0  # a lock of another host that was not touched for this long belongs to a dead holder
LIMIT = 4096  # a lock file is one short JSON line; anything longer is not one

try:
    import fcntl
except ImportError:  # Windows: the holder file alone decides
    fcntl = None  # type: ignore[assignment]


def host() -> str:
    return socket.gethostname() or "localhost"


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (a zombie counts as gone: it holds nothing any more)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def holder(path: Path) -> dict | None:
    """Who the lock file at ``path`` names (``host``, ``pid``, ``since``, ``device``, ``age_s`` since its last
    heartbeat, ``alive``: True, False, or None where it cannot be told), or None when it names nobody. Read only:
    no lock is taken, nothing is written; a link or an unreadable file names nobody."""
    try:
        if path.is_symlink() or not path.is_file():
            return None
        with open(path, "rb") as f:
            raw = f.read(LIMIT + 1)
        age = time.time() - path.stat().st_mtime
    except OSError:
        return None
    info = _parse(raw)
    if info is None:
        return None
    info["age_s"] = max(0.0, age)
    info["alive"] = _alive(info, age)
    return info


def _parse(raw: bytes) -> dict | None:
    if not raw.strip() or len(raw) > LIMIT:
        return None
    try:
        info = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(info, dict) or not isinstance(info.get("pid"), int) or not isinstance(info.get("host"), str):
        return None
    return {k: v for k, v in info.items() if isinstance(v, (str, int, float)) or v is None}


def _alive(info: dict, age: float) -> bool | None:
    if info["host"] == host() and os.name == "posix":  # (os.kill on Windows would end the process, not probe it)
        return pid_alive(info["pid"])
    return age < STALE_AFTER


def describe(info: dict) -> str:
    """``host gpu01 (PID 4242, since 2024-05-01 10:00)``, and the device of a run's lock."""
    since = info.get("since")
    when = time.strftime(", since %Y-%m-%d %H:%M", time.localtime(since)) if isinstance(since, (int, float)) else ""
    device = f" on {info['device']}" if info.get("device") else ""
    return f"host {info['host']} (PID {info['pid']}{when}){device}"


class Busy(PatchError):
    """The lock is held by a live holder (``info``: what :func:`holder` gives, or None when the file says nothing)."""

    def __init__(self, path: Path, info: dict | None):
        self.path, self.info = path, info
        who = describe(info) if info else "another process (its lock file names nobody yet)"
        super().__init__(f"{path} is held by {who}")


@dataclass
class Lock:
    """A held lock: the open file (``flock``-ed where the filesystem can), the heartbeat thread, and the warning
    about a dead holder it took over from (``took_over``), if any."""

    path: Path
    fd: int
    info: dict
    took_over: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _beat: threading.Thread | None = None

    def release(self) -> None:
        if self.fd < 0:
            return
        self._stop.set()
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)  # names nobody; the flock goes with the descriptor
            os.fsync(self.fd)
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            with contextlib.suppress(OSError):
                os.utime(self.fd if os.utime in os.supports_fd else self.path)


def acquire(path: Path, **info) -> Lock:
    """Take the lock at ``path`` for this process (``info``: what else the file names, e.g. ``device``); raises
    :class:`Busy` when a live holder has it, :class:`PatchError` (one line) when the file cannot be opened."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as e:
        raise PatchError(f"{path}: cannot open the lock file ({e.strerror or e})") from None
    try:
        kernel = _flock(fd)
        if kernel is False:
            raise Busy(path, holder(path))
        os.lseek(fd, 0, os.SEEK_SET)
        previous = _parse(os.read(fd, LIMIT + 1))
        took_over = None
        if previous is not None and (previous["host"], previous["pid"]) != (host(), os.getpid()):
            age = max(0.0, time.time() - os.fstat(fd).st_mtime)
            alive = _alive(previous, age)
            if previous["host"] == host() and kernel and alive and os.name == "posix":
                alive = False  # we hold the flock its holder would hold: that PID is another process now
            if alive:
                raise Busy(path, dict(previous, age_s=age, alive=True))
            here = previous["host"] == host() and os.name == "posix"
            why = "no longer running" if here else f"no heartbeat for {age / 60:.0f} min"
            took_over = f"took over the lock of {describe(previous)}: {why}"
        mine = {"host": host(), "pid": os.getpid(), "since": round(time.time(), 3), **info}
        data = (json.dumps(mine) + "\n").encode("utf-8")
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        raise
    lock = Lock(path, fd, mine, took_over)
    lock._beat = threading.Thread(target=lock._heartbeat, name=f"heartbeat {path.name}", daemon=True)
    lock._beat.start()
    return lock


def _flock(fd: int) -> bool | None:
    """True: the kernel lock is ours; False: someone holds it; None: this filesystem (or system) has none."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        return None  # ENOLCK, EOPNOTSUPP, ...: the holder file decides alone
    return True
