"""The body of one run's Ray task, on whatever node Ray put it.

1. It tells the driver it started (a new attempt token: see :mod:`mhsa_patch.ablate.cluster.store`).
2. It checks its node against the recipe (:mod:`mhsa_patch.ablate.cluster.fingerprint`): a mismatch fails the run
   in one line naming the node, before anything trains. The synthetic set is drawn here, identical by seed; a
   dataset YAML must be at the recipe's path, with the recipe's checksum.
3. Where its node sees the experiment folder itself (the same ``recipe.yaml``: a shared filesystem, or the driver's
   own node), the run writes there directly, as on one machine.
4. Elsewhere it trains in a temporary folder: the newest snapshot of its run comes from ``--storage`` or the driver
   (one run's folder, when the task starts), the model file from the driver; after each epoch the child commits,
   the snapshot goes back (:class:`Shipper`) before the epoch counts as done, so a lost node costs one epoch at most
   and Ray's retry of the task resumes from it. The finished folder and the logs go back at the end, the logs also
   when the run failed.

The runner's ``execute_run`` (which starts the run's child) is passed in: this package never imports the runner.
"""

from __future__ import annotations

import tempfile
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from mhsa_patch.ablate.cluster import snapshot
from mhsa_patch.ablate.cluster.fingerprint import Expected, difference
from mhsa_patch.errors import PatchError


@dataclass(frozen=True)
class TaskContext:
    """What every task of an experiment gets from the driver (picklable: the sink is an actor handle)."""

    site: str  # the folder holding the patched ultralytics/, at the same path on every node
    python: str | None  # --python, the same on every node
    exp_dir: str  # the driver's experiment folder
    recipe_sha256: str  # of <dir>/recipe.yaml: a node whose <dir> holds the same file sees the driver's folder
    expected: Expected
    imgsz: int
    sink: Any  # the DriverSink actor
    store: Any = None  # a PathStore or UriStore with --storage
    data_splits: dict | None = None  # a dataset YAML's splits as the driver's ultralytics resolved them (same paths)


def node_address() -> str:
    import ray

    return ray.util.get_node_ip_address()


def sees_experiment(exp_dir: Path, recipe_sha256: str) -> bool:
    """Whether this node's ``exp_dir`` is the driver's: its ``recipe.yaml`` has the same bytes. A same-named folder
    of another experiment (a node's own ``runs/ablate/exp``) is not written into."""
    from mhsa_patch.patching.atomic import sha256

    try:
        return sha256((exp_dir / "recipe.yaml").read_bytes()) == recipe_sha256
    except OSError:
        return False


def _target(site: str, python: str | None):
    from mhsa_patch.patching.target import find_target

    target = find_target(site)
    return replace(target, python=python) if python else target


def _with_data(spec: dict, data_yaml: Path) -> dict:
    return dict(spec, train=dict(spec["train"], data=str(data_yaml)), val=dict(spec["val"], data=str(data_yaml)))


def _logs_blob(logs: Path, run: str) -> bytes | None:
    files = [f"{run}.log", f"{run}.args.json", f"{run}.raw.log"]  # the raw log: with --verbose
    present = [f for f in files if (logs / f).is_file()]
    return snapshot.pack(logs, present) if present else None


class Shipper:
    """The task's side of the child's events: each committed epoch goes to the driver (or ``--storage``) before
    the driver counts it, the other events go on as they are. A failure to ship (a newer attempt took over, the
    driver is gone) stops the child: training on without a place to keep its epochs would lose them."""

    def __init__(self, ctx: TaskContext, run: str, token: str, run_dir: Path | None, have=()):
        self.ctx, self.run, self.token, self.run_dir = ctx, run, token, run_dir
        self.have = set(have)  # snapshot checkpoints the receiver holds
        self.proc = None
        self.error: BaseException | None = None

    def on_start(self, proc) -> None:
        self.proc = proc

    def __call__(self, event: dict) -> None:
        if self.error is not None:
            return
        import ray

        try:
            if "epoch" in event and self.run_dir is not None:
                whole = self.ctx.store is not None and not self.ctx.store.merges  # a URI store: one whole archive
                found = snapshot.pack_resume(self.run_dir, have=() if whole else self.have)
                if found is not None:
                    state, blob = found
                    if self.ctx.store is not None:
                        ray.get(self.ctx.sink.current.remote(self.run, self.token))
                        self.ctx.store.put_snapshot(self.run, blob)
                        ray.get(self.ctx.sink.event.remote(self.run, self.token, event))
                    else:
                        ray.get(self.ctx.sink.put_snapshot.remote(self.run, self.token, blob, event))
                    self.have = {state["last"], state["best"]}
                    return
            self.ctx.sink.event.remote(self.run, self.token, event)  # in order, not waited for
        except Exception as e:  # noqa: BLE001 - a newer attempt, a lost driver: stop training here
            self.error = e
            if self.proc is not None and self.proc.poll() is None:
                self.proc.terminate()


