"""ablate's report on constructed runs: the statistics and their reading, the CSV, the three summaries, the plotted
data against the results.csv files, the PNGs. Fast: no training, records and results.csv written by hand."""

from __future__ import annotations

import json
import math
import re
import shutil
import statistics
import struct
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from scipy import stats as sps

from mhsa_patch.ablate import plots
from mhsa_patch.ablate.record import COLUMNS, RunRecord, from_csv
from mhsa_patch.ablate.report import FILES, write_report
from mhsa_patch.ablate.stats import BASELINE, BETTER, NO_BASELINE, WITHIN, WORSE, Spread, holm, summarize, welch
from mhsa_patch.errors import PatchError

from helpers import assert_imports_neither_torch_nor_ultralytics

RECIPE = {
    "data": "/home/someone/datasets/my_data.yaml",
    "epochs": 3,
    "imgsz": 640,
    "batch": 16,
    "weights": None,
    "ultralytics": "8.4.190",
    "torch": "2.14.1",
    "device": "0",
    "device_name": "NVIDIA H100 80GB HBM3",
    "train": {"epochs": 3, "imgsz": 640, "batch": 16, "deterministic": True},
    "extra": {"lr0": 0.005},
}

# per variant: (params, gflops, latency per seed, map50 per seed, map50_95 per seed)
RUNS = {
    "stock": (3_157_200, 8.9, [12.1, 12.4, 12.2], [0.500, 0.510, 0.505], [0.300, 0.310, 0.305]),
    "MHSA": (3_412_800, 9.7, [13.0, 13.3, 13.1], [0.560, 0.570, 0.565], [0.350, 0.360, 0.355]),
    "BoT3": (3_300_000, 9.4, [12.9, 12.8, 13.0], [0.500, 0.530, 0.490], [0.296, 0.318, 0.301]),
}


def record(variant: str, seed: int, params=1_000_000, gflops=1.0, latency=1.0, map50=0.5, map50_95=0.3) -> RunRecord:
    return RunRecord(
        variant, seed, params, gflops, latency, map50, map50_95, 0.6, 0.5, 3, 3, 10.5, f"runs/{variant}-s{seed}"
    )


def records(runs=RUNS) -> list[RunRecord]:
    return [
        record(v, s, p, g, lat[s], m50[s], m[s])
        for v, (p, g, lat, m50, m) in runs.items()
        for s in range(len(m))
    ]


HEADER = (
    "epoch,time,train/box_loss,metrics/precision(B),metrics/recall(B),metrics/mAP50(B),metrics/mAP50-95(B),val/box_loss"
)


def write_results(exp: Path, rec: RunRecord, values: list[float], *, header: str = HEADER, pad: bool = False) -> Path:
    """A results.csv as ultralytics writes it (epochs from 1); ``pad``: the padded columns of 8.0-era releases."""
    folder = exp / rec.run_dir
    folder.mkdir(parents=True, exist_ok=True)
    cols = header.split(",")
    im = cols.index("metrics/mAP50-95(B)")
    lines = [",".join(f"{c:>23}" for c in cols) if pad else header]
    for e, v in enumerate(values, start=1):
        row = [str(e), f"{10.0 * e}"] + ["0.5"] * (len(cols) - 2)
        row[im] = repr(v)
        lines.append(",".join(f"{c:>23}" for c in row) if pad else ",".join(row))
    path = folder / "results.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


# -- statistics against values derived by hand ----------------------------------------------------------------------
#
# The oracle below is written from the textbook formulas, not from scipy: sample means and variances by their sums,
# Welch's t and its Welch–Satterthwaite degrees of freedom, Student's pooled t, and the t distribution from its
# density (Simpson's rule on the integral, a quantile by bisection). The tool must agree with it to many digits on
# constructed numbers, including unequal variances and unequal n, where Welch's and Student's answers differ.


def _mean(x):
    return sum(x) / len(x)


def _var(x):
    m = _mean(x)
    return sum((v - m) ** 2 for v in x) / (len(x) - 1)


def t_pdf(u: float, df: float) -> float:
    """Student's t density with ``df`` degrees of freedom."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    return c * (1 + u * u / df) ** (-(df + 1) / 2)


def t_cdf(x: float, df: float, steps: int = 4000) -> float:
    """P(T <= x): 1/2 plus Simpson's rule on the density from 0 to x."""
    a = abs(x)
    h = a / steps
    area = t_pdf(0, df) + t_pdf(a, df) + sum((4 if k % 2 else 2) * t_pdf(k * h, df) for k in range(1, steps))
    half = area * h / 3
    return 0.5 + half if x >= 0 else 0.5 - half


def t_ppf(q: float, df: float) -> float:
    """The ``q`` quantile (q > 1/2) by Newton's method on :func:`t_cdf`, from the normal's 1.96 (q = 0.975)."""
    x = 2.0
    for _ in range(50):
        step = (t_cdf(x, df) - q) / t_pdf(x, df)
        x -= step
        if abs(step) < 1e-13 * x:
            break
    return x


