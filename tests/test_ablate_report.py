"""ablate's report on constructed runs: the statistics and their reading, the CSV, the three summaries, the plotted
data against the results.csv files, the PNGs. Fast: no training, records and results.csv written by hand."""

from __future__ import annotations

import json
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
from mhsa_patch.ablate.stats import BASELINE, BETTER, NO_BASELINE, WITHIN, WORSE, Spread, summarize, welch
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
    assert m.map50_95.mean == pytest.approx(0.355) and m.map50_95.std == pytest.approx(0.005)
    assert m.map50.std == pytest.approx(statistics.stdev([0.560, 0.570, 0.565]))
    assert m.latency_ms.mean == pytest.approx(statistics.fmean([13.0, 13.3, 13.1]))
    assert m.params_m.mean == pytest.approx(3.4128) and m.params_m.std == 0
    assert m.delta.map50_95 == pytest.approx(0.05) and m.delta.map50 == pytest.approx(0.06)
    assert m.delta.gflops == pytest.approx(0.8) and m.delta.params_m == pytest.approx(0.2556)
    assert m.test.reading == BETTER
    assert s["BoT3"].test.reading == WITHIN
    assert s["stock"].test.reading == BASELINE and s["stock"].delta is None and s["stock"].test.p is None
    assert Spread.of([0.4]) == Spread(1, 0.4, None)


def test_baseline_missing_and_single_seed_variants():
    recs = [record("MHSA", 0, map50_95=0.4), record("BoT3", 0, map50_95=0.3), record("BoT3", 1, map50_95=0.31)]
    s = summarize(recs)
    assert [v.test.reading for v in s] == [NO_BASELINE, NO_BASELINE]
    assert all(v.delta is None and v.test.p is None for v in s)
    assert s[0].map50_95 == Spread(1, 0.4, None)


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
    p = sps.ttest_ind(RUNS["MHSA"][4], RUNS["stock"][4], equal_var=False).pvalue
    assert p < 0.001
    assert rows[2] == (
        "| MHSA | 3 | 3.41 | 9.70 | 13.1 ± 0.2 | 56.5 ± 0.5 | 35.5 ± 0.5 | +6.0 | +5.0 | <0.001 | better |"
    )
    assert rows[3].endswith("| within seed spread |")
    for words in ("data my_data.yaml", "3 epochs", "imgsz 640", "batch 16", "from scratch", "lr0=0.005",
                  "ultralytics 8.4.190, torch 2.14.1", "device 0 (NVIDIA H100 80GB HBM3)"):  # fmt: skip
        assert words in md, words
    assert "/home/someone" not in md  # the data file's name only: a caption is for the paper's readers

    doc = json.loads((exp / "summary.json").read_text())
    assert doc["baseline"] == "stock" and doc["has_baseline"] and doc["runs"] == 9
    assert doc["recipe"]["data"] == RECIPE["data"] and doc["recipe"]["weights"] is None
    v = {d["variant"]: d for d in doc["variants"]}
    assert v["MHSA"]["map50_95"]["mean"] == pytest.approx(0.355) and v["MHSA"]["p_value"] == pytest.approx(p)
    assert v["MHSA"]["delta"]["map50_95"] == pytest.approx(0.05) and v["stock"]["delta"] is None
    assert v["BoT3"]["reading"] == WITHIN and v["stock"]["p_value"] is None

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
        "MHSA & 3 & 3.41 & 9.70 & $13.1 \\pm 0.2$ & $56.5 \\pm 0.5$ & $35.5 \\pm 0.5$ & $+6.0$ & $+5.0$ & $<$0.001"
        " & better \\\\"
    )
    assert body[3] == (
        "yaml:my\\_model\\_v2.yaml & 1 & 1.00 & 1.00 & 1.00 & 50.0 & 30.0 & $-0.5$ & $-0.5$ & ---"
        " & within seed spread \\\\"
    )
    assert "pretrained from yolov8n\\_best.pt" in tex and "data\\_\\&\\_more\\%\\textasciitilde{}.yaml" in tex
    assert "device cpu." in tex  # device_name repeats the device: said once
    # no unescaped special character: the only raw ones are the markup this writer puts there itself
    assert not _unescaped(tex, "_") and not _unescaped(tex.split("\n", 1)[1], "%") and not _unescaped(tex, "~")
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
    assert rep.summaries[0].test.reading == WITHIN and rep.summaries[0].delta.map50_95 == pytest.approx(0.2)
    assert rep.notes == ()


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
    assert [(cv.seed, cv.epochs, cv.map50_95) for cv in curves] == [(0, (1, 2), (0.1, 0.2))]
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
