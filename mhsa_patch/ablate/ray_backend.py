"""``ablate --ray``: each run a Ray task on an existing cluster (or a local instance with ``--ray local``).

A fixed grid of independent runs needs Ray's tasks only (``ray.remote``, ``ray.wait``), not Tune. This module
connects, checks that some node can hold a run, and submits one task per pending run; the tasks' work lives in
:mod:`mhsa_patch.ablate.cluster`:

- each task asks for its run's resources, not the driver's (``cluster.resources``): one GPU for a GPU run, the
  dataloader workers plus one CPU; the driver asks for nothing;
- each task checks its node against the recipe before it trains (``cluster.fingerprint``);
- without a shared filesystem, each committed epoch comes back to the driver's experiment folder (or
  ``--storage``) before it counts as done (``cluster.snapshot``, ``cluster.store``); Ray retries a task whose node
  was lost (``max_retries``), and the retry resumes from the newest snapshot the driver holds: a lost node costs
  one epoch at most, and every epoch is in ``results.csv`` once;
- progress comes from the tasks through an actor on the driver's node (``cluster.store.DriverSink``): "started"
  means that a task really started on a node.

Resume and the recipe check are the driver's, so they work as on one machine.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from mhsa_patch.errors import PatchError

TOOL_ROOT = Path(__file__).resolve().parents[2]  # the folder holding mhsa_patch/ (a source checkout or site-packages)
SHIP_ENV = "MHSA_PATCH_RAY_SHIP"  # set to 1 to send run folders back even where <dir> is visible (tests)
RETRIES = 3  # Ray's retries of a task whose node or worker process was lost; each resumes from the last snapshot
POLL_S = 0.25  # how often the driver shows the tasks' events while it waits


def _require_ray():
    try:
        import ray
    except ImportError:
        raise PatchError("--ray needs Ray: pip install 'mhsa-patch[ray]'") from None
    return ray


def _first_line(e: BaseException, last: bool = False) -> str:
    cause = getattr(e, "cause", None) or e
    lines = str(cause).strip().splitlines() or [type(cause).__name__]
    return lines[-1] if last else lines[0]


def connect(ray, address: str) -> bool:
    """Connect to the cluster at ``address`` (``local``: start one here); whether this call started Ray."""
    if ray.is_initialized():
        return False
    env = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in (str(TOOL_ROOT), os.environ.get("PYTHONPATH")) if p)}}
    try:
        if address == "local":
            ray.init(include_dashboard=False, runtime_env=env, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(address=address, runtime_env=env, log_to_driver=False, logging_level=logging.WARNING)
    except Exception as e:  # noqa: BLE001 - Ray's errors are long; one line names the address
        raise PatchError(f"--ray {address}: cannot connect to a Ray cluster: {_first_line(e)}") from None
    return True


def expected_of(exp):
    """What every node must match: the recipe, with the patch's and the dataset's hashes computed here where the
    recipe does not record them yet (an experiment started by an earlier mhsa-patch)."""
    from mhsa_patch.ablate.cluster.fingerprint import Expected, recorded

    recipe = dict(exp.recipe)
    if not recipe.get("patch") or not recipe.get("data_sha256"):
        recipe.update(recorded(exp.target, exp.dataset.yaml))
    return Expected.of(recipe)


def storage_key(exp_dir: Path) -> str:
    """The experiment's folder in ``--storage``: its name and a hash of its path (two projects may share names)."""
    return f"{exp_dir.name}-{hashlib.sha256(str(exp_dir).encode()).hexdigest()[:8]}"


def _seed_storage(store, exp, pending) -> None:
    """Give ``--storage`` the driver's snapshots that are newer than its own (an experiment begun without it),
    one run at a time."""
    from mhsa_patch.ablate.cluster import snapshot
    from mhsa_patch.child.train import read_state

    for r in pending:
        state = read_state(exp.dir / r.run_dir)
        if state is not None and int(state["epochs_done"]) > store.holds(r.name):
            found = snapshot.pack_resume(exp.dir / r.run_dir)
            if found is not None:
                store.put_snapshot(r.name, found[1])


