"""A run's metrics per task: ultralytics' validation keys (``results_dict``, ``results.csv``'s header) to the columns
of ``ablation.csv``, declared once for the child that validates (:mod:`mhsa_patch.child.train`) and the report
(:mod:`mhsa_patch.ablate.record`). Pure data and one function: imports neither torch nor ultralytics.

Every task's validator names its keys ``metrics/<name>(<kind>)``, the same from 8.0.98 to 8.4.190: ``(B)`` boxes,
``(M)`` masks (segment), ``(P)`` keypoints (pose). An OBB validator writes its oriented boxes under ``(B)`` too; here
they are ``obb_*``, so that a column's name says what it measures. A classifier has no boxes: top-1 and top-5.

The primary metric of a task is the one its Δ, p and reading use: mAP50-95 of what the task predicts (the mask,
the keypoints, the oriented box), top-1 for a classifier.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

_KINDS = (("mAP50", "map50"), ("mAP50-95", "map50_95"), ("precision", "precision"), ("recall", "recall"))


def _block(suffix: str, prefix: str) -> tuple[tuple[str, str], ...]:
    return tuple((f"metrics/{name}({suffix})", prefix + column) for name, column in _KINDS)


BOX = _block("B", "")  # the detection metrics: ablation.csv's map50, map50_95, precision, recall
TASK_METRICS: dict[str, tuple[tuple[str, str], ...]] = {  # task -> ((ultralytics key, column), ...), in CSV order
    "detect": BOX,
    "segment": BOX + _block("M", "mask_"),
    "pose": BOX + _block("P", "pose_"),
    "obb": _block("B", "obb_"),
    "classify": (("metrics/accuracy_top1", "top1"), ("metrics/accuracy_top5", "top5")),
}
PRIMARY = {"detect": "map50_95", "segment": "mask_map50_95", "pose": "pose_map50_95", "obb": "obb_map50_95",
           "classify": "top1"}  # fmt: skip


def task_of(task: str | None) -> str:
    """``task`` as a key of :data:`TASK_METRICS` (None and unknown tasks read as detect, the default)."""
    t = str(task or "detect").lower()
    return t if t in TASK_METRICS else "detect"


def columns(task: str | None) -> tuple[str, ...]:
    """The metric columns of ``task``, in CSV order."""
    return tuple(column for _, column in TASK_METRICS[task_of(task)])


def primary(task: str | None) -> str:
    return PRIMARY[task_of(task)]


def results_key(task: str | None, column: str) -> str:
    """The ultralytics key (a ``results.csv`` column) of one of ``task``'s columns."""
    return dict((c, k) for k, c in TASK_METRICS[task_of(task)])[column]


def extract(task: str | None, results: Mapping[str, object]) -> dict[str, float]:
    """Every metric column of ``task`` from a validator's ``results_dict``; NaN for a key it lacks (a value that is
    not a number counts as lacking), so a missing metric shows as missing, never as 0."""
    out = {}
    for key, column in TASK_METRICS[task_of(task)]:
        try:
            value = float(results[key])  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError):
            value = math.nan
        out[column] = value
    return out
