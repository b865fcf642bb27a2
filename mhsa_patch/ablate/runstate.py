"""A run's folder as the tool reads it, on every side (the driver, the run's child, ``ablate --status``).

Nothing here imports torch: a checkpoint is checked as the zip archive ``torch.save`` writes (every member's CRC),
never unpickled. Every file is untrusted input: read without following a link out of the run's folder, bounded,
validated. Layout (``<run>`` = ``runs/<variant>-s<seed>``)::

    <run>/.mhsa-ablate                 the tool created this folder (written before ultralytics writes anything)
    <run>/results.csv  args.yaml  weights/last.pt  weights/best.pt      ultralytics' own files
    <run>/weights/.resume/state.json   the commit point: epochs_done, last, best, best_epoch, train_s, ...
    <run>/weights/.resume/last-eN.pt   best-eM.pt                        the snapshots it names
    <run>/ablate.json                  the run's result, once it is finished and validated

Nothing of a run is ever deleted on a guess (:func:`inspect`): a folder the tool cannot read is moved aside whole
(:func:`set_aside`, ``<run>.damaged-K``) and a new one is built from its newest intact snapshot (:func:`salvage`);
only a folder the tool made and that holds no finished epoch is replaced silently.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mhsa_patch.patching.atomic import Unsafe, copy_atomic, fsync_dir, read_confined, write_atomic

RESUME = ".resume"
STATE = "state.json"
DONE = "ablate.json"  # in a run's folder: its child's result, written once the run is finished and validated
MARK = ".mhsa-ablate"
SNAPSHOT = re.compile(r"(last|best)-e(\d+)\.pt")
JSON_LIMIT = 1 << 20
CSV_LIMIT = 64 << 20


class Damaged(Exception):
    """A run file the tool wrote that it cannot read back (``problem``: one phrase, paths relative to the run)."""

    def __init__(self, problem: str):
        self.problem = problem
        super().__init__(problem)


def write_json(path: Path, data: dict) -> None:
    """A state or record file, through the one atomic helper (temporary file, fsync, rename, fsync of the folder)."""
    write_atomic(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def _read(run_dir: Path, rel: str, limit: int) -> bytes | None:
    """The bytes of ``run_dir/rel``, None when it is missing; :class:`Damaged` for a link, a folder resolving
    outside the run, or a file over ``limit``."""
    try:
        return read_confined(run_dir, run_dir / rel, limit)
    except FileNotFoundError:
        return None
    except Unsafe as e:
        raise Damaged(f"{rel}: {e.reason}") from None
    except OSError as e:
        raise Damaged(f"{rel}: {e.strerror or e}") from None


def _json(run_dir: Path, rel: str) -> dict | None:
    raw = _read(run_dir, rel, JSON_LIMIT)
    if raw is None:
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise Damaged(f"{rel} is not readable JSON ({len(raw)} bytes: cut short?)") from None
    if not isinstance(data, dict):
        raise Damaged(f"{rel} is not a JSON object")
    return data


def results_rows(run_dir: Path) -> list[str]:
    """The data rows of ``results.csv`` (its header left out); [] when it is missing or unreadable."""
    try:
        raw = _read(run_dir, "results.csv", CSV_LIMIT)
    except Damaged:
        return []
    if raw is None:
        return []
    lines = [ln for ln in raw.decode("utf-8", errors="replace").splitlines() if ln.strip()]
    return lines[1:]


def results_header(run_dir: Path) -> str | None:
    raw = _read(run_dir, "results.csv", CSV_LIMIT)
    lines = raw.decode("utf-8", errors="replace").splitlines() if raw else []
    return lines[0] if lines else None


def row_epochs(rows: list[str]) -> list[int]:
    """The ``epoch`` column of ``results.csv`` rows (1, 2, ... as ultralytics numbers them); -1 where unreadable."""
    out = []
    for row in rows:
        try:
            out.append(int(float(row.split(",")[0])))
        except ValueError:
            out.append(-1)
    return out


def intact(path: Path) -> bool:
    """Whether ``path`` is a whole checkpoint: a regular file (no link), a zip archive as ``torch.save`` writes
    it, every member's CRC right. Read, never unpickled."""
    try:
        if path.is_symlink() or not path.is_file():
            return False
        with zipfile.ZipFile(path) as z:
            return z.testzip() is None and any(n.endswith("data.pkl") for n in z.namelist())
    except (OSError, zipfile.BadZipFile, EOFError, ValueError, RuntimeError):
        return False


