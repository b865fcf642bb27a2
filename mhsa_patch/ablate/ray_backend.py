"""``ablate --ray``: each run a Ray task on an existing cluster (or a local instance with ``--ray local``).

A fixed grid of independent runs needs Ray's tasks only (``@ray.remote(num_gpus=1)``, ``ray.wait``), not Tune.
Each task runs the same child as the local backend (:func:`mhsa_patch.ablate.runner.execute_run`); Ray sets its
``CUDA_VISIBLE_DEVICES`` to the one GPU it was given. Where the worker sees ``<dir>`` (a shared filesystem, or the
driver's own machine) the run writes there; where it does not, the task runs in a temporary folder with the run's
model file and its folder so far (a resume), and sends the run folder back as a tar archive (with any folder it moved
aside), unpacked by the driver beside ``<dir>/runs/<run>`` and swapped in. The dataset must be at the same path on
every worker. Resume, the recipe check and what a failure means are the driver's (the runner's scheduler, through
:class:`RayBackend`), so they work the same as on one machine.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from mhsa_patch.ablate import backends
from mhsa_patch.errors import PatchError

TOOL_ROOT = Path(__file__).resolve().parents[2]  # the folder holding mhsa_patch/ (a source checkout or site-packages)
SHIP_ENV = "MHSA_PATCH_RAY_SHIP"  # set to 1 to send run folders back even where <dir> is visible (tests)


def require_ray():
    """Ray, or a one-line refusal saying how to install it."""
    try:
        import ray
    except ImportError:
        raise PatchError("--ray needs Ray: pip install 'mhsa-patch[ray]'") from None
    return ray


def _tar(folder: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return buf.getvalue()


def _tar_runs(runs: Path, name: str) -> bytes:
    """The run's folder and the folders it moved aside (``<name>.damaged-K``), as one archive."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for p in sorted(runs.iterdir()):
            if p.name == name or p.name.startswith(f"{name}.damaged-"):
                tar.add(p, arcname=p.name)
    return buf.getvalue()