def welch_by_hand(a, b) -> tuple[float, tuple[float, float], float]:
    """Welch's two-sided p, the 95% interval of mean(a) - mean(b), and the Welch–Satterthwaite df."""
    va, vb = _var(a) / len(a), _var(b) / len(b)
    se = math.sqrt(va + vb)
    d = _mean(a) - _mean(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    p = 2 * (1 - t_cdf(abs(d / se), df))
    half = t_ppf(0.975, df) * se
    return p, (d - half, d + half), df


def student_by_hand(a, b) -> float:
    """Student's two-sided p (pooled variance, n_a + n_b - 2 df): what Welch's test must not be."""
    na, nb = len(a), len(b)
    pooled = ((na - 1) * _var(a) + (nb - 1) * _var(b)) / (na + nb - 2)
    t = (_mean(a) - _mean(b)) / math.sqrt(pooled * (1 / na + 1 / nb))
    return 2 * (1 - t_cdf(abs(t), na + nb - 2))


def test_the_oracle_knows_the_t_tables():
    # printed t tables: t(0.975) for 1, 2, 4 and 10 df
    for df, t in ((1, 12.706), (2, 4.303), (4, 2.776), (10, 2.228)):
        assert t_ppf(0.975, df) == pytest.approx(t, abs=5e-4)


# Tight seeds (6) against a baseline whose 3 seeds spread widely: Student's pooled test calls it "better"
# (p ~ 0.003), Welch's test, which keeps each side's own variance, does not (p ~ 0.09, df ~ 2).
TIGHT = [0.402, 0.405, 0.399, 0.404, 0.401, 0.403]
WIDE = [0.32, 0.38, 0.35]


def test_welch_p_interval_and_df_equal_the_hand_derivation_with_unequal_variances_and_n():
    t = welch(TIGHT, WIDE)
    p, ci, df = welch_by_hand(TIGHT, WIDE)
    assert t.p == pytest.approx(p, rel=1e-7) and t.df == pytest.approx(df, rel=1e-12)
    assert t.ci95 == pytest.approx(ci, rel=1e-7)
    assert 2.0 < df < 2.05 and 0.05 < p < 0.15 and t.reading == WITHIN
    assert student_by_hand(TIGHT, WIDE) < 0.005  # Student's answer, which the tool must not give
    # reversed: the same p, the interval mirrored
    r = welch(WIDE, TIGHT)
    assert r.p == pytest.approx(p, rel=1e-7) and r.ci95 == pytest.approx((-ci[1], -ci[0]), rel=1e-7)


def test_welch_at_two_degrees_of_freedom_in_closed_form():
    """One side without spread: the Welch–Satterthwaite df is exactly n - 1 of the other side (2 here), where the
    t distribution has a closed form: P(|T| > t) = 1 - t / sqrt(2 + t^2), t(0.975) = 0.95 sqrt(2 / (1 - 0.95^2))."""
    a, b = [0.40, 0.44, 0.42], [0.30, 0.30, 0.30, 0.30]
    se = math.sqrt(((0.02**2 + 0.02**2) / 2) / 3)
    t_stat = 0.12 / se
    t = welch(a, b)
    assert t.df == pytest.approx(2.0, rel=1e-12)
    assert t.p == pytest.approx(1 - t_stat / math.sqrt(2 + t_stat**2), rel=1e-9)
    half = 0.95 * math.sqrt(2 / (1 - 0.95**2)) * se
    assert t.ci95 == pytest.approx((0.12 - half, 0.12 + half), rel=1e-9)
    assert t.reading == BETTER and student_by_hand(a, b) < t.p / 10  # Student's 5 df would overstate it


def test_the_interval_through_t_ppf_equals_scipys_own_and_the_hand_derivation():
    """The path for a scipy whose ttest_ind result has no confidence_interval (before 1.11)."""
    from mhsa_patch.ablate.stats import _ci_from_t

    for a, b in ((TIGHT, WIDE), (RUNS["BoT3"][4], RUNS["stock"][4]), ([0.31, 0.33, 0.325], [0.3, 0.312, 0.305, 0.296])):
        ci, df = _ci_from_t(a, b, 0.95)
        _, hand, hand_df = welch_by_hand(a, b)
        assert ci == pytest.approx(hand, rel=1e-7) and df == pytest.approx(hand_df, rel=1e-12)
        assert ci == pytest.approx(welch(a, b).ci95, rel=1e-12)


def test_holm_by_hand():
    # sorted 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> raised to 0.06 (never below a
    # smaller p's adjusted value)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # capped at 1
    assert holm([0.02]) == [0.02] and holm([]) == []
    assert holm([0.01, 0.01, 0.04]) == pytest.approx([0.03, 0.03, 0.04])  # ties


# A table of three comparisons: MHSA clearly better; BoT3 (5 tight seeds) and MHSA@P4 (3 seeds) each below 0.05
# alone, neither after Holm's adjustment over the three.
HOLM_TABLE = {
    "stock": [0.300, 0.312, 0.305, 0.296],
    "MHSA": [0.352, 0.361, 0.357],
    "BoT3": [0.312, 0.316, 0.319, 0.314, 0.317],
    "MHSA@P4": [0.313, 0.330, 0.325],
}


def test_the_reading_comes_from_holms_p_over_every_comparison_of_the_table():
    recs = [record(v, s, map50_95=m) for v, values in HOLM_TABLE.items() for s, m in enumerate(values)]
    s = {v.variant: v for v in summarize(recs)}
    base = HOLM_TABLE["stock"]
    raw = {v: welch_by_hand(HOLM_TABLE[v], base) for v in ("MHSA", "BoT3", "MHSA@P4")}
    for v, (p, ci, df) in raw.items():
        assert s[v].test.p == pytest.approx(p, rel=1e-7) and s[v].test.ci95 == pytest.approx(ci, rel=1e-7)
        assert s[v].test.df == pytest.approx(df, rel=1e-12) and s[v].test.k == 3
    p_m, p_b, p_4 = raw["MHSA"][0], raw["BoT3"][0], raw["MHSA@P4"][0]
    assert p_m < p_b < p_4 < 0.05  # raw: all three below 0.05
    # Holm by hand: 3 p_m, then 2 p_b, then p_4 raised to 2 p_b (the step-down never decreases)
    assert s["MHSA"].test.p_holm == pytest.approx(3 * p_m, rel=1e-7)
    assert s["BoT3"].test.p_holm == pytest.approx(2 * p_b, rel=1e-7) and 2 * p_b > 0.05
    assert s["MHSA@P4"].test.p_holm == pytest.approx(2 * p_b, rel=1e-7)
    assert [s[v].test.reading for v in HOLM_TABLE] == [BASELINE, BETTER, WITHIN, WITHIN]
    assert "; but Holm-adjusted over 3 comparisons" in s["BoT3"].test.why
    # Student's test would call BoT3 better even after the adjustment: Welch's is the one used
    assert 2 * student_by_hand(HOLM_TABLE["BoT3"], base) < 0.05


# -- statistics ----------------------------------------------------------------------------------------------------


def test_clear_improvement_with_three_seeds_is_better_with_scipys_p():
    a, b = [0.350, 0.360, 0.355], [0.300, 0.310, 0.305]
    t = welch(a, b)
    expected = sps.ttest_ind(a, b, equal_var=False).pvalue
    assert t.reading == BETTER and t.p == pytest.approx(expected, rel=1e-12) and t.p < 0.05
    assert welch(b, a).reading == WORSE and welch(b, a).p == pytest.approx(expected, rel=1e-12)


def test_overlapping_seeds_are_within_seed_spread():
    a, b = [0.296, 0.318, 0.301], [0.300, 0.310, 0.305]
    t = welch(a, b)
    assert t.reading == WITHIN and t.p == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue) and t.p >= 0.05


