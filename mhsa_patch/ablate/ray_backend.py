"""``ablate --ray``: the runner's backend interface (:mod:`mhsa_patch.ablate.backends`) on a Ray cluster, each run a
Ray task (or on a local instance with ``--ray local``).

A fixed grid of independent runs needs Ray's tasks only (``ray.remote``, ``ray.wait``), not Tune. This module
connects, checks that some node can hold a run, submits a run's task when the scheduler starts it, and turns what
the tasks report into the scheduler's events; the tasks' work lives in :mod:`mhsa_patch.ablate.cluster`:

- each task asks for its run's resources, not the driver's (``cluster.resources``): one GPU for a GPU run, the
  dataloader workers plus one CPU; the driver asks for nothing (a head node without a GPU is enough). Latency is
  measured the same way, in one task on a worker of the runs' device type (``cluster.latency``, from
  :func:`mhsa_patch.ablate.runner.prepare`);
- each task checks its node against the recipe before it trains (``cluster.fingerprint``);
- without a shared filesystem, each committed epoch comes back to the driver's experiment folder (or
  ``--storage``) before it counts as done (``cluster.snapshot``, ``cluster.store``), and a task gets its run's folder
  when it starts, one run at a time; Ray retries a task whose node was lost (``max_retries``), and the retry resumes
  from the newest snapshot the driver holds: a lost node costs one epoch at most, and every epoch is in
  ``results.csv`` once. Logs come back with failed runs too;
- progress comes from the tasks through an actor on the driver's node (``cluster.store.DriverSink``): a run is
  *started* once its task really began on a node (:class:`~mhsa_patch.ablate.backends.Started`), not when it was
  submitted; a retry after a lost node is a :class:`~mhsa_patch.ablate.backends.Progress` event (``restarted``).

What a failure means, ``--fail-fast``, the records and ``runs.jsonl`` are the scheduler's, as for every backend.
Ray's own lines (a lost node's ``(raylet) ...``) go to ``<dir>/logs/ray.log``, not to the command's output
(:class:`RayLines`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mhsa_patch.ablate import backends
from mhsa_patch.errors import PatchError

TOOL_ROOT = Path(__file__).resolve().parents[2]  # the folder holding mhsa_patch/ (a source checkout or site-packages)
RETRIES = 3  # Ray's retries of a task whose node or worker process was lost; each resumes from the last snapshot
CAPACITY_S = 5.0  # how long the cluster's size, read from Ray, is taken as current
STOP_WAIT_S = 30.0  # how long Ctrl-C waits for the tasks to stop their children


def require_ray():
    """Ray, or a one-line refusal saying how to install it."""
    try:
        import ray
    except ImportError:
        raise PatchError("--ray needs Ray: pip install 'mhsa-patch[ray]'") from None
    return ray


def first_line(e: BaseException, last: bool = False) -> str:
    """A Ray error in one line: its cause's (a task's :class:`PatchError` arrives wrapped in Ray's own error)."""
    cause = getattr(e, "cause", None) or e
    lines = [ln for ln in str(cause).strip().splitlines() if ln.strip()] or [type(cause).__name__]
    return lines[-1].strip() if last else lines[0].strip()


# ------------------------------------------------------------------------------------------------------ connect


