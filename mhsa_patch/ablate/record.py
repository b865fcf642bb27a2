"""One finished run of an ablation, as one row of ``ablation.csv``: the contract between the runner and the report.

The runner fills a :class:`RunRecord` from the run's own files and the child's measurements; the report reads only
these records and each run's ``results.csv`` (for the curves). The CSV's columns are exactly :data:`COLUMNS`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass, fields

COLUMNS = (
    "variant", "seed", "params", "gflops", "latency_ms", "map50", "map50_95", "precision", "recall",
    "best_epoch", "epochs", "train_s", "run_dir",
)  # fmt: skip


@dataclass(frozen=True)
class RunRecord:
    """One run: ``variant`` as given on the command line, ``run_dir`` relative to the experiment folder.

    Metrics come from one final validation of the run's ``best.pt``; ``best_epoch`` is numbered as in its
    ``results.csv``; ``params``/``gflops`` from the tool's probe (attention's matmuls counted); ``latency_ms`` is the
    median batch-1 forward at the recipe's ``imgsz``, all variants measured in one process.
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

    @classmethod
    def from_row(cls, row: dict[str, str]) -> RunRecord:
        """A record from one ``csv.DictReader`` row (strings), converted to each field's type."""
        kinds = {f.name: f.type for f in fields(cls)}
        conv = {"int": int, "float": float, "str": str}
        return cls(**{name: conv[kinds[name]](row[name]) for name in COLUMNS})


assert tuple(f.name for f in fields(RunRecord)) == COLUMNS


def to_csv(records: Iterable[RunRecord]) -> str:
    """The text of ``ablation.csv``: a header of :data:`COLUMNS`, one row per record, in the order given."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in records:
        w.writerow(astuple(r))
    return out.getvalue()


def from_csv(text: str) -> list[RunRecord]:
    """Records back from :func:`to_csv`'s text; a header other than :data:`COLUMNS` is a ``ValueError``."""
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise ValueError(f"not an ablation.csv: columns {reader.fieldnames}, expected {list(COLUMNS)}")
    return [RunRecord.from_row(row) for row in reader]


def variants_in_order(records: Sequence[RunRecord]) -> list[str]:
    """The variants in the order they first appear (the command line's order)."""
    return list(dict.fromkeys(r.variant for r in records))
