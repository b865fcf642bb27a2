"""The state of a grid: ``<dir>/runs.jsonl``, which the scheduler keeps current, and ``ablate --status``, which reads.

``runs.jsonl`` has one JSON object per planned run, in the plan's order, rewritten atomically on every change (a run
starts, ends an epoch, finishes, fails)::

    {"run": "MHSA-s0", "variant": "MHSA", "seed": 0, "dir": "runs/MHSA-s0", "state": "running", "device": "cuda:1",
     "epoch": 12, "epochs": 300, "seconds_per_epoch": 41.2, "eta_s": 11536.0, "reason": null, "log": null}

``state`` is one of ``pending``, ``starting``, ``running``, ``done``, ``stopped early``, ``failed`` (with ``reason``
and ``log``), ``interrupted`` (a run that had begun and is not going now: the next ``ablate`` resumes it).

:func:`read` is what ``--status`` prints: the plan from ``runs.jsonl``, brought up to date from the run folders
(``ablate.json``, the committed snapshot, the run locks' holders) without taking any lock or writing anything, so
it answers while the grid trains and after its driver died. The ETA comes from the epochs' measured times: each
variant's mean seconds per epoch (over its runs so far; the mean of all where a variant has none yet), times the
epochs left, spread over the devices.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mhsa_patch.ablate import lock as locks
from mhsa_patch.ablate import runstate
from mhsa_patch.errors import PatchError
from mhsa_patch.patching.atomic import Unsafe, read_confined, write_atomic

RUNS = "runs.jsonl"
LIMIT = 16 << 20
STATES = ("pending", "starting", "running", "done", "stopped early", "failed", "interrupted")
FIELDS = ("run", "variant", "seed", "dir", "state", "device", "epoch", "epochs", "seconds_per_epoch", "eta_s",
          "reason", "log")  # fmt: skip
_DIR = re.compile(r"runs/[A-Za-z0-9._-]+")


def _eta(rows: Sequence[dict], devices: int) -> float | None:
    """Fill each row's ``eta_s`` (its time left); the grid's time left on ``devices`` at once, or None before any
    epoch was timed."""
    per: dict[str, list[float]] = {}
    for r in rows:
        if isinstance(r.get("seconds_per_epoch"), (int, float)) and r["seconds_per_epoch"] > 0:
            per.setdefault(r["variant"], []).append(float(r["seconds_per_epoch"]))
    if not per:
        for r in rows:
            r["eta_s"] = 0.0 if r["state"] in ("done", "stopped early") else None
        return None
    every = statistics.fmean([x for v in per.values() for x in v])
    left = 0.0
    for r in rows:
        if r["state"] in ("done", "stopped early", "failed"):
            r["eta_s"] = 0.0 if r["state"] != "failed" else None
            continue
        spe = statistics.fmean(per[r["variant"]]) if r["variant"] in per else every
        r["eta_s"] = round(max(0, int(r.get("epochs") or 0) - int(r.get("epoch") or 0)) * spe, 1)
        left += r["eta_s"]
    return round(left / max(1, devices), 1)


def _row_from_disk(exp_dir: Path, run, epochs: int) -> dict:
    row = {k: None for k in FIELDS}
    row.update(run=run.label, variant=run.variant, seed=run.seed, dir=run.run_dir, state="pending", epoch=0,
               epochs=epochs)  # fmt: skip
    _refresh(exp_dir / run.run_dir, row)
    return row


def _refresh(run_dir: Path, row: dict) -> None:
    """What the run's own files say: finished (and how), or the epochs committed and their pace."""
    try:
        done = runstate.read_done(run_dir)
    except runstate.Damaged:
        done = None
    if done is not None:
        n = int(done["epochs"])
        row.update(state="stopped early" if done.get("stopped_early") else "done", epoch=n,
                   seconds_per_epoch=round(float(done["train_s"]) / n, 3) if n else None, reason=None)  # fmt: skip
        return
    try:
        st = runstate.read_state(run_dir, check=False)
    except runstate.Damaged:
        st = None
    if st is not None:
        n = int(st["epochs_done"])
        row["epoch"] = max(n, int(row.get("epoch") or 0)) if row.get("state") == "running" else n
        if float(st["train_s"]) > 0:
            row["seconds_per_epoch"] = round(float(st["train_s"]) / n, 3)