def read_state(run_dir: Path, *, check: bool = True) -> dict | None:
    """The committed state of a run (``epochs_done``, ``last``, ``best``, ``best_epoch``, ``train_s``, and
    ``stopped_early``, ``batch`` where the child wrote them), None when it has none; :class:`Damaged` when it has one
    the tool cannot use. ``check``: also verify the snapshots it names are whole and ``results.csv`` holds its
    epochs (the child does before it resumes; ``--status`` only reads the numbers)."""
    rel = f"weights/{RESUME}/{STATE}"
    state = _json(run_dir, rel)
    if state is None:
        return None
    n = state.get("epochs_done")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise Damaged(f"{rel} holds no epoch count")
    best_epoch = state.get("best_epoch")
    if not isinstance(best_epoch, int) or not 1 <= best_epoch <= n:
        raise Damaged(f"{rel} holds no best epoch")
    if not isinstance(state.get("train_s"), (int, float)):
        raise Damaged(f"{rel} holds no training time")
    for k in ("last", "best"):  # names this child wrote, nothing else
        name = state.get(k)
        if not isinstance(name, str) or not SNAPSHOT.fullmatch(name) or not name.startswith(k):
            raise Damaged(f"{rel} names no {k} snapshot")
        if check:
            p = run_dir / "weights" / RESUME / name
            if not p.exists() and not p.is_symlink():
                raise Damaged(f"weights/{RESUME}/{name}, which {STATE} names, is missing")
            if not intact(p):
                raise Damaged(f"weights/{RESUME}/{name} is not a whole checkpoint (cut short?)")
    if check:
        epochs = row_epochs(results_rows(run_dir))
        if epochs[:n] != list(range(1, n + 1)):
            raise Damaged(f"results.csv holds {len(epochs)} epochs, the snapshot {n}")
    return state


def read_done(run_dir: Path) -> dict | None:
    """A finished run's result (``ablate.json``), None when the run is not finished; :class:`Damaged` when the
    file is there but not one."""
    done = _json(run_dir, DONE)
    if done is None:
        return None
    for key in ("map50", "map50_95", "precision", "recall", "train_s"):
        if not isinstance(done.get(key), (int, float)) or isinstance(done.get(key), bool):
            raise Damaged(f"{DONE} has no {key}")
    for key in ("best_epoch", "epochs"):
        if not isinstance(done.get(key), int) or isinstance(done.get(key), bool):
            raise Damaged(f"{DONE} has no {key}")
    return done


def holds_epochs(run_dir: Path) -> bool:
    """Whether a folder holds anything of a finished epoch: a row of ``results.csv`` or a checkpoint."""
    if results_rows(run_dir):
        return True
    weights = run_dir / "weights"
    return weights.is_dir() and any(p.suffix == ".pt" for p in weights.rglob("*"))


@dataclass(frozen=True)
class Found:
    """What a run's folder holds: ``none`` (no folder), ``empty`` (the tool's, nothing finished: replaced
    silently), ``state`` (a committed snapshot, ``state``), ``damaged`` (``problem``: moved aside before anything)."""

    kind: str
    state: dict | None = None
    problem: str | None = None


def inspect(run_dir: Path) -> Found:
    if not run_dir.exists() and not run_dir.is_symlink():
        return Found("none")
    if run_dir.is_symlink() or not run_dir.is_dir():
        return Found("damaged", problem="it is not a folder")
    try:
        state = read_state(run_dir)
    except Damaged as d:
        return Found("damaged", problem=d.problem)
    if state is not None:
        return Found("state", state)
    ours = (run_dir / MARK).is_file() and not (run_dir / MARK).is_symlink()
    if ours and not holds_epochs(run_dir):
        return Found("empty")
    rows = len(results_rows(run_dir))
    what = f"{rows} epochs in results.csv but " if rows else ""
    whose = "" if ours else " (nor the tool's mark: a folder copied or half unpacked?)"
    return Found("damaged", problem=f"{what}no weights/{RESUME}/{STATE}{whose}")


