"""A run's committed epoch as an archive, and an archive put into a run folder atomically.

A run's child (:mod:`mhsa_patch.child.train`) commits each epoch into ``weights/.resume/``: the epoch's ``last``
checkpoint (and ``best``, a second name for the same bytes when that epoch was the best), then ``state.json``, the
commit point that names them. ``results.csv`` may be one row ahead of it; the child cuts it on resume. So what a
run needs to resume elsewhere is exactly :func:`resume_files`: ``state.json``, the two checkpoints it names,
``results.csv`` and ``args.yaml``.

:func:`pack` makes an uncompressed tar of some of a run folder's files (checkpoints do not compress), the commit
file last; hard links stay links (``best`` costs nothing when it is ``last``). :func:`put` unpacks one into a
temporary folder beside the run folder, checks every member, then renames each file into place, ``state.json``
last, and only then removes the snapshot checkpoints the new state no longer names. A process killed at any
instant leaves the previous state with all its files, or the new one with all of its: never half of an epoch.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from mhsa_patch.ablate.runstate import RESUME, read_state
from mhsa_patch.errors import PatchError

STATE = f"weights/{RESUME}/state.json"  # the commit point: always placed last
TRIES = 5  # a checkpoint the child replaced between reading state.json and reading the file: read the state again


class Vanished(Exception):
    """A file named by the state was replaced by a newer epoch while being packed."""


def resume_files(run_dir: Path, *, have: Iterable[str] = ()) -> tuple[dict, list[str]] | None:
    """``(state, files)``: the committed state of ``run_dir`` and the files, relative to it, that resuming it
    needs, less the snapshot checkpoints in ``have`` (those the receiver already holds); None before the first
    committed epoch."""
    state = read_state(run_dir, check=False)  # the child checked what it committed; the receiver's child checks again
    if state is None:
        return None
    held = set(have)
    snaps = [f"weights/{RESUME}/{state[k]}" for k in ("last", "best")]
    files = [s for s in dict.fromkeys(snaps) if PurePosixPath(s).name not in held]
    files += [f for f in ("results.csv", "args.yaml") if (run_dir / f).is_file()]
    return state, [*files, STATE]


def pack(run_dir: Path, files: Iterable[str]) -> bytes:
    """An uncompressed tar of ``files`` (relative to ``run_dir``) in their order, hard links kept; ``Vanished``
    when one is gone."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in files:
            try:
                tar.add(run_dir / rel, arcname=rel, recursive=False)
            except FileNotFoundError:
                raise Vanished(rel) from None
    return buf.getvalue()


def pack_resume(run_dir: Path, *, have: Iterable[str] = ()) -> tuple[dict, bytes] | None:
    """``(state, archive)`` of the newest committed epoch of ``run_dir`` (see :func:`resume_files`), read again if
    the child commits a newer one meanwhile; None before the first committed epoch."""
    for _ in range(TRIES):
        found = resume_files(run_dir, have=have)
        if found is None:
            return None
        state, files = found
        try:
            return state, pack(run_dir, files)
        except Vanished:
            continue
    raise PatchError(f"{run_dir}: its snapshot kept changing while being read")


def pack_folder(run_dir: Path, *, skip: str = f"weights/{RESUME}") -> bytes:
    """Every regular file of a finished run's folder, but its snapshot folder (the receiver keeps its own until
    the run is recorded)."""
    files = []
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir).as_posix()
        if rel == skip or rel.startswith(skip + "/") or path.is_symlink() or not path.is_file():
            continue
        files.append(rel)
    return pack(run_dir, files)


def _check_member(m: tarfile.TarInfo, names: set[str]) -> None:
    """Only plain relative files, folders, and hard links to files of the same archive: the archive comes from
    another node, and is read as untrusted input."""
    p = PurePosixPath(m.name)
    if p.is_absolute() or ".." in p.parts or not p.parts or p.parts[0] in ("", "."):
        raise PatchError(f"an archive member {m.name!r} points outside the run folder")
    if m.islnk():
        if m.linkname not in names:
            raise PatchError(f"an archive member {m.name!r} links outside the archive")
    elif not (m.isfile() or m.isdir()):
        raise PatchError(f"an archive member {m.name!r} is not a plain file")


def _place(src: Path, dest: Path, root: Path) -> None:
    """Rename ``src`` over ``dest``, ``dest``'s folder inside ``root`` and ``dest`` no link."""
    from mhsa_patch.patching.atomic import confine

    dest.parent.mkdir(parents=True, exist_ok=True)
    confine(root, dest)
    if dest.is_dir():
        raise PatchError(f"{dest} is a folder where a file belongs")
    os.replace(src, dest)


def put(blob: bytes, run_dir: Path) -> list[str]:
    """Put the archive ``blob`` into ``run_dir`` atomically (see the module's text); the files placed."""
    if run_dir.is_symlink():
        raise PatchError(f"{run_dir} is a symbolic link; run folders are written only as plain folders")
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=run_dir.parent, prefix=f".{run_dir.name}.incoming-"))
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as tar:
            members = tar.getmembers()
            names = {m.name for m in members if m.isfile()}
            for m in members:
                _check_member(m, names)
            tar.extractall(tmp, filter="data")  # the standard library's own refusals on top of ours
        placed = sorted(
            (p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file() and not p.is_symlink()),
            key=lambda rel: (rel == STATE, rel),
        )
        run_dir.mkdir(exist_ok=True)
        for rel in placed:
            _place(tmp / rel, run_dir / rel, run_dir)
        if STATE in placed:
            _prune(run_dir)
        return placed
    except (tarfile.TarError, OSError) as e:
        raise PatchError(f"{run_dir}: a run's archive could not be put in place ({type(e).__name__}: {e})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _prune(run_dir: Path) -> None:
    """Remove the snapshot checkpoints the committed state does not name (this tool's own files, superseded)."""
    state = read_state(run_dir, check=False)
    if state is None:
        return
    keep = {state["last"], state["best"]}
    for f in (run_dir / "weights" / RESUME).glob("*.pt"):
        if f.name not in keep and not f.is_symlink():
            f.unlink(missing_ok=True)
