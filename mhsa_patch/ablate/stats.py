"""The numbers of the report: per variant, mean ± sample standard deviation over seeds, Δ against the baseline with
its 95% confidence interval, and a two-sided Welch t-test on the task's primary metric, its p adjusted for the
number of comparisons in the table (Holm), read in plain words.

A Δ is called "better" or "worse" only when Holm's adjusted p is below :data:`ALPHA`, with at least two seeds each
side; otherwise it is "within seed spread": a single seed, an adjusted p ≥ 0.05, or a test that is undefined (no
spread on either side). Welch's test rather than Student's because a variant with attention need not vary across
seeds as much as the stock model does; its confidence interval uses the same Welch–Satterthwaite degrees of freedom.
Holm because a table compares several variants with one baseline: at p < 0.05 each, five comparisons would call one
of them "better" by chance about 23% of the time; Holm's step-down keeps that below 5% for the whole table and is
never weaker than Bonferroni. The distributions come from ``scipy.stats``; nothing here is written by hand.

A value that is NaN (a validation that gave none) is left out: ``n`` counts real values.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Optional

from mhsa_patch.ablate.record import LABELS, RunRecord, records_task, variants_in_order
from mhsa_patch.child import metrics as task_metrics

ALPHA = 0.05
CONFIDENCE = 0.95

BASELINE = "baseline"
BETTER = "better"
WORSE = "worse"
WITHIN = "within seed spread"
NO_BASELINE = "no baseline"
MISSING = "missing"


@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation (``statistics.stdev``) over the ``n`` real values given (NaN left out);
    ``std`` is None for one value, ``mean`` NaN for none."""

    n: int
    mean: float
    std: Optional[float]

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        vals = [float(v) for v in values if not math.isnan(float(v))]
        if not vals:
            return cls(0, math.nan, None)
        return cls(len(vals), statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else None)


@dataclass(frozen=True)
class Welch:
    """The two-sided Welch t-test of one variant's primary metric against the baseline's, and its reading.

    ``p`` is Welch's p (None where the test is not run or is undefined; ``why`` says which, in words); ``ci95`` the
    95% confidence interval of the difference of means (variant minus baseline, fractions), with ``df`` its
    Welch–Satterthwaite degrees of freedom; ``p_holm`` the p adjusted over the ``k`` comparisons of the table
    (:func:`summarize` sets it; :func:`welch` alone is one comparison). The reading comes from ``p_holm``.
    """

    p: Optional[float]
    reading: str
    why: str
    ci95: Optional[tuple[float, float]] = None
    df: Optional[float] = None
    p_holm: Optional[float] = None
    k: int = 0


@dataclass(frozen=True)
class VariantSummary:
    """One row of the summary: a variant over its seeds. ``metrics`` holds a spread per metric column of the task,
    ``primary`` names the one Δ's test uses. ``delta`` (variant mean minus baseline mean, per quantity: ``params_m``,
    ``gflops``, ``latency_ms`` and every metric column; mAPs as fractions) is None for the baseline itself or when
    the baseline has no value yet. ``missing``: ``(seed, reason)`` of each run without a value of the primary metric
    (a failed run, a NaN)."""

    variant: str
    seeds: tuple[int, ...]
    params_m: Spread
    gflops: Spread
    latency_ms: Spread
    metrics: Mapping[str, Spread]
    primary: str
    delta: Optional[Mapping[str, float]]
    test: Welch
    missing: tuple[tuple[int, str], ...] = field(default=())

    @property
    def main(self) -> Spread:
        """The spread of the primary metric."""
        return self.metrics[self.primary]

    @property
    def n(self) -> int:
        """Seeds with a real value of the primary metric."""
        return self.main.n

    @property
    def is_baseline(self) -> bool:
        return self.test.reading == BASELINE


def _constant(values: Sequence[float]) -> bool:
    """No spread at all, allowing for the last bits of float rounding (scipy's variance of ``[0.4] * 3`` is not 0)."""
    lo, hi = min(values), max(values)
    return hi - lo <= 1e-12 * max(1.0, abs(hi), abs(lo))


def _ci_from_t(a: Sequence[float], b: Sequence[float], confidence: float) -> tuple[tuple[float, float], float]:
    """The interval from ``scipy.stats.t.ppf`` with Welch–Satterthwaite degrees of freedom: for a scipy whose
    ``ttest_ind`` result has no ``confidence_interval`` (before 1.11)."""
    from scipy import stats

    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * math.sqrt(va + vb)
    diff = statistics.fmean(a) - statistics.fmean(b)
    return (diff - half, diff + half), df