class RayLines:
    """What Ray's driver prints of its own, kept out of the command's output and in a log.

    Ray's driver prints what it hears of other processes from two threads of its own: the cluster's errors (after a
    lost node: ``(raylet) Task run_task failed. There are 3 retries remaining ...``, ``(raylet) The node with node id
    ... has been marked dead ...``) and, with ``log_to_driver``, the workers' output. The backend says what matters in
    its own words (``MHSA-s0: attempt 2 on 10.0.0.7 (the previous one lost its node or process)``, the failed run's
    one line); Ray's text goes to ``<dir>/logs/ray.log`` (kept in memory until the experiment's folder is known).
    While connected, ``sys.stdout`` and ``sys.stderr`` are wrapped: a write from one of those threads goes to the
    log, every other write where it went. ``ray.shutdown()`` prints the lines Ray's deduplicator still holds (the
    second ``Raylet is terminated`` of a lost node, say) from the thread that calls it: :meth:`Connection.close` runs
    it inside :meth:`everything`, so those go to the log too. Should a Ray release name its threads otherwise, its
    lines show again, and nothing else changes.
    """

    THREADS = ("ray_listen_error_messages", "ray_print_logs")
    _ESC = re.compile(r"\x1b\[[0-9;]*m")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: list[str] = []
        self.path: Path | None = None
        self.saved: tuple | None = None
        self.whole_thread: int | None = None  # a thread whose every write is Ray's (see everything)

    def install(self) -> None:
        self.saved = (sys.stdout, sys.stderr)
        sys.stdout, sys.stderr = _Wrapped(sys.stdout, self), _Wrapped(sys.stderr, self)

    def uninstall(self) -> None:
        if self.saved is not None:
            if isinstance(sys.stdout, _Wrapped) and sys.stdout.lines is self:
                sys.stdout = self.saved[0]
            if isinstance(sys.stderr, _Wrapped) and sys.stderr.lines is self:
                sys.stderr = self.saved[1]
            self.saved = None

    def log_to(self, path: Path) -> None:
        """Keep Ray's lines in ``path`` from now on (those kept so far first)."""
        with self.lock:
            self.path = path
            pending, self.pending = self.pending, []
        for text in pending:
            self.write(text)

    def write(self, text: str) -> None:
        text = self._ESC.sub("", text)
        with self.lock:
            if self.path is None:
                self.pending.append(text)
                return
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(text)
            except OSError:
                pass  # Ray's own diagnostics: never a reason to stop the runs

    @contextmanager
    def everything(self):
        """While inside, every write from this thread is Ray's too (for ``ray.shutdown()``)."""
        self.whole_thread = threading.get_ident()
        try:
            yield
        finally:
            self.whole_thread = None

    def mine(self) -> bool:
        return threading.get_ident() == self.whole_thread or threading.current_thread().name in self.THREADS


class _Wrapped:
    """A stream whose writes from Ray's driver threads go to :class:`RayLines`; everything else is the stream's."""

    def __init__(self, stream, lines: RayLines):
        self.stream, self.lines = stream, lines

    def write(self, text: str) -> int:
        if self.lines.mine():
            self.lines.write(text)
            return len(text)
        return self.stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


@dataclass
class Connection:
    """This process's connection to a Ray cluster; ``close`` ends it where this process started it."""

    ray: Any
    address: str
    started_here: bool
    lines: RayLines | None = None

    def close(self) -> None:
        if self.started_here and self.ray.is_initialized():
            with self.lines.everything() if self.lines is not None else nullcontext():
                self.ray.shutdown()
        self.started_here = False
        if self.lines is not None:
            self.lines.uninstall()
            self.lines = None

    def log_to(self, path: Path) -> None:
        """Where Ray's own lines go (see :class:`RayLines`)."""
        if self.lines is not None:
            self.lines.log_to(path)


