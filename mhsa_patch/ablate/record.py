"""One finished run of an ablation, as one row of ``ablation.csv``: the contract between the runner and the report.

The runner fills a :class:`RunRecord` from the run's own files and the child's measurements; the report reads only
these records and each run's ``results.csv`` (for the curves).

The CSV's columns are ``variant, seed, params, gflops, latency_ms``, then the task's metric columns, then
``best_epoch, epochs, train_s, run_dir`` (:func:`columns`). The metric columns
(:data:`mhsa_patch.child.metrics.TASK_METRICS`):

- detect: ``map50, map50_95, precision, recall`` (the boxes; exactly :data:`COLUMNS`, as before tasks had columns);
- segment: the box columns, then ``mask_map50, mask_map50_95, mask_precision, mask_recall``;
- pose: the box columns, then ``pose_map50, pose_map50_95, pose_precision, pose_recall``;
- obb: ``obb_map50, obb_map50_95, obb_precision, obb_recall`` (the oriented boxes; no axis-aligned ones);
- classify: ``top1, top5``.

:func:`from_csv` recognises the task from the header. A metric the validator did not give is NaN (``nan`` in the
CSV): the report shows it as missing.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from types import MappingProxyType

from mhsa_patch.child import metrics as task_metrics

HEAD = ("variant", "seed", "params", "gflops", "latency_ms")
BOX = ("map50", "map50_95", "precision", "recall")
TAIL = ("best_epoch", "epochs", "train_s", "run_dir")
COLUMNS = HEAD + BOX + TAIL  # a detection experiment's columns
NAN = float("nan")


def columns(task: str | None = "detect") -> tuple[str, ...]:
    """The CSV columns of an experiment of ``task``."""
    return HEAD + task_metrics.columns(task) + TAIL


@dataclass(frozen=True, eq=False)
class RunRecord:
    """One run: ``variant`` as given on the command line, ``run_dir`` relative to the experiment folder.

    Metrics come from one final validation of the run's ``best.pt``; the box metrics are fields (NaN for a task
    without axis-aligned boxes: obb, classify), the task's others are in ``metrics`` (``mask_map50_95``, ...):
    :meth:`value` reads either. ``best_epoch`` is numbered as in its ``results.csv``; ``epochs`` is the epochs it
    trained (below the recipe's when it stopped early); ``params``/``gflops`` from the tool's probe (attention's
    matmuls counted); ``latency_ms`` is the median batch-1 forward at the recipe's ``imgsz``, all variants measured
    in one process.
    """

    variant: str
    seed: int
    params: int
    gflops: float
    latency_ms: float
    map50: float
    map50_95: float
    precision: float
    recall: float
    best_epoch: int
    epochs: int
    train_s: float
    run_dir: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    task: str = "detect"

    def __post_init__(self) -> None:
        object.__setattr__(self, "task", task_metrics.task_of(self.task))
        object.__setattr__(self, "metrics", MappingProxyType(dict(self.metrics)))  # frozen all the way down

    def __eq__(self, other: object) -> bool:
        """Field by field, a NaN equal to a NaN: a record read back from the CSV equals the one written."""
        if not isinstance(other, RunRecord):
            return NotImplemented

        def key(r: RunRecord) -> tuple:
            cells = [(f.name, getattr(r, f.name)) for f in fields(r) if f.name != "metrics"]
            cells += sorted(r.metrics.items())
            return tuple((k, "nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in cells)

        return key(self) == key(other)

    __hash__ = None  # type: ignore[assignment]  # equal records need not hash alike with NaN; never hashed

    def value(self, column: str) -> float:
        """A metric column's value (NaN when this record has none)."""
        if column in BOX:
            return float(getattr(self, column))
        return float(self.metrics.get(column, NAN))

    def row(self) -> list:
        """The record's CSV cells, in :func:`columns` order of its task."""
        return [self.value(c) if c in task_metrics.columns(self.task) else getattr(self, c) for c in columns(self.task)]

    @classmethod
    def from_row(cls, row: Mapping[str, str], task: str | None = None) -> RunRecord:
        """A record from one ``csv.DictReader`` row (strings), converted to each field's type; ``task`` defaults to
        the one whose columns the row has."""
        task = task_metrics.task_of(task) if task is not None else _task_of_columns(tuple(row))
        kinds = {f.name: f.type for f in fields(cls)}
        conv = {"int": int, "float": float, "str": str}
        fixed = {name: conv[kinds[name]](row[name]) for name in HEAD + TAIL}
        values = {c: float(row[c]) for c in task_metrics.columns(task)}
        box = {c: values.pop(c, NAN) for c in BOX}
        return cls(**fixed, **box, metrics=values, task=task)


def _task_of_columns(names: tuple[str, ...]) -> str:
    for task in task_metrics.TASK_METRICS:
        if names == columns(task):
            return task
    raise ValueError(f"not an ablation.csv: columns {list(names)}, expected those of a task, e.g. {list(COLUMNS)}")


def records_task(records: Sequence[RunRecord], task: str | None = None) -> str:
    """The task of ``records`` (all the same), or ``task`` (detect) when there are none."""
    tasks = {r.task for r in records}
    if len(tasks) > 1:
        raise ValueError(f"records of several tasks in one table: {sorted(tasks)}")
    return tasks.pop() if tasks else task_metrics.task_of(task)


def to_csv(records: Iterable[RunRecord], task: str | None = None) -> str:
    """The text of ``ablation.csv``: a header of the records' task's :func:`columns` (``task``'s, detect's, with no
    records), one row per record, in the order given."""
    records = list(records)
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(columns(records_task(records, task)))
    for r in records:
        w.writerow(r.row())
    return out.getvalue()


def from_csv(text: str) -> list[RunRecord]:
    """Records back from :func:`to_csv`'s text; a header that is no task's :func:`columns` is a ``ValueError``."""
    reader = csv.DictReader(io.StringIO(text))
    task = _task_of_columns(tuple(reader.fieldnames or ()))
    return [RunRecord.from_row(row, task) for row in reader]


def variants_in_order(records: Sequence[RunRecord]) -> list[str]:
    """The variants in the order they first appear (the command line's)."""
    return list(dict.fromkeys(r.variant for r in records))


def finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def headline(result: Mapping[str, object], task: str | None = None) -> str:
    """A child's result in a few words for a progress line: the task's primary metric, e.g. ``mAP50-95 0.412``
    (``mask mAP50-95 0.387`` for segment). ``task`` defaults to the result's own ``task``, else detect."""
    t = task_metrics.task_of(task if task is not None else result.get("task"))  # type: ignore[arg-type]
    column = task_metrics.primary(t)
    try:
        value = float(result.get(column, NAN))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = NAN
    return f"{LABELS[column]} {value:.3f}"


# How each metric column is named in the report and on the terminal.
LABELS = {
    "map50": "mAP50", "map50_95": "mAP50-95", "precision": "precision", "recall": "recall",
    "mask_map50": "mask mAP50", "mask_map50_95": "mask mAP50-95", "mask_precision": "mask precision",
    "mask_recall": "mask recall",
    "pose_map50": "pose mAP50", "pose_map50_95": "pose mAP50-95", "pose_precision": "pose precision",
    "pose_recall": "pose recall",
    "obb_map50": "OBB mAP50", "obb_map50_95": "OBB mAP50-95", "obb_precision": "OBB precision",
    "obb_recall": "OBB recall",
    "top1": "top-1", "top5": "top-5",
}  # fmt: skip
assert all(c in LABELS for t in task_metrics.TASK_METRICS for c in task_metrics.columns(t))
assert tuple(f.name for f in fields(RunRecord))[: len(COLUMNS)] == COLUMNS