def test_a_single_seed_is_within_seed_spread_however_large_the_gap():
    for a, b in (([0.9], [0.1, 0.11, 0.12]), ([0.9, 0.91], [0.1]), ([0.9], [0.1])):
        t = welch(a, b)
        assert (t.p, t.reading) == (None, WITHIN) and "single seed" in t.why


def test_no_spread_on_either_side_is_within_seed_spread_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy's "precision loss" or a NaN mean must not leak out
        same = welch([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
        noise = welch([0.1 + 0.2] * 3, [0.3, 0.3, 0.3])  # equal up to the last bit: scipy says p=0.23 from noise
        apart = welch([0.5, 0.5, 0.5], [0.4, 0.4, 0.4])  # scipy: t ~ 1e15 from rounding noise, p ~ 1e-31
        nan = welch([float("nan"), 0.5], [0.4, 0.41])
    assert (same.p, same.reading) == (None, WITHIN) and "identical" in same.why
    assert (noise.p, noise.reading) == (None, WITHIN)
    assert (apart.p, apart.reading) == (None, WITHIN) and "undefined" in apart.why
    assert (nan.p, nan.reading) == (None, WITHIN)
    # one side constant, the other not: Welch's test is defined (that is what it is for) and scipy gives it
    one = welch([0.5, 0.5, 0.5], [0.40, 0.41, 0.40])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's "precision loss" on the constant side
        expected = sps.ttest_ind([0.5] * 3, [0.40, 0.41, 0.40], equal_var=False).pvalue
    assert one.reading == BETTER and one.p == pytest.approx(expected)


def test_summary_means_stds_and_deltas():
    s = {v.variant: v for v in summarize(records())}
    assert list(s) == ["stock", "MHSA", "BoT3"]  # the order of first appearance
    m = s["MHSA"]
    assert m.seeds == (0, 1, 2) and m.n == 3
    assert m.main is m.metrics["map50_95"] and m.primary == "map50_95"
    assert m.main.mean == pytest.approx(0.355) and m.main.std == pytest.approx(0.005)
    assert m.metrics["map50"].std == pytest.approx(statistics.stdev([0.560, 0.570, 0.565]))
    assert m.latency_ms.mean == pytest.approx(statistics.fmean([13.0, 13.3, 13.1]))
    assert m.params_m.mean == pytest.approx(3.4128) and m.params_m.std == 0
    assert m.delta["map50_95"] == pytest.approx(0.05) and m.delta["map50"] == pytest.approx(0.06)
    assert m.delta["gflops"] == pytest.approx(0.8) and m.delta["params_m"] == pytest.approx(0.2556)
    assert m.test.reading == BETTER
    assert s["BoT3"].test.reading == WITHIN
    assert s["stock"].test.reading == BASELINE and s["stock"].delta is None and s["stock"].test.p is None
    assert Spread.of([0.4]) == Spread(1, 0.4, None)


def test_baseline_missing_and_single_seed_variants():
    recs = [record("MHSA", 0, map50_95=0.4), record("BoT3", 0, map50_95=0.3), record("BoT3", 1, map50_95=0.31)]
    s = summarize(recs)
    assert [v.test.reading for v in s] == [NO_BASELINE, NO_BASELINE]
    assert all(v.delta is None and v.test.p is None for v in s)
    assert s[0].main == Spread(1, 0.4, None)


# -- the files -----------------------------------------------------------------------------------------------------


@pytest.fixture
def experiment(tmp_path) -> tuple[Path, list[RunRecord], dict]:
    """A finished 3 x 3 experiment: records and per-run results.csv (3 epochs) written by hand."""
    exp = tmp_path / "exp"
    exp.mkdir()
    recs = records()
    curves = {}
    for i, r in enumerate(recs):
        vals = [round(r.map50_95 * e / 3 + 0.001 * i, 6) for e in (1, 2, 3)]
        write_results(exp, r, vals, pad=(i % 2 == 1))  # old padded headers and current ones mixed
        curves[(r.variant, r.seed)] = vals
    return exp, recs, curves


def test_report_writes_every_file_and_the_csv_round_trips(experiment):
    exp, recs, _ = experiment
    rep = write_report(exp, recs, RECIPE)
    assert rep.files == [exp / f for f in FILES] and all(p.is_file() for p in rep.files)
    text = (exp / "ablation.csv").read_text()
    assert text.splitlines()[0] == ",".join(COLUMNS)
    assert from_csv(text) == recs  # every field, in the given order
    assert not [p for p in exp.iterdir() if p.name.startswith(".mhsa-patch-")]  # no temporary left
    assert rep.notes == ()


def test_a_planted_link_refuses_the_report_before_any_write(experiment, tmp_path):
    exp, recs, _ = experiment
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (exp / "summary.json").symlink_to(victim)
    with pytest.raises(PatchError, match="symbolic link"):
        write_report(exp, recs, RECIPE)
    assert victim.read_text() == "keep" and not (exp / "ablation.csv").exists()


def test_summary_md_json_and_terminal_table(experiment):
    exp, recs, _ = experiment
    rep = write_report(exp, recs, RECIPE)
    md = (exp / "summary.md").read_text()
    rows = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert rows[0].startswith("| variant | n | params (M) | GFLOPs | latency (ms) | mAP50 (%) | mAP50-95 (%) |")
    assert rows[1] == (
        "| stock | 3 | 3.16 | 8.90 | 12.2 ± 0.2 | 50.5 ± 0.5 | 30.5 ± 0.5 | — | — | — | baseline |"
    )
    p, (lo, hi), df = welch_by_hand(RUNS["MHSA"][4], RUNS["stock"][4])
    assert p < 0.001 and df == pytest.approx(4)  # equal variances, equal n: 2 (n - 1)
    assert (round(100 * lo, 1), round(100 * hi, 1)) == (3.9, 6.1)
    assert rows[2] == (
        "| MHSA | 3 | 3.41 | 9.70 | 13.1 ± 0.2 | 56.5 ± 0.5 | 35.5 ± 0.5 | +5.0 | [3.9, 6.1] | <0.001 | better |"
    )
    assert rows[3].endswith("| +0.0 | [-2.4, 2.4] | 1.000 | within seed spread |")
    assert "Holm-adjusted over the 2 comparisons of the table" in md and "95% confidence interval" in md
    assert "on the val split" in md
    for words in ("data my_data.yaml", "3 epochs", "imgsz 640", "batch 16", "from scratch", "lr0=0.005",
                  "ultralytics 8.4.190, torch 2.14.1", "device 0 (NVIDIA H100 80GB HBM3)"):  # fmt: skip
        assert words in md, words
    assert "/home/someone" not in md  # the data file's name only: a caption is for the paper's readers

    doc = json.loads((exp / "summary.json").read_text())
    assert doc["baseline"] == "stock" and doc["has_baseline"] and doc["runs"] == 9
    assert doc["recipe"]["data"] == RECIPE["data"] and doc["recipe"]["weights"] is None
    v = {d["variant"]: d for d in doc["variants"]}
    assert doc["task"] == "detect" and doc["metric"] == "map50_95" and doc["split"] == "val"
    assert doc["comparisons"] == 2 and doc["failed"] == [] and doc["stopped_early"] == []
    assert v["MHSA"]["map50_95"]["mean"] == pytest.approx(0.355) and v["MHSA"]["p"] == pytest.approx(p)
    assert v["MHSA"]["p_holm"] == pytest.approx(2 * p)  # the smaller of two p-values, times 2
    assert v["MHSA"]["ci95"] == pytest.approx([lo, hi]) and v["MHSA"]["df"] == pytest.approx(df)
    assert v["MHSA"]["delta"]["map50_95"] == pytest.approx(0.05) and v["stock"]["delta"] is None
    assert v["MHSA"]["delta"]["map50"] == pytest.approx(0.06)  # the Δs the table leaves out are here
    assert v["BoT3"]["reading"] == WITHIN and v["BoT3"]["p_holm"] == pytest.approx(1.0)
    assert v["stock"]["p"] is None and v["stock"]["p_holm"] is None and v["stock"]["ci95"] is None

    console = Console(record=True, width=220)
    console.print(rep.table)
    shown = console.export_text()
    assert "MHSA" in shown and "35.5 ± 0.5" in shown and "better" in shown and "from scratch" in shown


def _unescaped(text: str, ch: str) -> list[int]:
    return [m.start() for m in re.finditer(r"(?<!\\)" + re.escape(ch), text)]


def _odd_experiment(exp: Path) -> None:
    """The 3 x 3 experiment plus a one-seed variant and a recipe full of LaTeX's special characters."""
    odd = [record("yaml:my_model_v2.yaml", 0, map50_95=0.3)]  # underscores in a variant, one seed
    recipe = dict(RECIPE, weights="/w/yolov8n_best.pt", data="data_&_more%~.yaml", device="cpu", device_name="cpu")
    write_report(exp, records() + odd, recipe)


def test_summary_tex_is_booktabs_escaped_and_balanced(tmp_path):
    _odd_experiment(tmp_path)
    tex = (tmp_path / "summary.tex").read_text()
    lines = tex.splitlines()
    order = [lines.index(k) for k in ("\\toprule", "\\midrule", "\\bottomrule")]
    assert order == sorted(order)
    assert lines[1] == "\\begin{table*}[t]" and lines[-1] == "\\end{table*}"
    assert "\\caption{" in tex and "\\label{tab:ablation}" in tex
    head, body = lines[order[0] + 1 : order[1]], lines[order[1] + 1 : order[2]]
    assert len(head) == 2 and len(body) == 4 and all(ln.endswith(" \\\\") for ln in head + body)
    cols = re.search(r"\\begin\{tabular\}\{(\w+)\}", tex).group(1)
    assert len(cols) == 11 and all(ln.count(" & ") == len(cols) - 1 for ln in head + body)
    assert body[1] == (
        "MHSA & 3 & 3.41 & 9.70 & $13.1 \\pm 0.2$ & $56.5 \\pm 0.5$ & $35.5 \\pm 0.5$ & $+5.0$ & $[3.9, 6.1]$"
        " & $<$0.001 & better \\\\"
    )
    assert body[3] == (
        "yaml:my\\_model\\_v2.yaml & 1 & 1.00 & 1.00 & 1.00 & 50.0 & 30.0 & $-0.5$ & --- & ---"
        " & within seed spread \\\\"
    )
    assert "$p_{\\mathrm{Holm}}$" in head[0] and "95\\% CI" in head[0]
    assert "pretrained from yolov8n\\_best.pt" in tex and "data\\_\\&\\_more\\%\\textasciitilde{}.yaml" in tex
    assert "device cpu." in tex  # device_name repeats the device: said once
    # no unescaped special character: the only raw ones are the markup this writer puts there itself
    assert not _unescaped(tex.replace("$p_{\\mathrm{Holm}}$", "$p$"), "_")  # the one subscript is math
    assert not _unescaped(tex.split("\n", 1)[1], "%") and not _unescaped(tex, "~")
    assert all(ln.count("&") == ln.count(" & ") + ln.count("\\&") for ln in lines)
    depth = 0
    for m in re.finditer(r"(?<!\\)[{}]", tex):
        depth += 1 if m.group() == "{" else -1
        assert depth >= 0
    assert depth == 0
    assert all(ln.count("$") % 2 == 0 for ln in lines) and not set("±Δ—≥") & set(tex)


def _pdflatex(folder: Path) -> str:
    """Compile ``summary.tex`` in ``folder`` inside a two-column page of a CVPR/IEEE paper; pdflatex's log."""
    doc = (
        "\\documentclass[twocolumn]{article}\n\\usepackage[textwidth=6.875in]{geometry}\n\\usepackage{booktabs}\n"
        "\\begin{document}\nTable~\\ref{tab:ablation}.\n\\input{summary.tex}\n\\end{document}\n"
    )
    (folder / "paper.tex").write_text(doc)
    run = ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", "paper.tex"]
    r = subprocess.run(run, cwd=folder, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:]
    assert (folder / "paper.pdf").read_bytes()[:5] == b"%PDF-"
    return r.stdout


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no pdflatex here (apt install texlive-latex-recommended)")
def test_summary_tex_compiles_with_pdflatex_and_fits_a_two_column_page(tmp_path):
    (tmp_path / "odd").mkdir()
    _odd_experiment(tmp_path / "odd")  # every special character escaped: it compiles
    _pdflatex(tmp_path / "odd")
    runs = dict(RUNS, **{"MHSA@P3+P4+P5": RUNS["MHSA"], "stock:s": RUNS["BoT3"]})
    write_report(tmp_path, records(runs), RECIPE)
    assert "Overfull \\hbox" not in _pdflatex(tmp_path)  # five variants with their usual names fit the text width
    seg = tmp_path / "segment"  # the widest headers: mAP50-95 twice, box and mask on the units line
    seg.mkdir()
    masks = {"mask_map50": 0.5, "mask_map50_95": 0.3, "mask_precision": 0.6, "mask_recall": 0.5}
    recs = [RunRecord(*[getattr(r, f) for f in COLUMNS], metrics=dict(masks, mask_map50_95=r.map50_95 - 0.05),
                      task="segment") for r in records(runs)]  # fmt: skip
    write_report(seg, recs, dict(RECIPE, task="segment"))
    assert "Overfull \\hbox" not in _pdflatex(seg)


def test_partial_reports_one_run_and_no_baseline(tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    one = [record("MHSA", 0, map50_95=0.4)]
    write_results(exp, one[0], [0.1, 0.4])
    rep = write_report(exp, one, dict(RECIPE, weights="yolov8n.pt"))
    assert [p.name for p in rep.files] == list(FILES)
    assert any("baseline 'stock' has no finished run yet" in n for n in rep.notes)
    md = (exp / "summary.md").read_text()
    assert "| MHSA | 1 | 1.00 | 1.00 | 1.00 | 50.0 | 40.0 | — | — | — | no baseline |" in md
    assert "has no finished run yet" in md and "pretrained from yolov8n.pt" in md
    tex = (exp / "summary.tex").read_text()
    assert "& --- & --- & --- & no baseline \\\\" in tex and "no finished run yet" in tex
    doc = json.loads((exp / "summary.json").read_text())
    assert doc["has_baseline"] is False and doc["variants"][0]["delta"] is None
    # the baseline's first seed arrives: Δ exists, yet one seed on a side is within seed spread
    two = one + [record("stock", 0, map50_95=0.2)]
    write_results(exp, two[1], [0.1, 0.2])
    rep = write_report(exp, two, RECIPE)
    assert rep.summaries[0].test.reading == WITHIN and rep.summaries[0].delta["map50_95"] == pytest.approx(0.2)
    assert rep.notes == ()


# -- missing runs, early stops, a report that cannot be written -----------------------------------------------------

NAN = float("nan")


def test_nan_metrics_and_failed_runs_are_shown_missing_and_the_report_is_written(tmp_path):
    """MHSA: seed 1 validated to NaN, seed 2 failed; BoT3: every seed failed; stock: three seeds, one of them NaN.
    n counts real values, the statistics use them alone, and every file is written (no crash on NaN)."""
    stock = [record("stock", s, map50_95=m) for s, m in enumerate([0.300, 0.312, NAN])]
    stock.append(record("stock", 3, map50_95=0.305))
    mhsa = [record("MHSA", 0, map50_95=0.35), record("MHSA", 1, map50=NAN, map50_95=NAN),
            record("MHSA", 3, map50_95=0.36)]  # fmt: skip
    recs = stock + mhsa
    oom = "ultralytics' trainer failed: CUDA out of memory"
    failed = [("MHSA", 2, oom), ("BoT3", 0, "killed"), ("BoT3", 1, "killed")]
    for r in recs:
        write_results(tmp_path, r, [0.1, NAN if math.isnan(r.map50_95) else r.map50_95])
    rep = write_report(tmp_path, recs, RECIPE, failed=failed)
    assert [p.name for p in rep.files] == list(FILES)
    s = {v.variant: v for v in rep.summaries}
    assert list(s) == ["stock", "MHSA", "BoT3"]
    assert (s["stock"].n, s["MHSA"].n, s["BoT3"].n) == (3, 2, 0)
    assert s["stock"].main.mean == pytest.approx(statistics.fmean([0.300, 0.312, 0.305]))
    p, ci, _ = welch_by_hand([0.35, 0.36], [0.300, 0.312, 0.305])
    assert s["MHSA"].test.p == pytest.approx(p, rel=1e-7) and s["MHSA"].test.ci95 == pytest.approx(ci, rel=1e-7)
    assert s["MHSA"].metrics["map50"].n == 2 and s["MHSA"].seeds == (0, 1, 3)
    assert s["MHSA"].missing == ((1, "mAP50-95 is NaN"), (2, f"failed: {oom}"))
    assert s["BoT3"].test.reading == "missing" and s["BoT3"].delta is None and s["BoT3"].test.p is None
    md = (tmp_path / "summary.md").read_text()
    assert "| BoT3 | 0 | — | — | — | — | — | — | — | — | missing |" in md
    assert "| MHSA | 2 |" in md and "| stock | 3 |" in md
    assert ("Missing: stock seed 2 (NaN), MHSA seed 1 (NaN), MHSA seed 2 (failed), BoT3 seed 0 (failed), BoT3 seed 1"
            " (failed).") in md  # fmt: skip
    assert f"- MHSA seed 2: failed: {oom}; left out of the table" in md
    doc = json.loads((tmp_path / "summary.json").read_text())
    assert doc["failed"][0] == {"variant": "MHSA", "seed": 2, "reason": oom}
    v = {d["variant"]: d for d in doc["variants"]}
    assert v["MHSA"]["n"] == 2 and v["MHSA"]["missing"][0] == {"seed": 1, "reason": "mAP50-95 is NaN"}
    assert v["BoT3"]["map50_95"] == {"n": 0, "mean": None, "std": None}
    assert from_csv((tmp_path / "ablation.csv").read_text())[5].seed == 1  # the NaN run stays in the CSV, as nan
    assert "nan" in (tmp_path / "ablation.csv").read_text().splitlines()[6]
    tex = (tmp_path / "summary.tex").read_text()
    assert "BoT3 & 0 & --- & --- & --- & --- & --- & --- & --- & --- & missing \\\\" in tex


def test_runs_that_stopped_early_are_named_in_the_caption_the_notes_and_the_json(tmp_path):
    recipe = dict(RECIPE, epochs=100)
    recs = [
        RunRecord("stock", 0, 1, 1.0, 1.0, 0.5, 0.30, 0.6, 0.5, 90, 100, 10.0, "runs/stock-s0"),
        RunRecord("MHSA", 0, 1, 1.0, 1.0, 0.5, 0.32, 0.6, 0.5, 27, 37, 10.0, "runs/MHSA-s0"),
    ]
    rep = write_report(tmp_path, recs, recipe)
    md = (tmp_path / "summary.md").read_text()
    assert "Stopped early: MHSA seed 0 after 37 of 100 epochs." in md
    assert "MHSA seed 0 stopped early: 37 of 100 epochs (best epoch 27)" in rep.notes
    doc = json.loads((tmp_path / "summary.json").read_text())
    assert doc["stopped_early"] == [{"variant": "MHSA", "seed": 0, "epochs": 37, "of": 100, "best_epoch": 27}]
    assert "Stopped early" in (tmp_path / "summary.tex").read_text()


def test_a_report_that_cannot_be_written_leaves_no_stale_file_that_looks_current(experiment):
    exp, recs, _ = experiment
    write_report(exp, recs[:6], RECIPE)  # the report of 6 runs
    before = {n: (exp / n).read_bytes() for n in FILES}
    # the next report (9 runs) fails half-way: summary.json is a folder, os.replace cannot put a file there
    (exp / "summary.json").unlink()
    (exp / "summary.json").mkdir()
    with pytest.raises(PatchError) as err:
        write_report(exp, recs, RECIPE)
    msg = str(err.value)
    assert "\n" not in msg and "curves.png, tradeoff.png moved to" in msg and str(exp / "report.stale") in msg
    assert len(from_csv((exp / "ablation.csv").read_text())) == 9  # written before the failure: current
    assert "| BoT3 | 3 |" in (exp / "summary.md").read_text()
    for name in ("curves.png", "tradeoff.png"):  # not replaced: moved aside, byte for byte
        assert not (exp / name).exists() and (exp / "report.stale" / name).read_bytes() == before[name]
    assert (exp / "summary.json").is_dir()  # what is not the tool's is left alone
    # a failure before anything is written (records of two tasks in one table): every old file goes aside
    (exp / "summary.json").rmdir()
    write_report(exp, recs, RECIPE)
    assert not (exp / "report.stale").exists()  # a whole report supersedes what was moved aside
    seg = RunRecord(*[getattr(recs[0], f) for f in COLUMNS], metrics={"mask_map50_95": 0.2}, task="segment")
    with pytest.raises(PatchError, match="several tasks"):
        write_report(exp, [*recs, seg], RECIPE)
    assert not [n for n in FILES if (exp / n).exists()]
    assert sorted(p.name for p in (exp / "report.stale").iterdir()) == sorted(FILES)


# -- the task's own metric ---------------------------------------------------------------------------------------


def _task_record(task: str, variant: str, seed: int, values: dict) -> RunRecord:
    box = {c: values.pop(c, NAN) for c in ("map50", "map50_95", "precision", "recall")}
    return RunRecord(variant, seed, 1_000_000, 1.0, 1.0, **box, best_epoch=3, epochs=3, train_s=1.0,
                     run_dir=f"runs/{variant}-s{seed}", metrics=values, task=task)  # fmt: skip


def test_metric_columns_of_every_task_from_ultralytics_own_keys():
    """Each task's columns take the validator's keys (read from the installed ultralytics' metric classes, not
    typed here), each column its own key: a distinct value per key, so a swapped column cannot pass."""
    from ultralytics.utils import metrics as um

    from mhsa_patch.child.metrics import PRIMARY, columns, extract

    kinds = {"detect": um.DetMetrics, "segment": um.SegmentMetrics, "pose": um.PoseMetrics, "obb": um.OBBMetrics,
             "classify": um.ClassifyMetrics}  # fmt: skip
    expected = {
        "detect": ["precision", "recall", "map50", "map50_95"],
        "segment": ["precision", "recall", "map50", "map50_95", "mask_precision", "mask_recall", "mask_map50",
                    "mask_map50_95"],
        "pose": ["precision", "recall", "map50", "map50_95", "pose_precision", "pose_recall", "pose_map50",
                 "pose_map50_95"],
        "obb": ["obb_precision", "obb_recall", "obb_map50", "obb_map50_95"],
        "classify": ["top1", "top5"],
    }  # fmt: skip
    for task, cls in kinds.items():
        keys = list(cls().keys)  # ultralytics' own order of its keys
        results = {k: 0.01 * (i + 1) for i, k in enumerate(keys)} | {"fitness": 0.99}
        got = extract(task, results)
        assert sorted(got) == sorted(columns(task)) == sorted(expected[task]), task
        assert [got[c] for c in expected[task]] == [results[k] for k in keys], task  # column i is key i
        assert PRIMARY[task] in got
    assert math.isnan(extract("segment", {"metrics/mAP50-95(B)": 0.5})["mask_map50_95"])  # absent: NaN, never 0
    assert [c for c in columns("detect")] == ["map50", "map50_95", "precision", "recall"]  # detect's CSV order


def test_a_segment_table_reads_the_mask_metric_beside_the_box_one(tmp_path):
    """Δ, p and the reading on mask mAP50-95; the columns say box and mask; the CSV's mask columns read back; the
    curves are the (M) column of results.csv."""
    box = {"stock": [0.50, 0.52, 0.51], "MHSA": [0.60, 0.40, 0.55]}  # box: MHSA "within"
    mask = {"stock": [0.30, 0.31, 0.305], "MHSA": [0.36, 0.37, 0.365]}  # mask: MHSA clearly better
    recs = [
        _task_record("segment", v, s, {"map50": 0.7, "map50_95": box[v][s], "precision": 0.8, "recall": 0.6,
                                        "mask_map50": 0.65, "mask_map50_95": mask[v][s], "mask_precision": 0.75,
                                        "mask_recall": 0.55})  # fmt: skip
        for v in ("stock", "MHSA") for s in range(3)
    ]
    header = HEADER + ",metrics/mAP50-95(M)"
    for r in recs:
        folder = tmp_path / r.run_dir
        folder.mkdir(parents=True)
        rows = [f"{e},1,0.5,0.5,0.5,0.5,{r.map50_95},0.5,{r.value('mask_map50_95') * e / 2}" for e in (1, 2)]
        (folder / "results.csv").write_text("\n".join([header, *rows]) + "\n")
    rep = write_report(tmp_path, recs, dict(RECIPE, task="segment"))
    md = (tmp_path / "summary.md").read_text()
    assert "| latency (ms) | box mAP50-95 (%) | mask mAP50-95 (%) | Δ mask mAP50-95 | 95% CI | p (Holm) |" in md
    m = rep.summaries[1]
    p, ci, _ = welch_by_hand(mask["MHSA"], mask["stock"])
    assert m.primary == "mask_map50_95" and m.test.p == pytest.approx(p, rel=1e-7) and m.test.reading == BETTER
    assert m.delta["mask_map50_95"] == pytest.approx(0.06)
    assert m.delta["map50_95"] == pytest.approx(statistics.fmean(box["MHSA"]) - statistics.fmean(box["stock"]))
    assert "| MHSA | 3 |" in md and "| 51.7 ± 10.4 | 36.5 ± 0.5 | +6.0 |" in md
    assert "box mAP50-95 and mask mAP50-95 of each run's best.pt" in md and "Welch t-test on mask mAP50-95" in md
    text = (tmp_path / "ablation.csv").read_text()
    assert text.splitlines()[0] == (
        "variant,seed,params,gflops,latency_ms,map50,map50_95,precision,recall,mask_map50,mask_map50_95,"
        "mask_precision,mask_recall,best_epoch,epochs,train_s,run_dir"
    )
    back = from_csv(text)
    assert back == recs and back[4].value("mask_map50_95") == 0.37 and back[4].task == "segment"
    doc = json.loads((tmp_path / "summary.json").read_text())
    assert doc["metric"] == "mask_map50_95" and doc["variants"][1]["mask_map50_95"]["mean"] == pytest.approx(0.365)
    tex = (tmp_path / "summary.tex").read_text()
    assert "& mAP50-95 & mAP50-95 & $\\Delta$mAP50-95 &" in tex and "& box (\\%) & mask (\\%) & mask (pt) &" in tex
    curves, skipped = plots.load_curves(tmp_path, recs, task="segment")
    assert skipped == [] and curves[4].values == (0.37 / 2, 0.37)  # the (M) column, not the (B) one


@pytest.mark.parametrize("task, heads", [
    ("pose", ("box mAP50-95 (%)", "pose mAP50-95 (%)", "Δ pose mAP50-95")),
    ("obb", ("OBB mAP50 (%)", "OBB mAP50-95 (%)", "Δ OBB mAP50-95")),
    ("classify", ("top-5 (%)", "top-1 (%)", "Δ top-1")),
])  # fmt: skip
def test_pose_obb_and_classify_tables_name_their_metric(tmp_path, task, heads):
    from mhsa_patch.child.metrics import PRIMARY, columns

    cols = columns(task)
    recs = [_task_record(task, v, s, {c: 0.1 + 0.01 * k + (0.05 if v == "MHSA" else 0) + 0.002 * s
                                      for k, c in enumerate(cols)})
            for v in ("stock", "MHSA") for s in range(3)]  # fmt: skip
    rep = write_report(tmp_path, recs, dict(RECIPE, task=task))
    md = (tmp_path / "summary.md").read_text()
    assert ("| " + " | ".join(heads) + " | 95% CI |") in md
    assert rep.summaries[1].primary == PRIMARY[task] and rep.summaries[1].delta[PRIMARY[task]] == pytest.approx(0.05)
    back = from_csv((tmp_path / "ablation.csv").read_text())
    assert back == recs and all(r.task == task for r in back)
    if task in ("obb", "classify"):  # no axis-aligned boxes: no map50 column at all
        assert "map50," not in (tmp_path / "ablation.csv").read_text().splitlines()[0].replace("obb_map50,", "")


def test_the_headline_of_a_finished_run_is_the_tasks_primary_metric():
    from mhsa_patch.ablate.record import headline

    assert headline({"map50_95": 0.4123, "mask_map50_95": 0.3}) == "mAP50-95 0.412"
    assert headline({"map50_95": 0.4, "mask_map50_95": 0.3871, "task": "segment"}) == "mask mAP50-95 0.387"
    assert headline({"top1": 0.9, "task": "classify"}) == "top-1 0.900"
    assert headline({"task": "obb"}) == "OBB mAP50-95 nan"


# -- plots ---------------------------------------------------------------------------------------------------------


def test_curves_plot_the_mean_over_seeds_and_the_min_max_band(experiment):
    exp, recs, curves = experiment
    loaded, skipped = plots.load_curves(exp, recs)
    assert skipped == [] and len(loaded) == 9
    order = ["stock", "MHSA", "BoT3"]
    colors = {v: plots.color(i) for i, v in enumerate(order)}
    fig = plots.curves_figure(plots.bands(loaded, order), colors)
    ax = fig.axes[0]
    assert [ln.get_label() for ln in ax.lines] == ["stock (n=3)", "MHSA (n=3)", "BoT3 (n=3)"]
    assert len(ax.collections) == 3
    for v, line, band in zip(order, ax.lines, ax.collections):
        per_seed = [curves[(v, s)] for s in range(3)]  # straight from the CSV values written above
        x, y = line.get_data()
        assert list(x) == [1, 2, 3]
        assert np.allclose(y, [100 * statistics.fmean(col) for col in zip(*per_seed)])
        assert line.get_color().lower() == colors[v].lower()
        verts = {(round(px, 9), round(py, 9)) for px, py in band.get_paths()[0].vertices}
        for e, col in zip((1, 2, 3), zip(*per_seed)):
            assert (e, round(100 * min(col), 9)) in verts and (e, round(100 * max(col), 9)) in verts
        assert all(100 * min(min(c) for c in per_seed) - 1e-9 <= py <= 100 * max(max(c) for c in per_seed) + 1e-9
                   for _, py in band.get_paths()[0].vertices)  # fmt: skip


def test_curves_take_the_box_column_and_skip_missing_cut_and_escaping_files(tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    seg = HEADER.replace("metrics/mAP50-95(B)", "metrics/mAP50-95(B),metrics/mAP50-95(M)")
    a, b, c, d, e = (record("seg", s) for s in range(5))
    write_results(exp, a, [0.1, 0.2], header=seg)
    cut = write_results(exp, b, [0.1, 0.2])
    cut.write_text(cut.read_text() + "3,30.0,0.5,0.5")  # the third epoch caught mid-write
    # c: no results.csv at all (a run in progress)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "results.csv").write_text(HEADER + "\n1,1,1,1,1,1,0.9,1\n")
    (exp / d.run_dir).parent.mkdir(parents=True, exist_ok=True)
    (exp / d.run_dir).symlink_to(outside)  # a run folder that is a link out of the experiment
    e = RunRecord(*[getattr(e, f) for f in COLUMNS[:-1]], "../elsewhere")
    curves, skipped = plots.load_curves(exp, [a, b, c, d, e])
    assert [(cv.seed, cv.epochs, cv.values) for cv in curves] == [(0, (1, 2), (0.1, 0.2))]
    assert len(skipped) == 4
    assert "line 4 has 4 fields" in skipped[0] and "no runs/seg-s2/results.csv" in skipped[1]
    assert "a link out of the experiment folder" in skipped[2] and "not inside the experiment folder" in skipped[3]
    rep = write_report(exp, [a, b, c, d, e], RECIPE, baseline="seg")
    assert sum("curves.png" in n for n in rep.notes) == 4
    with pytest.raises(plots.Unreadable, match="no 'epoch'"):
        plots.parse_results("a,b\n1,2\n")


def test_a_single_seed_is_a_line_without_a_band(tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    r = record("stock", 0)
    write_results(exp, r, [0.2, 0.25, 0.3])
    fig = plots.curves_figure(plots.bands(plots.load_curves(exp, [r])[0], ["stock"]), {"stock": "#042AFF"})
    ax = fig.axes[0]
    assert len(ax.lines) == 1 and len(ax.collections) == 0
    assert np.allclose(ax.lines[0].get_ydata(), [20, 25, 30])


def test_tradeoff_points_and_error_bars_match_the_summary():
    recs = records() + [record("stock:s", 0, 11_100_000, 28.6, 20.0, 0.6, 0.4)]
    s = summarize(recs)
    colors = {v.variant: plots.color(i) for i, v in enumerate(s)}
    fig = plots.tradeoff_figure(s, colors)
    ax_g, ax_l = fig.axes
    for ax, xs in ((ax_g, [8.9, 9.7, 9.4, 28.6]), (ax_l, [statistics.fmean(RUNS[v][2]) for v in RUNS] + [20.0])):
        assert len(ax.containers) == 4
        for cont, x, (v, runs) in zip(ax.containers, xs, list(RUNS.items()) + [("stock:s", None)]):
            px, py = cont.lines[0].get_data()
            mean = 100 * (statistics.fmean(runs[4]) if runs else 0.4)
            assert np.allclose(px, [x]) and np.allclose(py, [mean])
            assert cont.get_label() == f"{v} (n={3 if runs else 1})"
            if runs is None:
                assert not cont.has_yerr  # one seed: no spread to draw
                continue
            std = 100 * statistics.stdev(runs[4])
            (seg,) = cont.lines[2][0].get_segments()
            assert np.allclose(seg, [[x, mean - std], [x, mean + std]])


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_pngs_are_real_pngs_at_paper_column_width(experiment):
    exp, recs, _ = experiment
    write_report(exp, recs, RECIPE)
    w, h = plots.PANEL_IN
    assert _png_size(exp / "curves.png") == (round(w * plots.DPI), round(h * plots.DPI))
    assert _png_size(exp / "tradeoff.png") == (round(2 * w * plots.DPI), round(h * plots.DPI))
    assert (exp / "curves.png").stat().st_size > 20_000  # drawn, not blank


def test_the_report_imports_neither_torch_nor_ultralytics(tmp_path):
    code = (
        "import sys\nfrom pathlib import Path\n"
        "from mhsa_patch.ablate.record import RunRecord\nfrom mhsa_patch.ablate.report import write_report\n"
        "recs = [RunRecord(v, s, 1, 1.0, 1.0, 0.5, 0.3 + s / 100, 0.5, 0.5, 1, 1, 1.0, f'runs/{v}-s{s}')"
        " for v in ('stock', 'MHSA') for s in (0, 1)]\n"
        "write_report(Path(sys.argv[1]), recs, {})\n"
    )
    assert_imports_neither_torch_nor_ultralytics(code, str(tmp_path))
