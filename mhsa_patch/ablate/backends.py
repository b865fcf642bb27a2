"""Where runs train: the one small interface every backend has, and the local one (one slot, or one per GPU).

A backend only starts runs and reports what happens to them; the runner's scheduler decides everything else (the
order, when a run may start, what a failure means, ``--fail-fast``, the records, ``runs.jsonl``), the same for every
backend. The interface:

* ``capacity``: how many runs may train at once; the scheduler calls ``start`` only while fewer are going;
* ``start(run)``: begin training ``run`` (now, or as soon as the backend can: a queued run is not *started*);
* ``events(timeout)``: what happened since the last call, waiting up to ``timeout`` seconds for something: a
  :class:`Started` (the run really began, on that device), :class:`Progress` (a child's event: an epoch, a warning),
  :class:`Finished` (the child's result, the run's folder complete under the experiment) or :class:`Failed` (a
  one-line reason, the log's path, and whether trying again could help: a lost node, not a bug);
* ``stop()``: end every run going now (Ctrl-C); ``close()``: give back what the backend holds.

Ray's adapter is :class:`mhsa_patch.ablate.ray_backend.RayBackend`.
"""

from __future__ import annotations

import os
import queue
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, Union

from mhsa_patch.errors import PatchError


@dataclass(frozen=True)
class Started:
    run: Any
    device: str


@dataclass(frozen=True)
class Progress:
    run: Any
    event: dict


@dataclass(frozen=True)
class Finished:
    run: Any
    result: dict


@dataclass(frozen=True)
class Failed:
    run: Any
    reason: str
    log: str | None = None
    retryable: bool = False


Event = Union[Started, Progress, Finished, Failed]


class Backend(Protocol):
    capacity: int

    def start(self, run: Any) -> None: ...

    def events(self, timeout: float) -> list[Event]: ...

    def stop(self) -> None: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------------------------------------------- devices


def parse_slots(text: str) -> list[str]:
    """``cpu`` (or ``mps``) -> one slot; ``0,1,2,3`` -> four slots, one GPU each (independent runs, not DDP). The
    indices are torch's, within what ``CUDA_VISIBLE_DEVICES`` lets this process see, as in ultralytics'
    ``device=0,1``. A ``ValueError`` for anything else (the runner makes it a usage error)."""
    text = str(text).strip().lower()
    if text in ("cpu", "mps"):
        return [text]
    parts = [p.strip() for p in text.split(",")]
    if not parts or not all(p.isdigit() for p in parts) or len(set(parts)) != len(parts):
        raise ValueError(text)
    return [str(int(p)) for p in parts]


def slot_env(slot: str, visible: str | None = None) -> dict[str, str]:
    """The environment that makes a run's child see only its GPU, as device 0. ``visible``: the driver's own
    ``CUDA_VISIBLE_DEVICES`` (default: this process's), whose ``slot``-th entry that GPU is; a slot past its end is
    an error, not another GPU."""
    if slot in ("cpu", "mps"):
        return {}
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    if visible is None or not visible.strip():
        return {"CUDA_VISIBLE_DEVICES": slot}
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    if int(slot) >= len(entries):
        raise PatchError(f"--device {slot}: CUDA_VISIBLE_DEVICES={visible} shows {len(entries)} GPU(s), 0 to "
                         f"{len(entries) - 1}")  # fmt: skip
    return {"CUDA_VISIBLE_DEVICES": entries[int(slot)]}


def slot_device(slot: str) -> str:
    """The ``device`` a run's child passes to ultralytics: it sees its one GPU as device 0."""
    return slot if slot in ("cpu", "mps") else "0"


def slot_label(slot: str) -> str:
    """The device as the user named it: ``cpu``, ``cuda:2``."""
    return slot if slot in ("cpu", "mps") else f"cuda:{slot}"


# ------------------------------------------------------------------------------------------------------------ local


@dataclass
class LocalBackend:
    """One thread per slot, each running one run's child at a time (:func:`mhsa_patch.ablate.runner.execute_run`,
    passed in as ``execute``: ``execute(run, slot, on_event, on_start) -> result``)."""

    slots: list[str]
    execute: Callable[..., dict]
    log_of: Callable[[Any], str]
    _free: queue.Queue = field(default_factory=queue.Queue)
    _events: queue.Queue = field(default_factory=queue.Queue)
    _procs: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        for s in self.slots:
            self._free.put(s)
        self.capacity = len(self.slots)

    def start(self, run: Any) -> None:
        slot = self._free.get(timeout=60)  # the scheduler starts a run only while a slot is free
        threading.Thread(target=self._one, args=(run, slot), name=f"run {run.name}", daemon=True).start()

    def _one(self, run: Any, slot: str) -> None:
        def started(proc: subprocess.Popen) -> None:
            with self._lock:
                self._procs[run.name] = proc
            self._events.put(Started(run, slot_label(slot)))

        end: Event
        try:
            end = Finished(run, self.execute(run, slot, lambda ev: self._events.put(Progress(run, ev)), started))
        except PatchError as e:
            end = Failed(run, str(e), self.log_of(run))
        except BaseException as e:  # noqa: BLE001 - a failure of this run, whatever it is, must not stop the others
            from mhsa_patch.child.protocol import one_line

            end = Failed(run, one_line(e), self.log_of(run))
        with self._lock:
            self._procs.pop(run.name, None)
        self._free.put(slot)  # before the run's end is told: the scheduler may start the next run on it at once
        self._events.put(end)

    def events(self, timeout: float) -> list[Event]:
        out: list[Event] = []
        try:
            out.append(self._events.get(timeout=timeout))
            while True:
                out.append(self._events.get_nowait())
        except queue.Empty:
            return out

    def stop(self) -> None:
        with self._lock:
            procs = list(self._procs.values())
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()

    def close(self) -> None:
        pass