def _untar(blob: bytes, dest_parent: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        tar.extractall(dest_parent, filter="data")  # no absolute paths, links out or devices


def remote_run(site: str, python: str | None, exp_dir: str, run, spec: dict, model_blob: bytes | None,
               run_blob: bytes | None, execute_run) -> tuple[dict, bytes | None]:  # fmt: skip
    """The body of one Ray task: ``(the child's result, the run folder as a tar archive or None)``. ``execute_run``
    is the runner's (passed in, pickled by reference: this module never imports the runner that imports it)."""
    from mhsa_patch.patching.target import find_target

    target = find_target(site)
    if python:
        from dataclasses import replace

        target = replace(target, python=python)
    exp = Path(exp_dir)
    if exp.is_dir() and not os.environ.get(SHIP_ENV):
        return execute_run(target, exp, run, spec), None
    with tempfile.TemporaryDirectory(prefix="mhsa-ablate-ray-") as tmp:
        local = Path(tmp)
        (local / "runs").mkdir()
        model = local / "models" / Path(run.model).name
        model.parent.mkdir()
        model.write_bytes(model_blob or b"")
        if run_blob:
            _untar(run_blob, local / "runs")
        spec = dict(spec, train=dict(spec["train"], project=str(local / "runs")))
        from dataclasses import replace

        result = execute_run(target, local, replace(run, model=str(model)), spec)
        return result, _tar_runs(local / "runs", run.name)


def task_options(use_gpu: bool) -> dict:
    """What each run's task asks Ray for: one GPU (Ray then sets the task's ``CUDA_VISIBLE_DEVICES`` to it) or, on
    CPUs, one CPU; no retry by Ray itself (the runner's scheduler decides that)."""
    return {"num_gpus": 1 if use_gpu else 0, "num_cpus": 1, "max_retries": 0}


def _receive(blob: bytes, runs_dir: Path, name: str) -> None:
    """Put a task's returned run folder (and any ``<name>.damaged-K`` it moved aside) into ``runs_dir``: unpacked
    beside it first, then swapped in by renames, so that a driver killed while unpacking leaves its own copy whole."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=runs_dir, prefix=f".{name}.incoming-"))
    _untar(blob, staging)
    for entry in sorted(staging.iterdir()):
        if entry.name == name:
            dest = runs_dir / name
            old = None
            if dest.exists():
                old = runs_dir / f".{name}.replaced-{os.getpid()}"
                os.rename(dest, old)
            os.rename(entry, dest)
            if old is not None:  # superseded: the task started from an archive of it, and sent back all it made
                shutil.rmtree(old)
        elif entry.name.startswith(f"{name}.damaged-"):
            k = 1
            while (runs_dir / f"{name}.damaged-{k}").exists():
                k += 1
            os.rename(entry, runs_dir / f"{name}.damaged-{k}")
    shutil.rmtree(staging)


class RayBackend:
    """The runner's backend interface (:mod:`mhsa_patch.ablate.backends`) on Ray: ``start`` submits the run's task
    (the scheduler keeps at most ``capacity`` going: the cluster's GPUs, or its CPUs); ``events`` waits with
    ``ray.wait``; a failure is the task's one line, worth another try only where Ray lost the worker or its node.
    ``execute_run`` and ``run_spec``: the runner's, which makes this (imports go one way)."""

    def __init__(self, exp, address: str, *, execute_run, run_spec):
        self.exp, self.execute_run, self.run_spec = exp, execute_run, run_spec
        ray = self.ray = require_ray()
        self.started_here = not ray.is_initialized()
        if self.started_here:
            path = os.pathsep.join(p for p in (str(TOOL_ROOT), os.environ.get("PYTHONPATH")) if p)
            env = {"env_vars": {"PYTHONPATH": path}}
            try:
                if address == "local":
                    ray.init(include_dashboard=False, runtime_env=env, log_to_driver=False)
                else:
                    ray.init(address=address, runtime_env=env, log_to_driver=False)
            except Exception as e:  # noqa: BLE001 - Ray's errors are long; one line names the address
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise PatchError(f"--ray {address}: cannot connect to a Ray cluster: {first}") from None
        resources = ray.cluster_resources()
        explicit_gpu = not exp.device_auto and exp.slots[0] not in ("cpu", "mps")
        self.gpu = explicit_gpu or (exp.device_auto and resources.get("GPU", 0) > 0)
        self.capacity = max(1, int(resources.get("GPU" if self.gpu else "CPU", 1)))
        self.task = ray.remote(**task_options(self.gpu))(remote_run)
        self.refs: dict = {}
        self.ready: list = []

    def start(self, r) -> None:
        exp = self.exp
        spec = self.run_spec(exp, r, "0" if self.gpu else "cpu")
        spec["device"] = "a Ray GPU" if self.gpu else "a Ray CPU"
        run_folder = exp.dir / r.run_dir
        run_blob = _tar(run_folder) if run_folder.is_dir() else None
        ref = self.task.remote(str(exp.target.site), exp.target.python, str(exp.dir), r, spec,
                               Path(r.model).read_bytes(), run_blob, self.execute_run)  # fmt: skip
        self.refs[ref] = r
        self.ready.append(backends.Started(r, "ray"))

    def events(self, timeout: float) -> list:
        out, self.ready = self.ready, []
        if not self.refs:
            return out
        done, _ = self.ray.wait(list(self.refs), num_returns=len(self.refs), timeout=0 if out else timeout)
        for ref in done:
            r = self.refs.pop(ref)
            try:
                result, blob = self.ray.get(ref)
            except Exception as e:  # noqa: BLE001 - a task's PatchError arrives wrapped in Ray's own error
                cause = getattr(e, "cause", None) or e
                first = (str(cause).strip().splitlines() or [type(cause).__name__])[-1]
                lost = not isinstance(e, (self.ray.exceptions.RayTaskError, self.ray.exceptions.TaskCancelledError))
                log = self.exp.log(r)
                out.append(backends.Failed(r, f"(Ray task) {first}", str(log) if log.is_file() else None, lost))
                continue
            if blob is not None:
                try:
                    _receive(blob, self.exp.dir / "runs", r.name)
                except (OSError, tarfile.TarError) as e:
                    out.append(backends.Failed(r, f"its run folder came back but could not be unpacked: {e}"))
                    continue
            out.append(backends.Finished(r, result))
        return out

    def stop(self) -> None:
        for ref in list(self.refs):
            self.ray.cancel(ref, force=True)

    def close(self) -> None:
        if self.started_here:
            self.ray.shutdown()
