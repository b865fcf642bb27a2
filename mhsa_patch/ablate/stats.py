"""The numbers of the report: per variant, mean ± sample standard deviation over seeds, Δ against the baseline, and
a two-sided Welch t-test on mAP50-95 read in plain words.

A Δ is called "better" or "worse" only when Welch's test gives p < :data:`ALPHA` on at least two seeds each side;
otherwise it is "within seed spread": a single seed, p ≥ 0.05, or a test that is undefined (no spread on either
side). Welch's test rather than Student's because a variant with attention need not vary across seeds as much as the
stock model does. The distribution comes from ``scipy.stats``; nothing here is written by hand.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from mhsa_patch.ablate.record import RunRecord, variants_in_order

ALPHA = 0.05

BASELINE = "baseline"
BETTER = "better"
WORSE = "worse"
WITHIN = "within seed spread"
NO_BASELINE = "no baseline"


@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation (``statistics.stdev``) over ``n`` seeds; ``std`` is None for one seed."""

    n: int
    mean: float
    std: Optional[float]

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("no values")
        vals = [float(v) for v in values]
        return cls(len(vals), statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else None)


@dataclass(frozen=True)
class Welch:
    """The two-sided Welch t-test of one variant's mAP50-95 against the baseline's, and its reading.

    ``p`` is None where the test is not run or is undefined; ``why`` says which, in words.
    """

    p: Optional[float]
    reading: str
    why: str


@dataclass(frozen=True)
class Deltas:
    """Variant mean minus baseline mean; mAPs as fractions (as in ``ablation.csv``), params in millions."""

    params_m: float
    gflops: float
    latency_ms: float
    map50: float
    map50_95: float


@dataclass(frozen=True)
class VariantSummary:
    """One row of the summary: a variant over its seeds. ``delta`` is None for the baseline itself or when the
    baseline has no run yet."""

    variant: str
    seeds: tuple[int, ...]
    params_m: Spread
    gflops: Spread
    latency_ms: Spread
    map50: Spread
    map50_95: Spread
    delta: Optional[Deltas]
    test: Welch

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def is_baseline(self) -> bool:
        return self.test.reading == BASELINE


def _constant(values: Sequence[float]) -> bool:
    """No spread at all, allowing for the last bits of float rounding (scipy's variance of ``[0.4] * 3`` is not 0)."""
    lo, hi = min(values), max(values)
    return hi - lo <= 1e-12 * max(1.0, abs(hi), abs(lo))


def welch(variant: Sequence[float], baseline: Sequence[float], *, alpha: float = ALPHA) -> Welch:
    """Welch's two-sided t-test of ``variant`` against ``baseline`` (mAP50-95 per seed) and its plain-words reading."""
    a, b = [float(v) for v in variant], [float(v) for v in baseline]
    if len(a) < 2 or len(b) < 2:
        return Welch(None, WITHIN, "single seed: no spread to compare against")
    if any(math.isnan(v) for v in a + b):
        return Welch(None, WITHIN, "a metric is NaN")
    if _constant(a) and _constant(b):
        # Both variances are zero: Welch's t divides by zero. scipy returns NaN for equal means and, for unequal ones,
        # a huge t made of rounding noise; neither is evidence. Say so rather than claim a difference.
        same = math.isclose(statistics.fmean(a), statistics.fmean(b), rel_tol=1e-12, abs_tol=1e-12)
        why = "identical values on both sides" if same else "no seed spread on either side: Welch's test is undefined"
        return Welch(None, WITHIN, why)
    from scipy import stats  # imported here: loading scipy.stats costs ~0.3 s, paid only when a test runs

    with warnings.catch_warnings():
        # "Precision loss ... nearly identical" for near-equal data: the result is checked for NaN below instead
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    if math.isnan(p):
        return Welch(None, WITHIN, "Welch's test is undefined on these values")
    if p >= alpha:
        return Welch(p, WITHIN, f"p ≥ {alpha:g}")
    diff = statistics.fmean(a) - statistics.fmean(b)
    return Welch(p, BETTER if diff > 0 else WORSE, f"p < {alpha:g}")


def _spreads(runs: Sequence[RunRecord]) -> dict[str, Spread]:
    return {
        "params_m": Spread.of([r.params / 1e6 for r in runs]),
        "gflops": Spread.of([r.gflops for r in runs]),
        "latency_ms": Spread.of([r.latency_ms for r in runs]),
        "map50": Spread.of([r.map50 for r in runs]),
        "map50_95": Spread.of([r.map50_95 for r in runs]),
    }


def summarize(
    records: Sequence[RunRecord], *, baseline: str = "stock", alpha: float = ALPHA
) -> tuple[VariantSummary, ...]:
    """One summary per variant, in the order the variants first appear in ``records`` (the command line's)."""
    by_variant: dict[str, list[RunRecord]] = {v: [] for v in variants_in_order(records)}
    for r in records:
        by_variant[r.variant].append(r)
    spreads = {v: _spreads(runs) for v, runs in by_variant.items()}
    base = spreads.get(baseline)
    base_map = [r.map50_95 for r in by_variant.get(baseline, [])]
    out = []
    for v, runs in by_variant.items():
        s = spreads[v]
        if v == baseline:
            delta, test = None, Welch(None, BASELINE, "the reference of every Δ")
        elif base is None:
            delta, test = None, Welch(None, NO_BASELINE, f"the baseline {baseline!r} has no finished run yet")
        else:
            delta = Deltas(**{k: s[k].mean - base[k].mean for k in s})
            test = welch([r.map50_95 for r in runs], base_map, alpha=alpha)
        out.append(VariantSummary(v, tuple(r.seed for r in runs), **s, delta=delta, test=test))
    return tuple(out)
