"""``ablate --ray``: each run a Ray task on an existing cluster (or a local instance with ``--ray local``).

A fixed grid of independent runs needs Ray's tasks only (``@ray.remote(num_gpus=1)``, ``ray.wait``), not Tune.
Each task runs the same child as the local backend (:func:`mhsa_patch.ablate.runner.execute_run`); Ray sets its
``CUDA_VISIBLE_DEVICES`` to the one GPU it was given. Where the worker sees ``<dir>`` (a shared filesystem, or the
driver's own machine) the run writes there; where it does not, the task runs in a temporary folder with the run's
model file and its folder so far (a resume), and sends the run folder back as a tar archive, unpacked by the driver
into ``<dir>/runs/``. The dataset must be at the same path on every worker. Resume and the recipe check are the
driver's, so they work the same.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from mhsa_patch.errors import PatchError

TOOL_ROOT = Path(__file__).resolve().parents[2]  # the folder holding mhsa_patch/ (a source checkout or site-packages)
SHIP_ENV = "MHSA_PATCH_RAY_SHIP"  # set to 1 to send run folders back even where <dir> is visible (tests)


def _require_ray():
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
        return result, _tar(local / run.run_dir)


def run_on_ray(exp, pending, address: str, emit, out, *, execute_run, finish_run, run_spec) -> None:
    """Submit every pending run as a task, record each as it finishes (``ray.wait``), stop at the first failure.
    ``execute_run``, ``finish_run``, ``run_spec``: the runner's, which calls this (imports go one way)."""

    ray = _require_ray()
    started_here = not ray.is_initialized()
    if started_here:
        env = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in (str(TOOL_ROOT), os.environ.get("PYTHONPATH")) if p)}}
        try:
            if address == "local":
                ray.init(include_dashboard=False, runtime_env=env, log_to_driver=False)
            else:
                ray.init(address=address, runtime_env=env, log_to_driver=False)
        except Exception as e:  # noqa: BLE001 - Ray's errors are long; one line names the address
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise PatchError(f"--ray {address}: cannot connect to a Ray cluster: {first}") from None
    try:
        gpu = exp.slots[0] not in ("cpu", "mps")
        task = ray.remote(num_gpus=1 if gpu else 0, num_cpus=1, max_retries=0)(remote_run)
        slot = "0" if gpu else exp.slots[0]
        refs = {}
        for r in pending:
            model_blob = Path(r.model).read_bytes()
            run_folder = exp.dir / r.run_dir
            run_blob = _tar(run_folder) if run_folder.is_dir() else None
            ref = task.remote(str(exp.target.site), exp.target.python, str(exp.dir), r, run_spec(exp, r, slot),
                              model_blob, run_blob, execute_run)  # fmt: skip
            refs[ref] = r
            emit("start", r, {"slot": "ray"})
        waiting = list(refs)
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=1)
            r = refs[done[0]]
            try:
                result, blob = ray.get(done[0])
            except Exception as e:  # noqa: BLE001 - a task's PatchError arrives wrapped in Ray's own error
                for ref in waiting:
                    ray.cancel(ref, force=True)
                cause = getattr(e, "cause", None) or e
                first = (str(cause).strip().splitlines() or [type(cause).__name__])[-1]
                raise PatchError(f"{r.name} (Ray task): {first}") from None
            if blob is not None:
                dest = exp.dir / r.run_dir
                if dest.exists():
                    shutil.rmtree(dest)
                _untar(blob, dest.parent)
            out.report = finish_run(exp, r, result)
            out.finished.append(r)
            emit("done", r, result)
    finally:
        if started_here:
            ray.shutdown()