class Grid:
    """The driver's view of its runs, written to ``runs.jsonl`` on every change (never fatal: a disk that cannot
    take it costs a note, not the trainings)."""

    def __init__(self, exp_dir: Path, rows: dict[str, dict], devices: int):
        self.path, self.rows, self.devices = exp_dir / RUNS, rows, devices
        self.problem: str | None = None

    @classmethod
    def start(cls, exp_dir: Path, runs: Sequence[Any], slots: Sequence[str], epochs: int) -> Grid:
        grid = cls(exp_dir, {r.name: _row_from_disk(exp_dir, r, epochs) for r in runs}, len(slots))
        grid.write()
        return grid

    def update(self, name: str, **fields) -> None:
        self.rows[name].update(fields)
        self.write()

    def epoch(self, name: str, ev: dict) -> None:
        row = self.rows[name]
        row.update(epoch=int(ev["epoch"]), epochs=int(ev.get("epochs") or row["epochs"]))
        seconds = ev.get("seconds")
        if isinstance(seconds, (int, float)) and seconds > 0:
            old = row.get("seconds_per_epoch")
            row["seconds_per_epoch"] = round(seconds if not old else 0.8 * old + 0.2 * seconds, 3)
        self.write()

    def finished(self, name: str, result: dict) -> None:
        row = self.rows[name]
        n = int(result.get("epochs") or 0)
        row.update(state="stopped early" if result.get("stopped_early") else "done", epoch=n, reason=None, log=None,
                   seconds_per_epoch=round(float(result.get("train_s") or 0) / n, 3) if n else None)  # fmt: skip
        self.write()

    def write(self) -> None:
        rows = list(self.rows.values())
        _eta(rows, self.devices)
        text = "".join(json.dumps({k: r.get(k) for k in FIELDS}) + "\n" for r in rows)
        try:
            write_atomic(self.path, text.encode("utf-8"))
        except OSError as e:
            self.problem = f"{self.path} could not be written ({e.strerror or e}); --status shows older states"

    def close(self) -> None:
        self.write()


# --------------------------------------------------------------------------------------------------------- read


@dataclass(frozen=True)
class GridStatus:
    """What ``--status`` shows: every planned run (``rows``: :data:`FIELDS`), the grid's time left (``eta_s``,
    None before any epoch was timed), how many devices that assumes, and whether a driver holds the experiment."""

    dir: Path
    rows: list[dict]
    eta_s: float | None
    devices: int
    driver: dict | None

    def count(self, state: str) -> int:
        return sum(r["state"] == state for r in self.rows)


def read(exp_dir: Path) -> GridStatus:
    """The state of the grid in ``exp_dir``, from its files alone: no lock taken, nothing written. A one-line
    :class:`PatchError` where there is no experiment (or no ``runs.jsonl`` yet) or a file is not what it should be."""
    from mhsa_patch.ablate.recipe import read_recipe

    exp_dir = Path(exp_dir)
    if not (exp_dir / "recipe.yaml").is_file():
        raise PatchError(f"{exp_dir}: no experiment here (no recipe.yaml)")
    try:
        raw = read_confined(exp_dir, exp_dir / RUNS, LIMIT)
    except FileNotFoundError:
        raise PatchError(f"{exp_dir}: no {RUNS} yet: no run of this experiment has been started") from None
    except (Unsafe, OSError) as e:
        raise PatchError(f"{exp_dir / RUNS}: cannot be read ({e})") from None
    rows = [_row(line, exp_dir) for line in raw.decode("utf-8", errors="replace").splitlines() if line.strip()]
    recipe = read_recipe(exp_dir) or {}
    driver = locks.holder(exp_dir / "ablate.lock")
    live = bool(driver and driver.get("alive"))
    for row in rows:
        run_dir = exp_dir / row["dir"]
        holder = locks.holder(exp_dir / "locks" / f"{Path(row['dir']).name}.lock")
        recorded = row["state"]
        _refresh(run_dir, row)
        if row["state"] in ("done", "stopped early"):
            continue
        if holder and holder.get("alive"):
            row.update(state="running", device=holder.get("device") or row.get("device"))
        elif recorded in ("running", "starting") and live:
            row["state"] = recorded  # a run the driver placed where its lock is not seen (a Ray node's own disk)
        elif recorded == "failed":
            row["state"] = "failed"
        else:
            row["state"] = "interrupted" if int(row.get("epoch") or 0) > 0 or recorded == "interrupted" else "pending"
    device = str(recipe.get("device") or "")
    devices = len(device.split(",")) if device and device != "ray" else max(1, sum(r["state"] == "running" for r in rows))
    eta = _eta(rows, devices)
    return GridStatus(exp_dir, rows, eta, devices, driver if live else None)


def _row(line: str, exp_dir: Path) -> dict:
    try:
        data = json.loads(line)
    except ValueError:
        raise PatchError(f"{exp_dir / RUNS}: a line is not JSON; the driver rewrites it whole on its next change") from None
    if not isinstance(data, dict) or not isinstance(data.get("dir"), str) or not _DIR.fullmatch(data["dir"]):
        raise PatchError(f"{exp_dir / RUNS}: a line is not a run of this tool")
    row = {k: data.get(k) for k in FIELDS}
    if row["state"] not in STATES:
        row["state"] = "pending"
    for k in ("run", "variant", "device", "reason", "log"):
        row[k] = None if row[k] is None else str(row[k])
    for k in ("seed", "epoch", "epochs"):
        row[k] = row[k] if isinstance(row[k], int) and not isinstance(row[k], bool) else 0
    if not isinstance(row["seconds_per_epoch"], (int, float)) or isinstance(row["seconds_per_epoch"], bool):
        row["seconds_per_epoch"] = None
    row["variant"] = row["variant"] or "?"
    row["run"] = row["run"] or Path(row["dir"]).name
    return row


def duration(seconds: float | None) -> str:
    """``2 h 05 min``, ``12 min``, ``40 s``; ``—`` when unknown."""
    if seconds is None:
        return "—"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min"
    return f"{s} s"