def run_on_ray(exp, pending, address: str, emit, out, *, execute_run, finish_run, run_spec,
               storage: str | None = None) -> None:  # fmt: skip
    """Submit every pending run as a task, show the tasks' events, record each run as it finishes, stop at the
    first failure. ``execute_run``, ``finish_run``, ``run_spec``: the runner's, which calls this (imports go one
    way). ``storage``: ``--storage``, a folder every node reaches, for the snapshots."""
    ray = _require_ray()
    started_here = connect(ray, address)
    try:
        _run(ray, exp, pending, address, emit, out, execute_run=execute_run, finish_run=finish_run,
             run_spec=run_spec, storage=storage)  # fmt: skip
    finally:
        if started_here:
            ray.shutdown()


def _run(ray, exp, pending, address, emit, out, *, execute_run, finish_run, run_spec, storage) -> None:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from mhsa_patch.ablate.cluster.resources import run_resources, unplaceable, uses_gpu
    from mhsa_patch.ablate.cluster.store import DriverSink, PathStore, parse_storage
    from mhsa_patch.ablate.cluster.task import TaskContext, run_task
    from mhsa_patch.patching.atomic import sha256

    if not pending:
        return
    device = exp.slots[0]
    need = run_resources(device, exp.recipe["train"])
    problem = unplaceable(need, ray.nodes())
    if problem is not None:
        raise PatchError(f"--ray {address}: {problem}")
    store = PathStore(parse_storage(storage), storage_key(exp.dir)) if storage else None
    if store is not None:
        _seed_storage(store, exp, pending)
    here = ray.get_runtime_context().get_node_id()
    sink = (
        ray.remote(DriverSink)
        .options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False))
        .remote(str(exp.dir), [r.name for r in pending], {Path(r.model).name for r in pending})
    )
    ctx = TaskContext(
        site=str(exp.target.site), python=exp.target.python, exp_dir=str(exp.dir),
        recipe_sha256=sha256((exp.dir / "recipe.yaml").read_bytes()), expected=expected_of(exp),
        imgsz=int(exp.recipe["imgsz"]), sink=sink, store=store, ship=bool(os.environ.get(SHIP_ENV)),
    )  # fmt: skip
    task = ray.remote(run_task).options(**need.options(), max_retries=RETRIES, retry_exceptions=False)
    slot = "0" if uses_gpu(device) else device  # a task sees its one GPU as device 0
    refs = {task.remote(ctx, r, run_spec(exp, r, slot), execute_run): r for r in pending}
    by_name = {r.name: r for r in pending}

    def show() -> None:
        for name, kind, data in ray.get(sink.drain.remote()):
            r = by_name[name]
            if kind == "start" and data.get("attempt", 1) > 1:
                emit("event", r, {"restarted": data["attempt"], "node": data.get("node")})
            else:
                emit(kind, r, data)

    waiting = list(refs)
    try:
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=1, timeout=POLL_S)
            show()
            for ref in done:
                r = refs[ref]
                try:
                    result = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - a task's PatchError arrives wrapped in Ray's own error
                    _stop(ray, waiting)
                    waiting = []
                    raise PatchError(f"{r.name} (Ray task): {_first_line(e, last=True)}") from None
                out.report = finish_run(exp, r, result)
                out.finished.append(r)
                if store is not None:
                    store.forget(r.name)
                emit("done", r, result)
    except KeyboardInterrupt:
        _stop(ray, waiting)
        raise
    finally:
        ray.kill(sink)


def _stop(ray, refs, wait_s: float = 30) -> None:
    """Cancel the tasks not finished: a pending one never starts, a running one gets a KeyboardInterrupt, on which
    its run's child is stopped (its committed epochs stay); wait a little for them to end. ``force=True`` would kill
    the task's process alone, leaving its child training on the node."""
    for ref in refs:
        ray.cancel(ref)
    if refs:
        ray.wait(list(refs), num_returns=len(refs), timeout=wait_s)
