"""The report's two figures: the task's primary metric per epoch of validation (``curves.png``: mAP50-95 for
detect, mask mAP50-95 for segment, ...) and that metric against cost (``tradeoff.png``).

Figures are built with matplotlib's object interface (``matplotlib.figure.Figure``, rendered by Agg): no pyplot,
so no global figure registry to leak into and no GUI backend picked. Building and saving are apart so tests can read
the plotted data off the figure before it becomes pixels. Sized for a paper column (3.5 in per panel, 8 pt text,
300 dpi), with matplotlib's bundled DejaVu Sans: nothing is looked up or downloaded.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mhsa_patch.ablate.record import RunRecord
from mhsa_patch.ablate.stats import VariantSummary
from mhsa_patch.child import metrics as task_metrics
from mhsa_patch.errors import PatchError
from mhsa_patch.patching.atomic import read_confined

# ultralytics.utils.plotting.Colors().palette, as hex (the same list in every release since 8.0), copied as data so
# the report never imports ultralytics.
ULTRALYTICS_PALETTE = (
    "#042AFF", "#0BDBEB", "#F3F3F3", "#00DFB7", "#111F68", "#FF6FDD", "#FF444F", "#CCED00", "#00F344", "#BD00FF",
    "#00B4FF", "#DD00BA", "#00FFFF", "#26C000", "#01FFB3", "#7D24FF", "#7B0068", "#FF1B6C", "#FC6D2F", "#A2FF0B",
)  # fmt: skip
# The order variants take them in: neighbours in the palette (0BDBEB, 00DFB7) are too alike for lines side by side,
# and the near-white F3F3F3 and the pale yellows vanish on a white page, so they are left out.
PICK = (0, 6, 13, 9, 18, 1, 11, 4, 17, 15, 10, 16, 3)

PANEL_IN = (3.5, 2.6)  # one panel at a two-column paper's column width
DPI = 300
STYLE = {
    "font.family": "DejaVu Sans",  # bundled with matplotlib
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "axes.linewidth": 0.6,
    "lines.linewidth": 1.2,
    "savefig.dpi": DPI,
}

MAP_COLUMN = "metrics/mAP50-95(B)"  # detect's; a segment run's curve is its (M) column, a pose run's its (P)
EPOCH_COLUMN = "epoch"
RESULTS_LIMIT = 16 * 2**20  # a results.csv is a few kB per hundred epochs; anything near this is not one


@contextlib.contextmanager
def style() -> Iterator[None]:
    """The report's matplotlib settings, for building and for saving (tick labels are made at draw time)."""
    with matplotlib.rc_context(STYLE):
        yield


def color(i: int) -> str:
    """The ``i``-th variant's colour (cycling after :data:`PICK`'s 13)."""
    return ULTRALYTICS_PALETTE[PICK[i % len(PICK)]]


@dataclass(frozen=True)
class Curve:
    """One run's validation metric (the task's primary, a fraction) per epoch, epochs numbered as in its
    ``results.csv``."""

    variant: str
    seed: int
    epochs: tuple[int, ...]
    values: tuple[float, ...]


@dataclass(frozen=True)
class Band:
    """A variant's curve: per epoch, the mean over the seeds that reached it and their min and max (fractions)."""

    variant: str
    n: int
    epochs: tuple[int, ...]
    mean: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]


class Unreadable(Exception):
    """A results.csv that cannot give a curve (missing, cut short mid-write, not ultralytics'); the reason in words."""