def connect(address: str) -> Connection:
    """Connect to the cluster at ``address`` (``local``: start one here, for this command; ``auto``: RAY_ADDRESS or
    the machine's cluster); a one-line refusal naming the address when there is none."""
    ray = require_ray()
    if ray.is_initialized():
        return Connection(ray, address, False)
    env = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in (str(TOOL_ROOT), os.environ.get("PYTHONPATH")) if p)}}
    kwargs: dict[str, Any] = {"runtime_env": env, "log_to_driver": False, "logging_level": logging.WARNING}
    lines = RayLines()
    lines.install()  # before Ray starts its threads
    try:
        if address == "local":
            ray.init(include_dashboard=False, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except Exception as e:  # noqa: BLE001 - Ray's errors are long; one line names the address
        if ray.is_initialized():
            with lines.everything():
                ray.shutdown()
        lines.uninstall()
        raise PatchError(f"--ray {address}: cannot connect to a Ray cluster: {first_line(e)}") from None
    return Connection(ray, address, True, lines)


def device_slots(conn: Connection, slots: list[str] | None) -> list[str]:
    """The runs' device on the cluster: ``--device`` as given (``cpu``, or a GPU index: one GPU per run, whichever
    the node has), else a GPU where some node of the cluster has one, else the CPU. The driver's own GPUs do not
    count: it trains nothing."""
    if slots is not None:
        return slots
    nodes = [n for n in conn.ray.nodes() if n.get("Alive")]
    return ["0"] if any((n.get("Resources") or {}).get("GPU", 0) >= 1 for n in nodes) else ["cpu"]


def task_options(device: str, train_args: dict) -> dict:
    """What each run's task asks Ray for: its own GPU (Ray then sets the task's ``CUDA_VISIBLE_DEVICES`` to it) or
    none, its dataloader workers plus one CPU, and Ray's retries after a lost node or process (each resumes from the
    run's newest snapshot; an error of the run itself is not retried)."""
    from mhsa_patch.ablate.cluster.resources import run_resources

    return {**run_resources(device, train_args).options(), "max_retries": RETRIES, "retry_exceptions": False}


def require_placeable(conn: Connection, device: str, train_args: dict) -> None:
    """Refuse, before anything is submitted, a run that no live node of the cluster can ever hold (Ray would keep
    the task waiting without a word)."""
    from mhsa_patch.ablate.cluster.resources import run_resources, unplaceable

    problem = unplaceable(run_resources(device, train_args), conn.ray.nodes())
    if problem is not None:
        raise PatchError(f"--ray {conn.address}: {problem}")


def measure_latency(conn: Connection, target, texts: dict, imgsz: int, nc: int, device: str, runs: int,
                    train_args: dict, expected) -> dict:  # fmt: skip
    """Every variant timed in one task that asks for a run's own resources, so that it lands on a worker of the runs'
    device type (:mod:`mhsa_patch.ablate.cluster.latency`); the node checked against ``expected`` first."""
    from mhsa_patch.ablate.cluster.latency import measure_on_cluster
    from mhsa_patch.ablate.cluster.resources import run_resources

    return measure_on_cluster(target, texts, imgsz, nc, device, runs, run_resources(device, train_args), expected)


def storage_key(exp_dir: Path) -> str:
    """The experiment's folder in ``--storage``: its name and a hash of its path (two projects may share names)."""
    return f"{exp_dir.name}-{hashlib.sha256(str(exp_dir).encode()).hexdigest()[:8]}"


# ------------------------------------------------------------------------------------------------------ backend


class RayBackend:
    """The scheduler's backend on Ray (see the module's text). ``execute_run`` and ``run_spec``: the runner's, which
    makes this (imports go one way); ``conn``: the connection :func:`mhsa_patch.ablate.runner.prepare` made (it
    measured the latency there), else one is made here and closed with the backend; ``storage``: ``--storage``."""

    def __init__(self, exp, address: str, *, execute_run, run_spec, storage: str | None = None, conn=None):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from mhsa_patch.ablate.cluster.fingerprint import Expected
        from mhsa_patch.ablate.cluster.resources import run_resources, uses_gpu
        from mhsa_patch.ablate.cluster.store import DriverSink, open_store, parse_storage
        from mhsa_patch.ablate.cluster.task import TaskContext, run_task
        from mhsa_patch.patching.atomic import sha256

        self.exp, self.execute_run, self.run_spec = exp, execute_run, run_spec
        self.own = conn is None
        self.conn = conn if conn is not None else connect(address)
        self.conn.log_to(exp.dir / "logs" / "ray.log")
        ray = self.ray = self.conn.ray
        try:
            self.device = exp.slots[0]
            self.gpu = uses_gpu(self.device)
            self.need = run_resources(self.device, exp.recipe["train"])
            require_placeable(self.conn, self.device, exp.recipe["train"])
            self.store = open_store(parse_storage(storage), storage_key(exp.dir)) if storage else None
            if self.store is not None:
                self.store.check()  # reachable and writable from here, before anything trains
            here = ray.get_runtime_context().get_node_id()
            self.sink = (
                ray.remote(DriverSink)
                .options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False))
                .remote(str(exp.dir), [r.name for r in exp.runs], {Path(r.model).name for r in exp.runs})
            )
            self.ctx = TaskContext(
                site=str(exp.target.site), python=exp.target.python, exp_dir=str(exp.dir),
                recipe_sha256=sha256((exp.dir / "recipe.yaml").read_bytes()), expected=Expected.of(exp.recipe),
                imgsz=int(exp.recipe["imgsz"]), sink=self.sink, store=self.store,
                data_splits=exp.data_splits,
            )  # fmt: skip
            self.task = ray.remote(run_task).options(**task_options(self.device, exp.recipe["train"]))
        except BaseException:
            if self.own:
                self.conn.close()
            raise
        self.by_name = {r.name: r for r in exp.runs}
        self.refs: dict = {}
        self.recorded: list = []  # finished runs whose --storage copy goes once the scheduler recorded them
        self._capacity = (float("-inf"), 1)

    @property
    def capacity(self) -> int:
        """How many runs the cluster's live nodes hold at once (read again every few seconds: nodes come and go)."""
        from mhsa_patch.ablate.cluster.resources import runs_at_once

        at, n = self._capacity
        if time.monotonic() - at > CAPACITY_S:
            try:
                n = runs_at_once(self.need, self.ray.nodes())
            except Exception:  # noqa: BLE001 - the cluster's state unreadable for a moment: keep the last count
                pass
            self._capacity = (time.monotonic(), n)
        return n

    def start(self, r) -> None:
        if self.store is not None:
            self._seed_storage(r)
        spec = self.run_spec(self.exp, r, "0" if self.gpu else self.device)  # a task sees its one GPU as device 0
        spec["device"] = "a Ray GPU" if self.gpu else "a Ray CPU"
        self.refs[self.task.remote(self.ctx, r, spec, self.execute_run)] = r

    def _seed_storage(self, r) -> None:
        """Give ``--storage`` the driver's snapshot of ``r`` where it is newer than the one there (an experiment begun
        without it), before ``r``'s task fetches from there."""
        from mhsa_patch.ablate import runstate
        from mhsa_patch.ablate.cluster import snapshot

        try:
            state = runstate.read_state(self.exp.dir / r.run_dir, check=False)
        except runstate.Damaged:
            return  # the task's fetch from the driver says what is wrong with it
        if state is not None and int(state["epochs_done"]) > self.store.holds(r.name):
            found = snapshot.pack_resume(self.exp.dir / r.run_dir)
            if found is not None:
                try:
                    self.store.put_snapshot(r.name, found[1])
                except PatchError:
                    return  # not a whole snapshot (a URI store refuses it): the task's fetch from the driver says why

    def events(self, timeout: float) -> list:
        self._forget_recorded()
        done: list = []
        if self.refs:
            done, rest = self.ray.wait(list(self.refs), num_returns=1, timeout=timeout)
            if done and rest:
                more, _ = self.ray.wait(rest, num_returns=len(rest), timeout=0)
                done += more
        out = self._drain()  # every event a task sent before it returned, before its end
        out += [self._end(ref) for ref in done]
        return out

    def _drain(self) -> list:
        out: list = []
        for name, kind, data in self.ray.get(self.sink.drain.remote()):
            r = self.by_name[name]
            if kind == "start" and int(data.get("attempt", 1)) > 1:
                out.append(backends.Progress(r, {"restarted": data["attempt"], "node": data.get("node")}))
            elif kind == "start":
                out.append(backends.Started(r, f"node {data.get('node')}"))
            else:
                out.append(backends.Progress(r, data))
        return out

    def _end(self, ref):
        r = self.refs.pop(ref)
        try:
            result = self.ray.get(ref)
        except Exception as e:  # noqa: BLE001 - a task's PatchError arrives wrapped in Ray's own error
            exc = self.ray.exceptions
            lost = not isinstance(e, (exc.RayTaskError, exc.TaskCancelledError))  # a node or a process, not the run
            log = self.exp.log(r)
            reason = first_line(e, last=True)
            if lost:
                reason = f"Ray lost the run's task after {RETRIES + 1} attempts: {reason}"
            return backends.Failed(r, reason, str(log) if log.is_file() else None, lost)
        if self.store is not None:
            self.recorded.append(r)
        return backends.Finished(r, result)

    def _forget_recorded(self) -> None:
        """Remove a finished run's snapshot from ``--storage`` once the driver recorded it (never before: a driver
        killed in between resumes from it)."""
        keep = []
        for r in self.recorded:
            if self.exp.done(r):
                self.store.forget(r.name)
            else:
                keep.append(r)
        self.recorded = keep

    def stop(self) -> None:
        """Cancel the tasks not finished: a queued one never starts, a running one gets a KeyboardInterrupt, on which
        its run's child is stopped (its committed epochs stay); wait a little for them to end. ``force=True`` would
        kill the task's process alone, leaving its child training on the node."""
        refs = list(self.refs)
        for ref in refs:
            self.ray.cancel(ref)
        if refs:
            self.ray.wait(refs, num_returns=len(refs), timeout=STOP_WAIT_S)

    def close(self) -> None:
        try:
            if self.store is not None:
                self._forget_recorded()
            self.ray.kill(self.sink)
        except Exception:  # noqa: BLE001 - the cluster gone: nothing left to give back
            pass
        if self.own:
            self.conn.close()
