"""What one run's Ray task asks for: the run's own resources, never the driver's.

A run on a GPU (``--device 0`` and the like) asks for one GPU: Ray then sets the task's ``CUDA_VISIBLE_DEVICES`` to
it, and the run sees it as device 0. A run with ``--device cpu`` asks for none. Every run asks for its dataloader
workers' CPUs plus one for the training process itself: ``num_cpus = workers + 1``, ``workers`` being ultralytics'
training argument (``--workers N`` or ``-- workers=N``; ultralytics' default, 8, when neither is given), so that
Ray never puts more runs on a node than its cores can feed. The driver asks for nothing: it submits the tasks and
writes the experiment folder, so a head node without a GPU (the usual layout) is enough.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mhsa_patch.errors import PatchError

ULTRALYTICS_WORKERS = 8  # ultralytics' own default ``workers`` (cfg/default.yaml, every supported release)
CPU_DEVICES = ("cpu", "mps")  # Ray has no resource for Apple's GPU: an mps run asks for CPUs only


@dataclass(frozen=True)
class RunResources:
    """The resources of one run's task."""

    num_cpus: int
    num_gpus: int

    def options(self) -> dict[str, int]:
        """The keyword arguments of ``ray.remote(...)`` / ``.options(...)``."""
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}

    def describe(self) -> str:
        return f"{_count(self.num_gpus, 'GPU')} and {_count(self.num_cpus, 'CPU')}" if self.num_gpus else _count(
            self.num_cpus, "CPU"
        )


def dataloader_workers(train_args: Mapping[str, Any]) -> int:
    """The ``workers`` every run gives ultralytics (the recipe's ``train`` arguments), or ultralytics' default."""
    workers = train_args.get("workers", ULTRALYTICS_WORKERS)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise PatchError(f"workers={workers}: the dataloader workers must be a whole number, 0 or more")
    return workers


def uses_gpu(device: str) -> bool:
    """Whether runs on ``--device`` train on a CUDA GPU (``0``, ``0,1``), not on the CPU (``cpu``, ``mps``)."""
    return str(device).strip().lower() not in CPU_DEVICES


def run_resources(device: str, train_args: Mapping[str, Any]) -> RunResources:
    """One GPU for a GPU run, none for ``--device cpu``; the dataloader workers plus one CPU."""
    return RunResources(num_cpus=dataloader_workers(train_args) + 1, num_gpus=1 if uses_gpu(device) else 0)


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _node_line(node: Mapping[str, Any]) -> str:
    res = node.get("Resources") or {}
    cpus, gpus = int(res.get("CPU", 0)), int(res.get("GPU", 0))
    return f"{node.get('NodeManagerAddress', '?')}: {_count(cpus, 'CPU')}, {_count(gpus, 'GPU')}"


def unplaceable(need: RunResources, nodes: Iterable[Mapping[str, Any]]) -> str | None:
    """Why no live node of the cluster (``ray.nodes()``) can ever run one run, or None when one can.

    A task no node can hold would wait forever without a word from Ray's side of the driver: it is refused before
    anything is submitted, naming what each node has.
    """
    alive = [n for n in nodes if n.get("Alive")]
    for n in alive:
        res = n.get("Resources") or {}
        if res.get("CPU", 0) >= need.num_cpus and res.get("GPU", 0) >= need.num_gpus:
            return None
    have = "; ".join(_node_line(n) for n in alive) or "no live node"
    hint = "lower --workers" if need.num_cpus > 1 else "start a node that has them"
    if need.num_gpus and not any((n.get("Resources") or {}).get("GPU", 0) >= need.num_gpus for n in alive):
        hint = "start a worker node with a GPU (ray start --address ... --num-gpus 1), or pass --device cpu"
    return f"no node of the Ray cluster can run one run, which needs {need.describe()} ({have}); {hint}"


def runs_at_once(need: RunResources, nodes: Iterable[Mapping[str, Any]]) -> int:
    """How many runs the cluster's live nodes (``ray.nodes()``) hold at once, at least 1: what the scheduler keeps
    submitted, so that runs start in the grid's order and ``--fail-fast`` has nothing queued in Ray to take back."""
    total = 0
    for n in nodes:
        if not n.get("Alive"):
            continue
        res = n.get("Resources") or {}
        k = int(res.get("CPU", 0) // need.num_cpus) if need.num_cpus else 1 << 20
        if need.num_gpus:
            k = min(k, int(res.get("GPU", 0) // need.num_gpus))
        total += k
    return max(1, total)
