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

    def __init__(self, root: str | Path, experiment: str):
        self.root = Path(str(root)).expanduser() / experiment

    def run_dir(self, run: str) -> Path:
        if "/" in run or run in ("", ".", ".."):
            raise PatchError(f"{run!r} is not a run name")
        return self.root / "runs" / run

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


def parse_storage(text: str) -> str:
    """``--storage PATH`` or ``file://PATH``: the folder, absolute; a one-line refusal for anything else."""
    text = str(text).strip()
    if text.startswith("file://"):
        text = text[len("file://") :]
    elif re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", text):
        raise PatchError(
            f"--storage {text}: only a folder every node reaches (a path or file://PATH: NFS, a mounted bucket) "
            "is supported; mount the bucket on every node and give its path"
        )
    if not text:
        raise PatchError("--storage is empty: give a folder every node reaches")
    return str(Path(text).expanduser().resolve())

