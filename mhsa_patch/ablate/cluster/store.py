"""Where a run's snapshots live between tasks, and the channel from the tasks to the driver.

:class:`DriverSink` runs as a Ray actor on the driver's own node (placed there by node affinity, asking for no
CPU), so it reaches the experiment folder even where no other node does. Tasks call it:

- ``started`` when a task really begins on a node (not when it is submitted): the driver then shows the run as
  started. Each attempt of a run (Ray retries a task whose node was lost) gets a new token; only the newest
  attempt may write, so a task cut off from the cluster but still alive cannot overwrite its successor's epochs;
- ``fetch`` / ``model`` when a task starts: the newest snapshot the driver holds of its run, and its model file,
  one run at a time (never every pending run at once in the driver's memory). A run folder the driver cannot read
  is moved aside whole and rebuilt from its newest intact snapshot first, as a run's child does on one machine
  (:mod:`mhsa_patch.ablate.runstate`);
- ``put_snapshot`` after each epoch: the epoch's snapshot is put into ``<dir>/runs/<run>/`` atomically
  (:func:`mhsa_patch.ablate.cluster.snapshot.put`), and only then is the epoch reported as done;
- ``put_final`` and ``put_logs`` when the run ends, its logs also when it failed;
- ``event`` for the child's other events (resuming, validating).

The driver reads what happened with ``drain``. With ``--storage``, snapshots go to :class:`PathStore` instead, a
folder every node reaches (as Ray Tune's ``storage_path``), and the actor carries the events, the final folder and
the logs only.

The actor is a plain class: Ray's ``ray.remote`` wraps it in the backend, and the tests call it directly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from mhsa_patch.ablate import runstate
from mhsa_patch.ablate.cluster import snapshot
from mhsa_patch.errors import PatchError

_LOG_NAME = re.compile(r"[^/\\]+\.(log|args\.json)\Z")


class StaleAttempt(PatchError):
    """A task attempt that a newer attempt of the same run has replaced: it must stop writing."""


def readable_snapshot(folder: Path, run: str) -> tuple[bytes | None, str | None]:
    """``(the newest snapshot of the run folder as an archive or None, a warning or None)``. A folder the tool cannot
    read is moved aside whole and rebuilt from its newest intact snapshot first, as a run's child does on one machine
    (:mod:`mhsa_patch.ablate.runstate`): nothing is deleted, and the warning says where it went."""
    warning = None
    found = runstate.inspect(folder)
    if found.kind == "damaged":
        aside = runstate.set_aside(folder)
        state = runstate.salvage(aside, folder, run)
        then = (f"resuming from its snapshot of epoch {state['epochs_done']}" if state
                else "no intact snapshot: starting over")  # fmt: skip
        warning = f"{run}: {found.problem}; the run folder was moved whole to {aside.parent / aside.name}; {then}"
    packed = snapshot.pack_resume(folder)
    return (None if packed is None else packed[1]), warning


class DriverSink:
    """The driver's side of every task: its experiment folder, the attempts, the events not yet shown."""

    def __init__(self, exp_dir: str, runs: Iterable[str], models: Iterable[str]):
        self.exp = Path(exp_dir)
        self.runs = set(runs)  # the run names this experiment may write: nothing else is accepted
        self.models = set(models)  # file names under models/ a task may fetch
        self.tokens: dict[str, str] = {}
        self.attempts: dict[str, int] = {}
        self.events: list[tuple[str, str, dict]] = []

    # ---------------------------------------------------------------------------------------------- attempts

    def _run(self, run: str) -> Path:
        if run not in self.runs:
            raise PatchError(f"{run!r} is not a run of {self.exp}")
        return self.exp / "runs" / run

    def _current(self, run: str, token: str) -> Path:
        folder = self._run(run)
        if self.tokens.get(run) != token:
            raise StaleAttempt(f"{run}: a newer attempt of this run has started; this one stops")
        return folder

    def started(self, run: str, token: str, node: str) -> int:
        """A new attempt of ``run`` began on ``node``; its number (1 for the first)."""
        self._run(run)
        self.tokens[run] = token
        self.attempts[run] = self.attempts.get(run, 0) + 1
        self.events.append((run, "start", {"node": node, "attempt": self.attempts[run]}))
        return self.attempts[run]

    def current(self, run: str, token: str) -> bool:
        """Whether ``token`` is the newest attempt of ``run`` (a task asks before it writes elsewhere)."""
        self._current(run, token)
        return True

    # ----------------------------------------------------------------------------------------------- reading

    def fetch(self, run: str) -> bytes | None:
        """The newest snapshot of ``run`` the driver holds, as an archive; None when it holds none."""
        blob, warning = readable_snapshot(self._run(run), run)
        if warning is not None:
            self.events.append((run, "event", {"warning": warning}))
        return blob

    def model(self, name: str) -> bytes:
        """A variant's model file from ``<dir>/models/`` (a YAML, or a ported ``.pt``)."""
        if name not in self.models:
            raise PatchError(f"models/{name} is not a model of {self.exp}")
        from mhsa_patch.patching.atomic import confine

        path = confine(self.exp / "models", self.exp / "models" / name)
        return path.read_bytes()

    # ----------------------------------------------------------------------------------------------- writing

    def _folder(self, run: str, token: str) -> Path:
        """The newest attempt's run folder, made with the tool's mark where there is none yet."""
        folder = self._current(run, token)
        if not folder.exists() and not folder.is_symlink():
            runstate.fresh(folder, run)
        return folder

    def put_snapshot(self, run: str, token: str, blob: bytes, event: dict) -> None:
        """Put an epoch's snapshot into the run's folder, then report the epoch as done."""
        snapshot.put(blob, self._folder(run, token))
        self.events.append((run, "event", dict(event)))

    def put_final(self, run: str, token: str, blob: bytes) -> None:
        """Put a finished run's folder in place (its snapshot stays until the runner records the run)."""
        snapshot.put(blob, self._folder(run, token))

    def put_logs(self, run: str, token: str, blob: bytes) -> None:
        """Put a run's log and arguments file into ``<dir>/logs/``, finished or failed."""
        self._current(run, token)
        import io
        import tarfile

        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as tar:
            for m in tar.getmembers():
                if not (_LOG_NAME.match(m.name) and m.name.startswith(f"{run}.")):
                    raise PatchError(f"{m.name!r} is not a log of {run}")
        snapshot.put(blob, self.exp / "logs")

    def event(self, run: str, token: str, event: dict) -> None:
        """One of the child's events (resuming, validating) for the driver's progress display."""
        try:
            self._current(run, token)
        except StaleAttempt:
            return
        self.events.append((run, "event", dict(event)))

    def drain(self) -> list[tuple[str, str, dict]]:
        """The events since the last call: ``(run, "start" | "event", data)``, in order."""
        out, self.events = self.events, []
        return out


