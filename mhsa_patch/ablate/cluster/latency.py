"""Latency measured where the runs train: one Ray task, on a worker of the runs' device type, every variant.

The driver (often a head node without a GPU) cannot time a GPU model, and a timing on another kind of device says
nothing about the runs'. So the measurement child (:mod:`mhsa_patch.child.measure`: every variant built, counted
and timed at batch 1, interleaved, in one process) runs as one task asking for the runs' own resources: on a GPU
worker for GPU runs (Ray gives the task one GPU, seen as ``cuda:0``), on a CPU worker for ``--device cpu``. The
node is checked against the recipe first, as a run's is (:mod:`mhsa_patch.ablate.cluster.fingerprint`: a node with
another release or patch would time another model). The result carries the device's name (for the recipe and the
caption) and the node's address.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from mhsa_patch.ablate.cluster.resources import RunResources, uses_gpu
from mhsa_patch.errors import PatchError

RETRIES = 3  # a measurement that lost its node is measured again elsewhere


def measure_args(folder: Path, texts: dict[str, tuple[str, str]], imgsz: int, nc: int, device: str,
                 runs: int) -> list[str]:  # fmt: skip
    """The measurement child's arguments, each variant's YAML written to its own folder under ``folder`` (file
    names may repeat across scales)."""
    args: list[str] = []
    for k, (file_name, text) in texts.items():
        sub = folder / str(len(args))
        sub.mkdir()
        (sub / file_name).write_text(text, encoding="utf-8")
        args += ["--model", f"{k}={sub / file_name}"]
    return args + ["--imgsz", str(imgsz), "--nc", str(nc), "--device", device, "--runs", str(runs)]


def measure_task(site: str, python: str | None, texts: dict[str, tuple[str, str]], imgsz: int, nc: int,
                 gpu: bool, runs: int, expected=None) -> dict:  # fmt: skip
    """The body of the task: the node checked against ``expected`` (the recipe's releases and patch), then the
    measurement child on this node; its result plus ``node``."""
    from dataclasses import replace

    from mhsa_patch.ablate.cluster.fingerprint import difference
    from mhsa_patch.ablate.cluster.task import node_address
    from mhsa_patch.child.launch import run_child
    from mhsa_patch.patching.target import find_target

    node = node_address()
    try:
        target = find_target(site)
    except PatchError as e:
        raise PatchError(f"node {node}: {e} (every node needs the patched ultralytics at the driver's path)") from None
    if python:
        target = replace(target, python=python)
    if expected is not None:
        problem = difference(expected, target, None)
        if problem is not None:
            raise PatchError(f"node {node}: {problem}")
    with tempfile.TemporaryDirectory(prefix="mhsa-ablate-measure-") as tmp:
        args = measure_args(Path(tmp), texts, imgsz, nc, "cuda:0" if gpu else "cpu", runs)
        try:
            result = run_child(target, "mhsa_patch.child.measure", args, silent=True)
        except PatchError as e:  # one line, naming the node
            raise PatchError(f"node {node}: measuring the variants failed: {e}") from None
    return {**result, "node": node}


def measure_on_cluster(target, texts: dict[str, tuple[str, str]], imgsz: int, nc: int, device: str, runs: int,
                       need: RunResources, expected=None) -> dict:  # fmt: skip
    """Params, true GFLOPs and latency of every variant, measured in one task on a node of the runs' device type
    (``need``: the runs' own resources, so the task lands where a run would); a one-line :class:`PatchError`
    naming the node when it cannot."""
    import ray

    task = ray.remote(measure_task).options(**need.options(), max_retries=RETRIES, retry_exceptions=False)
    try:
        return ray.get(task.remote(str(target.site), target.python, texts, imgsz, nc, uses_gpu(device), runs,
                                   expected))  # fmt: skip
    except ray.exceptions.RayError as e:
        cause = getattr(e, "cause", None) or e
        lines = [ln for ln in str(cause).strip().splitlines() if ln.strip()] or [type(cause).__name__]
        raise PatchError(f"measuring the variants' latency on the cluster failed: {lines[-1].strip()}") from None