def welch(variant: Sequence[float], baseline: Sequence[float], *, alpha: float = ALPHA) -> Welch:
    """Welch's two-sided t-test of ``variant`` against ``baseline`` (the primary metric per seed; NaN left out), the
    95% confidence interval of the difference of means, and the plain-words reading of this one comparison."""
    a = [float(v) for v in variant if not math.isnan(float(v))]
    b = [float(v) for v in baseline if not math.isnan(float(v))]
    if len(a) < 2 or len(b) < 2:
        return Welch(None, WITHIN, "single seed: no spread to compare against")
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
        res = stats.ttest_ind(a, b, equal_var=False)
        p = float(res.pvalue)
        if hasattr(res, "confidence_interval"):
            interval = res.confidence_interval(confidence_level=CONFIDENCE)
            ci, df = (float(interval.low), float(interval.high)), float(res.df)
        else:
            ci, df = _ci_from_t(a, b, CONFIDENCE)
    if math.isnan(p):
        return Welch(None, WITHIN, "Welch's test is undefined on these values")
    ci95 = ci if all(math.isfinite(x) for x in ci) else None
    return _read(Welch(p, WITHIN, "", ci95, df), p, 1, alpha, statistics.fmean(a) - statistics.fmean(b))


def _read(t: Welch, p_holm: float, k: int, alpha: float, diff: float) -> Welch:
    """``t`` with its adjusted p over ``k`` comparisons and the reading that p gives, its reason in words."""
    p = t.p if t.p is not None else p_holm
    if k == 1:
        why = f"p {'<' if p < alpha else '≥'} {alpha:g}"
    elif p_holm < alpha:
        why = f"p = {p:.3g}; Holm-adjusted over {k} comparisons: {p_holm:.3g} < {alpha:g}"
    else:
        but = "; but" if p < alpha else ";"
        why = f"p = {p:.3g}{but} Holm-adjusted over {k} comparisons: {p_holm:.3g} ≥ {alpha:g}"
    reading = WITHIN if p_holm >= alpha else BETTER if diff > 0 else WORSE
    return replace(t, p_holm=p_holm, k=k, reading=reading, why=why)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of ``pvalues`` (one per comparison), in the order given: the i-th smallest p is
    multiplied by ``k - i + 1`` (i from 1), capped at 1, and never below an adjusted p ranked before it."""
    k = len(pvalues)
    out = [0.0] * k
    running = 0.0
    for rank, i in enumerate(sorted(range(k), key=lambda j: pvalues[j])):
        running = max(running, min(1.0, (k - rank) * pvalues[i]))
        out[i] = running
    return out


def _spreads(runs: Sequence[RunRecord], cols: Sequence[str]) -> dict[str, Spread]:
    return {
        "params_m": Spread.of([r.params / 1e6 for r in runs]),
        "gflops": Spread.of([r.gflops for r in runs]),
        "latency_ms": Spread.of([r.latency_ms for r in runs]),
        **{c: Spread.of([r.value(c) for r in runs]) for c in cols},
    }


def summarize(
    records: Sequence[RunRecord],
    *,
    baseline: str = "stock",
    alpha: float = ALPHA,
    task: str | None = None,
    failed: Sequence[tuple[str, int, str]] = (),
) -> tuple[VariantSummary, ...]:
    """One summary per variant, in the order the variants first appear in ``records`` (the command line's), then
    those of ``failed`` (``(variant, seed, reason)`` of runs that gave no record) that have no record at all.

    Every variant with a Welch p counts as one comparison; Holm's adjustment runs over all of them, and each reading
    comes from its adjusted p.
    """
    task = records_task(records, task)
    cols = task_metrics.columns(task)
    prim = task_metrics.primary(task)
    order = variants_in_order(records)
    order += [v for v in dict.fromkeys(f[0] for f in failed) if v not in order]
    by_variant: dict[str, list[RunRecord]] = {v: [] for v in order}
    for r in records:
        by_variant[r.variant].append(r)
    spreads = {v: _spreads(runs, cols) for v, runs in by_variant.items()}
    base = spreads.get(baseline)
    has_base = base is not None and base[prim].n > 0
    base_values = [r.value(prim) for r in by_variant.get(baseline, [])]
    rows = []
    for v, runs in by_variant.items():
        s = spreads[v]
        missing = [(r.seed, f"{LABELS[prim]} is NaN") for r in runs if math.isnan(r.value(prim))]
        missing += [(int(seed), f"failed: {reason}") for var, seed, reason in failed if var == v]
        if s[prim].n == 0:
            delta, test = None, Welch(None, MISSING, "no run with a value yet")
            if v == baseline:
                test = Welch(None, MISSING, "the baseline: no run with a value yet")
        elif v == baseline:
            delta, test = None, Welch(None, BASELINE, "the reference of every Δ")
        elif not has_base:
            delta, test = None, Welch(None, NO_BASELINE, f"the baseline {baseline!r} has no run with a value yet")
        else:
            delta = {k: s[k].mean - base[k].mean for k in s}  # type: ignore[index]
            test = welch([r.value(prim) for r in runs], base_values, alpha=alpha)
        rows.append([v, runs, s, delta, test, missing])

    tested = [row for row in rows if row[4].p is not None]
    adjusted = holm([row[4].p for row in tested])
    for row, p_holm in zip(tested, adjusted):
        row[4] = _read(row[4], p_holm, len(tested), alpha, row[3][prim])
    return tuple(
        VariantSummary(
            v, tuple(r.seed for r in runs), s["params_m"], s["gflops"], s["latency_ms"],
            {c: s[c] for c in cols}, prim, delta, test, tuple(sorted(missing)),
        )  # fmt: skip
        for v, runs, s, delta, test, missing in rows
    )