class PathStore:
    """``--storage PATH``: snapshots in ``PATH/<experiment>/runs/<run>/``, a folder every node reaches (NFS, a
    mounted bucket), written with the same atomic protocol as the driver's folder. Picklable: tasks carry it."""

    merges = True  # a snapshot put here is merged with the checkpoints already there: a task sends only new ones

    def __init__(self, root: str | Path, experiment: str):
        self.root = Path(str(root)).expanduser() / experiment
        self.shown = str(self.root)

    def check(self) -> None:
        """Refuse in one line, before anything trains, a folder the driver cannot write."""
        try:
            (self.root / "runs").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise PatchError(f"--storage {self.root}: cannot write there ({e.strerror or e})") from None

    def run_dir(self, run: str) -> Path:
        return self.root / "runs" / _run_name(run)

    def fetch(self, run: str) -> tuple[bytes | None, str | None]:
        """``(the newest snapshot here or None, a warning or None)``: see :func:`readable_snapshot`."""
        return readable_snapshot(self.run_dir(run), run)

    def put_snapshot(self, run: str, blob: bytes) -> None:
        snapshot.put(blob, self.run_dir(run))

    def holds(self, run: str) -> int:
        """The epochs of ``run``'s newest snapshot here (0: none)."""
        try:
            state = runstate.read_state(self.run_dir(run), check=False)
        except runstate.Damaged:
            return 0  # the driver's newer snapshot replaces it
        return 0 if state is None else int(state["epochs_done"])

    def forget(self, run: str) -> None:
        """Remove ``run``'s snapshot once the driver recorded the run (this tool's own files, in its own folder)."""
        import shutil

        folder = self.run_dir(run)
        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder)


def _run_name(run: str) -> str:
    if "/" in run or "\\" in run or run in ("", ".", ".."):
        raise PatchError(f"{run!r} is not a run name")
    return run