def _cause(e: BaseException) -> str:
    cause = getattr(e, "cause", None) or e
    return (str(cause).strip().splitlines() or [type(cause).__name__])[-1]


def run_task(ctx: TaskContext, run, spec: dict, execute_run: Callable[..., dict]) -> dict:
    """Check this node, train (or resume) ``run`` and send it back; the child's result, or a one-line
    :class:`PatchError` naming the node."""
    import ray

    node = node_address()
    token = uuid.uuid4().hex
    ray.get(ctx.sink.started.remote(run.name, token, node))

    def refuse(msg: str) -> PatchError:
        return PatchError(f"node {node}: {msg}")

    exp = Path(ctx.exp_dir)
    try:
        target = _target(ctx.site, ctx.python)
    except PatchError as e:
        raise refuse(f"{e} (every node needs the patched ultralytics at the driver's path)") from None
    shared = sees_experiment(exp, ctx.recipe_sha256)
    with tempfile.TemporaryDirectory(prefix="mhsa-ablate-ray-") as tmp:
        local = exp if shared else Path(tmp)
        from mhsa_patch.ablate import data as datasets

        synthetic = ctx.expected.data.startswith("synthetic")
        if synthetic:  # drawn here (once per node folder), identical by seed
            ds = datasets.locate(ctx.expected.data, local, ctx.imgsz)
            datasets.write_synthetic(ds, ctx.imgsz)
            splits = datasets.synthetic_splits(ds)
        else:  # at the driver's paths, with the driver's checksum
            splits = ctx.data_splits
        problem = difference(ctx.expected, target, splits)
        if problem is not None:
            raise refuse(problem)
        if shared:
            try:
                return execute_run(target, exp, run, spec, on_event=Shipper(ctx, run.name, token, None))
            except PatchError as e:
                raise refuse(str(e)) from None

        run_dir = local / "runs" / run.name
        blob = None
        if ctx.store is not None:
            blob, warning = ctx.store.fetch(run.name)
            if warning is not None:
                ctx.sink.event.remote(run.name, token, {"warning": warning})
        from_receiver = blob is not None or ctx.store is None  # came from where the epochs will go
        if blob is None:
            blob = ray.get(ctx.sink.fetch.remote(run.name))
        have: set[str] = set()  # the snapshot checkpoints the receiver of the epochs already holds
        if blob is not None:
            snapshot.put(blob, run_dir)
            from mhsa_patch.ablate.runstate import read_state

            state = read_state(run_dir, check=False)
            if state is not None and from_receiver:
                have = {state["last"], state["best"]}
        model = local / "models" / Path(run.model).name
        model.parent.mkdir(parents=True, exist_ok=True)
        model.write_bytes(ray.get(ctx.sink.model.remote(model.name)))
        spec = _with_data(spec, ds.yaml) if synthetic else spec
        spec = dict(spec, train=dict(spec["train"], project=str(local / "runs"), model=str(model)))
        shipper = Shipper(ctx, run.name, token, run_dir, have)
        logs = local / "logs"
        try:
            result = execute_run(target, local, replace(run, model=str(model)), spec, on_event=shipper,
                                 on_start=shipper.on_start)  # fmt: skip
        except PatchError as e:
            if shipper.error is not None:
                raise refuse(_cause(shipper.error)) from None
            _send_logs(ctx, run.name, token, logs)
            raise refuse(str(e).replace(str(logs), str(exp / "logs"))) from None
        if shipper.error is not None:
            raise refuse(_cause(shipper.error))
        ray.get(ctx.sink.put_final.remote(run.name, token, snapshot.pack_folder(run_dir)))
        _send_logs(ctx, run.name, token, logs)
        return result


def _send_logs(ctx: TaskContext, run: str, token: str, logs: Path) -> None:
    import ray

    blob = _logs_blob(logs, run)
    if blob is not None:
        ray.get(ctx.sink.put_logs.remote(run, token, blob))