def set_aside(run_dir: Path, kind: str = "damaged") -> Path:
    """Move ``run_dir`` whole to ``<run>.damaged-K`` beside it (the first free K); its new path."""
    k = 1
    while True:
        dest = run_dir.with_name(f"{run_dir.name}.{kind}-{k}")
        if not dest.exists() and not dest.is_symlink():
            break
        k += 1
    os.rename(run_dir, dest)
    fsync_dir(run_dir.parent)
    return dest


def fresh(run_dir: Path, name: str) -> None:
    """An empty run folder with the tool's mark in it (``run_dir`` must not exist)."""
    run_dir.mkdir(parents=True)
    write_json(run_dir / MARK, {"run": name})


def salvage(aside: Path, run_dir: Path, name: str) -> dict | None:
    """A new ``run_dir`` from the newest intact snapshot in ``aside`` (a run moved aside), its committed state; None
    when there is none that ``aside``'s ``results.csv`` covers (the run then starts over). ``aside`` is only read."""
    snap = aside / "weights" / RESUME
    found: dict[int, dict[str, Path]] = {}
    if snap.is_dir() and not snap.is_symlink():
        for p in snap.iterdir():
            m = SNAPSHOT.fullmatch(p.name)
            if m and not p.is_symlink() and p.is_file():
                found.setdefault(int(m.group(2)), {})[m.group(1)] = p
    rows = results_rows(aside)
    epochs = row_epochs(rows)
    try:
        old = read_state(aside, check=False)
    except Damaged:
        old = None
    ok = {}  # one CRC pass per file
    whole = lambda p: ok.setdefault(p, intact(p))  # noqa: E731
    for n in sorted(found, reverse=True):
        last = next((p for p in (found[n].get("last"), found[n].get("best")) if p is not None and whole(p)), None)
        if last is None or epochs[:n] != list(range(1, n + 1)):
            continue  # a best-eN is epoch N's last.pt as well (a second name for it)
        best_epoch = next((m for m in sorted(found, reverse=True) if m <= n and "best" in found[m]
                           and whole(found[m]["best"])), None)  # fmt: skip
        if best_epoch is None:
            continue
        best = found[best_epoch]["best"]
        if old is not None and old["epochs_done"] >= n:
            train_s = float(old["train_s"]) * n / old["epochs_done"]
        else:
            train_s = _logged_time(aside, n)
        fresh(run_dir, name)
        header = results_header(aside) or ""
        write_atomic(run_dir / "results.csv", ("\n".join([header, *rows[:n]]) + "\n").encode("utf-8"))
        if (aside / "args.yaml").is_file() and not (aside / "args.yaml").is_symlink():
            copy_atomic(aside / "args.yaml", run_dir / "args.yaml")
        w = run_dir / "weights"
        (w / RESUME).mkdir(parents=True)
        last_name, best_name = f"last-e{n}.pt", f"best-e{best_epoch}.pt"
        copy_atomic(last, w / RESUME / last_name)
        if best_epoch == n:
            os.link(w / RESUME / last_name, w / RESUME / best_name)
        else:
            copy_atomic(best, w / RESUME / best_name)
        copy_atomic(w / RESUME / last_name, w / "last.pt")
        copy_atomic(w / RESUME / best_name, w / "best.pt")
        state = {"epochs_done": n, "last": last_name, "best": best_name, "best_epoch": best_epoch,
                 "train_s": round(train_s, 3), "salvaged_from": aside.name}  # fmt: skip
        write_json(w / RESUME / STATE, state)
        return state
    return None


def _logged_time(run_dir: Path, n: int) -> float:
    """The training time ultralytics logged for epoch ``n`` (``results.csv``'s ``time`` column), else 0."""
    header = (results_header(run_dir) or "").split(",")
    cols = [c.strip() for c in header]
    if "time" not in cols:
        return 0.0
    try:
        return float(results_rows(run_dir)[n - 1].split(",")[cols.index("time")])
    except (IndexError, ValueError):
        return 0.0