_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")  # a URI's protocol, as fsspec reads it
_OBJECT = re.compile(r"(\d{6})\.tar\Z")  # a run's snapshot in a URI store: its epoch count, zero-padded


class UriStore:
    """``--storage URI``: snapshots as objects of any filesystem fsspec reaches from every node (``s3://`` with s3fs,
    ``gs://`` with gcsfs, ``ftp://``, ...), as Ray Tune's ``storage_path`` takes one. Each epoch is one whole archive,
    ``<URI>/<experiment>/runs/<run>/<epochs:06>.tar``, written under a temporary name and then renamed, so a reader
    sees the previous epoch or this one, never half of it; the older archive is removed only after. An archive that
    does not read back as a whole snapshot is never deleted: it is renamed ``damaged-<time>-<name>`` beside it, and
    the warning says so. Picklable: tasks carry it (the connection is opened again where it arrives)."""

    merges = False  # one object per epoch holds everything a resume needs: tasks send whole snapshots

    def __init__(self, uri: str, experiment: str):
        self.uri = uri.rstrip("/")
        self.experiment = experiment
        self.shown = f"{shown_uri(self.uri)}/{experiment}"
        self._fs = None

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_fs"} | {"_fs": None}

    def _open(self):
        if self._fs is None:
            import fsspec

            fs, root = fsspec.core.url_to_fs(self.uri)
            self._fs, self._root = fs, root.rstrip("/")
        return self._fs

    def _dir(self, run: str) -> str:
        self._open()
        return f"{self._root}/{self.experiment}/runs/{_run_name(run)}"

    def _shown(self, path: str) -> str:
        return f"{self.shown}/{path[len(self._root) + len(self.experiment) + 2:]}"

    def check(self) -> None:
        """Write, read back and remove a probe, before anything trains: a URI the driver cannot write is refused in
        one line (the tasks reach it the same way: give each node the same credentials)."""
        import uuid

        try:
            fs = self._open()
            folder = f"{self._root}/{self.experiment}/runs"
            fs.makedirs(folder, exist_ok=True)
            probe = f"{folder}/.probe-{uuid.uuid4().hex}"
            fs.pipe_file(probe, b"mhsa-patch")
            same = fs.cat_file(probe) == b"mhsa-patch"
            fs.rm_file(probe)
        except Exception as e:  # noqa: BLE001 - any filesystem's own error, said in one line
            raise PatchError(f"--storage {self.shown}: cannot write there ({type(e).__name__}: {_line(e)})") from None
        if not same:
            raise PatchError(f"--storage {self.shown}: what was written there did not read back the same")

    def _objects(self, run: str) -> list[tuple[int, str]]:
        """``(epochs, path)`` of the run's archives here, newest first."""
        fs, folder = self._open(), self._dir(run)
        fs.invalidate_cache(folder)  # fsspec keeps listings: another node (or attempt) may have written since
        try:
            names = fs.ls(folder, detail=False)
        except FileNotFoundError:
            return []
        found = []
        for path in names:
            m = _OBJECT.match(str(path).rstrip("/").rsplit("/", 1)[-1])
            if m:
                found.append((int(m.group(1)), f"{folder}/{m.group(0)}"))
        return sorted(found, reverse=True)

    def holds(self, run: str) -> int:
        """The epochs of ``run``'s newest archive here (0: none); :meth:`fetch` checks it before a task uses it."""
        objects = self._objects(run)
        return objects[0][0] if objects else 0

    def put_snapshot(self, run: str, blob: bytes) -> None:
        import uuid

        epochs = _epochs_of(blob)
        problem = _unreadable(blob, run, epochs)  # only what a task can resume from: never an archive of a part
        if problem is not None:
            raise PatchError(f"{run}: the snapshot of epoch {epochs} {problem}: not stored")
        fs, folder = self._open(), self._dir(run)
        fs.makedirs(folder, exist_ok=True)
        final = f"{folder}/{epochs:06d}.tar"
        tmp = f"{folder}/.incoming-{uuid.uuid4().hex}"
        fs.pipe_file(tmp, blob)
        fs.mv(tmp, final)
        for n, path in self._objects(run):
            if n < epochs:
                fs.rm_file(path)

    def fetch(self, run: str) -> tuple[bytes | None, str | None]:
        """``(the newest archive here that reads back as a whole snapshot, or None; a warning or None)``. One that does
        not is renamed aside (never deleted) and the next older one is tried."""
        import time

        fs = self._open()
        warnings = []
        for n, path in self._objects(run):
            blob = fs.cat_file(path)
            problem = _unreadable(blob, run, n)
            if problem is None:
                return blob, "; ".join(warnings) or None
            aside = path.rsplit("/", 1)[0] + f"/damaged-{time.strftime('%Y%m%dT%H%M%S')}-{n:06d}.tar"
            fs.mv(path, aside)
            warnings.append(f"{run}: {self._shown(path)} {problem}; it was moved to {self._shown(aside)}")
        return None, "; ".join(warnings) or None

    def forget(self, run: str) -> None:
        """Remove ``run``'s archives once the driver recorded the run (this tool's own objects; anything else there,
        a damaged archive moved aside included, stays)."""
        fs = self._open()
        for _, path in self._objects(run):
            fs.rm_file(path)
        try:
            fs.rmdir(self._dir(run))
        except Exception:  # noqa: BLE001 - not empty, or a store without folders: nothing to remove
            pass