def parse_results(text: str, column: str = MAP_COLUMN) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Epochs and ``column`` (box mAP50-95 by default) from the text of ultralytics' ``results.csv``;
    ``Unreadable`` if it has no such data.

    Older releases pad the column names (and values) with spaces, so both are stripped. A row with another number of
    fields than the header, or a value that is not a number, means the file was caught mid-write: the whole curve
    is refused rather than drawn from a guess.
    """
    rows = list(csv.reader(io.StringIO(text)))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise Unreadable("empty")
    header = [c.strip() for c in rows[0]]
    if EPOCH_COLUMN not in header or column not in header:
        raise Unreadable(f"no {EPOCH_COLUMN!r} and {column!r} columns")
    ie, im = header.index(EPOCH_COLUMN), header.index(column)
    by_epoch: dict[int, float] = {}
    for k, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise Unreadable(f"line {k} has {len(row)} fields, the header {len(header)} (cut short?)")
        try:
            epoch, value = float(row[ie]), float(row[im])
        except ValueError:
            raise Unreadable(f"line {k} is not numbers (cut short?)") from None
        if not epoch.is_integer():
            raise Unreadable(f"line {k}: epoch {row[ie].strip()!r} is not a whole number")
        by_epoch[int(epoch)] = value  # an epoch written twice (a resume): its last validation counts
    if not by_epoch:
        raise Unreadable("no epoch yet")
    epochs = tuple(sorted(by_epoch))
    return epochs, tuple(by_epoch[e] for e in epochs)


def load_curves(
    exp_dir: Path, records: Sequence[RunRecord], *, task: str | None = None
) -> tuple[list[Curve], list[str]]:
    """Each run's curve of ``task``'s primary metric (detect: box mAP50-95) from ``exp_dir/run_dir/results.csv``,
    and one note per run skipped (missing, cut short, a link or a path leaving ``exp_dir``): a run in progress or a
    damaged one costs its line, not the report."""
    column = task_metrics.results_key(task, task_metrics.primary(task))
    curves, skipped = [], []
    for r in records:
        rel = PurePosixPath(r.run_dir)
        path = exp_dir.joinpath(*rel.parts) / "results.csv"
        try:
            if rel.is_absolute() or ".." in rel.parts:
                raise Unreadable("run_dir is not inside the experiment folder")
            if not path.parent.resolve().is_relative_to(exp_dir.resolve()):
                raise Unreadable("its folder is a link out of the experiment folder")
            text = read_confined(exp_dir, path, RESULTS_LIMIT).decode("utf-8", errors="replace")
            epochs, values = parse_results(text, column)
        except FileNotFoundError:
            skipped.append(f"{r.variant} seed {r.seed}: no {r.run_dir}/results.csv")
            continue
        except (Unreadable, PatchError, OSError) as e:
            skipped.append(f"{r.variant} seed {r.seed}: {r.run_dir}/results.csv skipped: {e}")
            continue
        curves.append(Curve(r.variant, r.seed, epochs, values))
    return curves, skipped


def bands(curves: Sequence[Curve], order: Sequence[str]) -> list[Band]:
    """One band per variant of ``order`` that has curves. Seeds of unequal length (early stopping) are averaged over
    those that reached each epoch."""
    out = []
    for v in order:
        mine = [c for c in curves if c.variant == v]
        if not mine:
            continue
        per_epoch: dict[int, list[float]] = {}
        for c in mine:
            for e, m in zip(c.epochs, c.values):
                per_epoch.setdefault(e, []).append(m)
        epochs = tuple(sorted(per_epoch))
        vals = [per_epoch[e] for e in epochs]
        out.append(
            Band(
                v,
                len(mine),
                epochs,
                tuple(math.fsum(x) / len(x) for x in vals),
                tuple(min(x) for x in vals),
                tuple(max(x) for x in vals),
            )
        )
    return out


def _axes_style(ax) -> None:
    ax.grid(True, linewidth=0.3, alpha=0.5)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def curves_figure(bands_: Sequence[Band], colors: Mapping[str, str], metric: str = "mAP50-95") -> Figure:
    """Validation ``metric`` (%) per epoch: a line per variant (mean over seeds) and, for two seeds or more, a
    min–max band (``fill_between``). Lines and bands are added in the order of ``bands_``."""
    with style():
        fig = Figure(figsize=PANEL_IN, layout="constrained")
        ax = fig.add_subplot()
        for b in bands_:
            c = colors[b.variant]
            x = list(b.epochs)
            ax.plot(x, [100 * m for m in b.mean], color=c, label=f"{b.variant} (n={b.n})")
            if b.n > 1:
                ax.fill_between(x, [100 * m for m in b.low], [100 * m for m in b.high], color=c, alpha=0.2, lw=0)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"val {metric} (%)")
        _axes_style(ax)
        if bands_:
            ax.legend(frameon=False, loc="lower right")
        else:
            ax.text(0.5, 0.5, "no results.csv yet", ha="center", va="center", transform=ax.transAxes)
    return fig


def tradeoff_figure(
    summaries: Sequence[VariantSummary], colors: Mapping[str, str], metric: str = "mAP50-95"
) -> Figure:
    """The primary metric (``metric``, %) against GFLOPs (left) and against latency (right): per variant with a
    value one point at the means, with an error bar of ± its sample standard deviation (none for a single seed)."""
    with style():
        fig = Figure(figsize=(2 * PANEL_IN[0], PANEL_IN[1]), layout="constrained")
        ax_g, ax_l = fig.subplots(1, 2, sharey=True)
        for s in summaries:
            if s.n == 0 or math.isnan(s.gflops.mean) or math.isnan(s.latency_ms.mean):
                continue  # nothing to place: the table says why
            y = 100 * s.main.mean
            yerr = None if s.main.std is None else 100 * s.main.std
            for ax, x in ((ax_g, s.gflops.mean), (ax_l, s.latency_ms.mean)):
                ax.errorbar(
                    x, y, yerr=yerr, fmt="o", ms=4, capsize=2, elinewidth=0.8, color=colors[s.variant],
                    label=f"{s.variant} (n={s.n})",
                )  # fmt: skip
                ax.annotate(s.variant, (x, y), xytext=(4, 3), textcoords="offset points", fontsize=7)
        ax_g.set_xlabel("GFLOPs (attention matmuls counted)")
        ax_l.set_xlabel("latency, batch 1 (ms)")
        ax_g.set_ylabel(f"{metric} (%)")
        for ax in (ax_g, ax_l):
            _axes_style(ax)
            ax.margins(x=0.15, y=0.15)  # room for the labels beside the points
    return fig


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes (Agg, :data:`DPI`)."""
    buf = io.BytesIO()
    with style():
        fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()