def _line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[-1][:300]


def _epochs_of(blob: bytes) -> int:
    """The epoch count the archive's ``state.json`` commits."""
    import io
    import json
    import tarfile

    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as tar:
            member = tar.getmember(snapshot.STATE)
            data = json.loads(tar.extractfile(member).read(runstate.JSON_LIMIT))
        n = data["epochs_done"]
        if isinstance(n, int) and not isinstance(n, bool) and n >= 1:
            return n
    except (tarfile.TarError, KeyError, ValueError, TypeError, AttributeError):
        pass
    raise PatchError("a snapshot archive without a committed epoch cannot be stored")


def _unreadable(blob: bytes, run: str, n: int) -> str | None:
    """Why ``blob`` is not a whole snapshot of ``n`` epochs (None: it is): unpacked into a temporary folder and read
    as a run's child reads its folder before it resumes."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mhsa-ablate-check-") as tmp:
        folder = Path(tmp) / run
        try:
            snapshot.put(blob, folder)
            state = runstate.read_state(folder)
        except PatchError:
            return "is not a whole archive (cut short?)"
        except runstate.Damaged as d:
            return f"does not hold a whole snapshot ({d.problem})"
    if state is None or int(state["epochs_done"]) != n:
        return f"does not hold epoch {n}'s snapshot"
    return None


def shown_uri(uri: str) -> str:
    """``uri`` without a password (``ftp://user:secret@host`` is shown ``ftp://user:***@host``)."""
    return re.sub(rf"\A({_SCHEME.pattern}[^/:@]*):[^/@]*@", r"\1:***@", uri)


def parse_storage(text: str) -> str:
    """``--storage PATH``, ``file://PATH`` (the folder, absolute) or a URI fsspec opens here (as given); a one-line
    refusal for anything else."""
    text = str(text).strip()
    if not text:
        raise PatchError("--storage is empty: give a folder or a URI every node reaches")
    if text.startswith("file://"):
        text = text[len("file://") :]
    elif m := _SCHEME.match(text):
        return _uri(text, m.group(1).lower())
    if not text:
        raise PatchError("--storage is empty: give a folder or a URI every node reaches")
    return str(Path(text).expanduser().resolve())


def _uri(text: str, protocol: str) -> str:
    shown = shown_uri(text)
    if protocol in ("memory", "local", "cached", "simplecache", "filecache", "blockcache"):
        raise PatchError(f"--storage {shown}: {protocol}:// is not reached from other nodes; give a folder or a URI "
                         "every node reaches")  # fmt: skip
    try:
        import fsspec

        fsspec.get_filesystem_class(protocol)
    except ImportError as e:
        raise PatchError(f"--storage {shown}: {protocol}:// needs a package not installed here ({_line(e)}); install "
                         "it on every node") from None  # fmt: skip
    except ValueError:
        raise PatchError(f"--storage {shown}: no filesystem for {protocol}:// (fsspec knows s3:// with s3fs, gs:// "
                         "with gcsfs, ftp://, ...); give a folder or a URI every node reaches") from None  # fmt: skip
    return text


def open_store(storage: str, experiment: str) -> PathStore | UriStore:
    """The store for ``parse_storage``'s result."""
    if _SCHEME.match(storage):
        return UriStore(storage, experiment)
    return PathStore(storage, experiment)
