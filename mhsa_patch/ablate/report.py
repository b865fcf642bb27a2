"""The experiment's report, rewritten after every finished run: ``ablation.csv``, ``summary.md``, ``summary.tex``,
``summary.json``, ``curves.png`` and ``tradeoff.png`` in the experiment folder, and the summary as a rich table.

Everything is computed from the run records and each run's ``results.csv``, never copied from logs. Every file is
built in memory first and then written atomically (temporary file + ``os.replace``), so a reader never sees half a
report, and a partial experiment (one run, a variant with one seed, no baseline yet) gives a partial report.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from rich.markup import escape
from rich.table import Table

from mhsa_patch.ablate import plots
from mhsa_patch.ablate.record import RunRecord, to_csv, variants_in_order
from mhsa_patch.ablate.stats import ALPHA, BASELINE, BETTER, NO_BASELINE, WORSE, Spread, VariantSummary, summarize
from mhsa_patch.patching.atomic import confine, write_atomic

FILES = ("ablation.csv", "summary.md", "summary.tex", "summary.json", "curves.png", "tradeoff.png")
DASH = "—"
MAP_DIGITS = 1  # mAP in % to one decimal, as papers and ultralytics' own tables print it; summary.json keeps all

HEADERS = (
    "variant", "n", "params (M)", "GFLOPs", "latency (ms)", "mAP50 (%)", "mAP50-95 (%)", "Δ mAP50", "Δ mAP50-95",
    "p", "reading",
)  # fmt: skip


@dataclass(frozen=True)
class Report:
    """What :func:`write_report` wrote (``files``, in :data:`FILES` order), the summary for the terminal
    (``table``), the per-variant numbers, and notes worth a warning (baseline missing, curves skipped)."""

    files: list[Path]
    table: Table
    summaries: tuple[VariantSummary, ...]
    notes: tuple[str, ...]


# -- numbers as text ---------------------------------------------------------------------------------------------


def _decimals(x: float) -> int:
    """Digits after the point for a cost (GFLOPs, ms): three significant figures, at most three decimals."""
    a = abs(x)
    return 0 if a >= 100 else 1 if a >= 10 else 2 if a >= 1 else 3


def _num(x: float, d: int) -> str:
    return "nan" if math.isnan(x) else f"{x:.{d}f}"


def _spread(
    s: Spread, *, scale: float = 1.0, digits: Optional[int] = None, tex: bool = False, always: bool = True
) -> str:
    """``mean ± std`` (the std only for n > 1; with ``always=False`` only when the seeds differ at all)."""
    mean = s.mean * scale
    d = _decimals(mean) if digits is None else digits
    if s.std is None or (not always and s.std == 0):
        return _num(mean, d)
    if tex:  # in math mode: a binary operator's spacing, narrower than two word spaces
        return f"${_num(mean, d)} \\pm {_num(s.std * scale, d)}$"
    return f"{_num(mean, d)} ± {_num(s.std * scale, d)}"


def _signed(x: Optional[float], *, tex: bool = False) -> str:
    if x is None:
        return "---" if tex else DASH
    t = "nan" if math.isnan(x) else f"{100 * x:+.{MAP_DIGITS}f}"
    return f"${t}$" if tex and t != "nan" else t


def _p(p: Optional[float], *, tex: bool = False) -> str:
    if p is None:
        return "---" if tex else DASH
    if p < 0.001:
        return "$<$0.001" if tex else "<0.001"
    text = f"{p:.3f}"
    if (float(text) < ALPHA) != (p < ALPHA):  # 0.0496 must not print as 0.050 beside "better"
        text = f"{p:.4f}"
    return text


def _cells(s: VariantSummary, *, tex: bool = False) -> list[str]:
    """One row's cells; for ``tex``, already escaped."""
    name = tex_escape(s.variant) if tex else s.variant
    d = s.delta
    return [
        name,
        str(s.n),
        _spread(s.params_m, digits=2, tex=tex, always=False),  # an architecture's size: the same for every seed
        _spread(s.gflops, tex=tex, always=False),
        _spread(s.latency_ms, tex=tex, always=False),  # measured once per variant, not per seed
        _spread(s.map50, scale=100, digits=MAP_DIGITS, tex=tex),
        _spread(s.map50_95, scale=100, digits=MAP_DIGITS, tex=tex),
        _signed(None if d is None else d.map50, tex=tex),
        _signed(None if d is None else d.map50_95, tex=tex),
        _p(s.test.p, tex=tex),
        s.test.reading,
    ]


# -- the recipe in words -----------------------------------------------------------------------------------------


def _file_name(path: Any) -> str:
    """The last component of a POSIX or Windows path (a recipe may come from either), or the text itself."""
    text = str(path)
    return re.split(r"[\\/]", text.rstrip("\\/"))[-1] or text


def _recipe_items(recipe: Mapping[str, Any]) -> list[str]:
    """The recipe as short phrases, plain text (escaped later for TeX)."""
    # Files by name, not path: a caption is for readers of the paper, and a path names the author's home.
    weights = recipe.get("weights")
    start = "from scratch" if weights is None else f"pretrained from {_file_name(weights)}"
    items = [
        f"data {_file_name(recipe.get('data'))}",
        f"{recipe.get('epochs')} epochs",
        f"imgsz {recipe.get('imgsz')}",
        f"batch {recipe.get('batch')}",
        start,
    ]
    extra = recipe.get("extra") or {}
    if extra:
        items.append("extra arguments " + " ".join(f"{k}={v}" for k, v in extra.items()))
    items.append(f"ultralytics {recipe.get('ultralytics')}, torch {recipe.get('torch')}")
    device, name = recipe.get("device"), recipe.get("device_name")
    items.append(f"device {device}" + (f" ({name})" if name and str(name) != str(device) else ""))
    return items


def caption(recipe: Mapping[str, Any], baseline: str, has_baseline: bool, *, tex: bool = False) -> str:
    """The table's caption: the recipe, then how to read the numbers."""
    esc = tex_escape if tex else str
    pm, delta, geq = ("$\\pm$", "$\\Delta$", "$\\geq$") if tex else ("±", "Δ", "≥")
    head = "Ablation: " + "; ".join(esc(i) for i in _recipe_items(recipe)) + "."
    how = (
        f" mAP50 and mAP50-95 of each run's best.pt in \\%, mean {pm} sample standard deviation over $n$ seeds;"
        if tex
        else f" mAP50 and mAP50-95 of each run's best.pt in %, mean {pm} sample standard deviation over n seeds;"
    )
    p = "$p$" if tex else "p"
    how += (
        f" {delta} in points against {esc(baseline)}; {p}: two-sided Welch t-test on mAP50-95;"
        f" within seed spread: {p} {geq} {ALPHA:g}, a single seed, or no spread to test."
    )
    if not has_baseline:
        how += f" The baseline {esc(baseline)} has no finished run yet: no {delta}."
    return head + how


# -- the files ---------------------------------------------------------------------------------------------------

_TEX = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
    "|": r"\textbar{}",
}  # fmt: skip


def tex_escape(text: str) -> str:
    """``text`` as literal LaTeX text: every special character escaped (``<``, ``>``, ``|`` too: OT1 fonts print
    them as other glyphs)."""
    return "".join(_TEX.get(ch, ch) for ch in text)


def markdown(summaries: Sequence[VariantSummary], cap: str, notes: Sequence[str]) -> str:
    def cell(t: str) -> str:
        return t.replace("|", "\\|")

    lines = [
        "# Ablation summary",
        "",
        cap,
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "|".join(":---" if i in (0, len(HEADERS) - 1) else "---:" for i in range(len(HEADERS))) + "|",
    ]
    lines += ["| " + " | ".join(cell(c) for c in _cells(s)) + " |" for s in summaries]
    lines += ["", "Readings:", ""]
    lines += [f"- {cell(s.variant)}: {s.test.reading} ({s.test.why})" for s in summaries]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def latex(summaries: Sequence[VariantSummary], cap: str) -> str:
    """A booktabs table, ready to ``\\input`` (needs ``\\usepackage{booktabs}``).

    ``table*``, footnotesize, units on a second header line: eleven columns fit the 6.9 in text width of a
    two-column paper (CVPR/IEEE, measured with pdflatex), not one of its columns; in a one-column document
    ``table*`` is an ordinary table.
    """
    names = ["Variant", "$n$", "Params", "GFLOPs", "Latency", "mAP50", "mAP50-95", "$\\Delta$mAP50",
             "$\\Delta$mAP50-95", "$p$", "Reading"]  # fmt: skip
    units = ["", "", "(M)", "", "(ms)", "(\\%)", "(\\%)", "(pt)", "(pt)", "", ""]
    rows = [" & ".join(_cells(s, tex=True)) + " \\\\" for s in summaries]
    return "\n".join(
        [
            "% Written by mhsa-patch ablate. Needs \\usepackage{booktabs}.",
            "\\begin{table*}[t]",
            "\\centering",
            "\\footnotesize",
            "\\setlength{\\tabcolsep}{3pt}",
            f"\\caption{{{cap}}}",
            "\\label{tab:ablation}",
            "\\begin{tabular}{l" + "r" * (len(names) - 2) + "l}",
            "\\toprule",
            " & ".join(names) + " \\\\",
            " & ".join(units) + " \\\\",
            "\\midrule",
            *rows,
            "\\bottomrule",
            "\\end{tabular}",
            "\\end{table*}",
        ]
    ) + "\n"


def _jsonable(obj: Any) -> Any:
    """Plain JSON values: NaN and infinities become null (JSON has none), paths and the unknown become strings."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return str(obj)


def _spread_json(s: Spread) -> dict[str, Any]:
    return {"mean": s.mean, "std": s.std}


def summary_json(
    summaries: Sequence[VariantSummary], records: Sequence[RunRecord], recipe: Mapping[str, Any], baseline: str,
    cap: str, notes: Sequence[str],
) -> str:  # fmt: skip
    variants = []
    for s in summaries:
        variants.append(
            {
                "variant": s.variant,
                "n": s.n,
                "seeds": list(s.seeds),
                "params_m": _spread_json(s.params_m),
                "gflops": _spread_json(s.gflops),
                "latency_ms": _spread_json(s.latency_ms),
                "map50": _spread_json(s.map50),
                "map50_95": _spread_json(s.map50_95),
                "delta": None if s.delta is None else vars(s.delta),
                "p_value": s.test.p,
                "reading": s.test.reading,
                "why": s.test.why,
            }
        )
    doc = {
        "baseline": baseline,
        "has_baseline": any(s.is_baseline for s in summaries),
        "alpha": ALPHA,
        "test": "two-sided Welch t-test on mAP50-95 per seed (scipy.stats.ttest_ind, equal_var=False)",
        "units": {"params_m": "millions", "gflops": "GFLOPs", "latency_ms": "ms", "map50": "fraction", "map50_95": "fraction", "delta": "as each quantity"},
        "runs": len(records),
        "caption": cap,
        "recipe": recipe,
        "variants": variants,
        "notes": list(notes),
    }
    return json.dumps(_jsonable(doc), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


READING_STYLE = {BETTER: "green", WORSE: "red", BASELINE: "bold", NO_BASELINE: "yellow"}


def rich_table(summaries: Sequence[VariantSummary], cap: str) -> Table:
    """The summary for the terminal, in the look of the tool's other tables."""
    table = Table(box=None, pad_edge=False, show_header=True, header_style="bold", caption=escape(cap))
    for i, h in enumerate(HEADERS):
        table.add_column(h, justify="left" if i in (0, len(HEADERS) - 1) else "right")
    for s in summaries:
        cells = [escape(c) for c in _cells(s)]
        style = READING_STYLE.get(s.test.reading, "dim")
        cells[-1] = f"[{style}]{cells[-1]}[/]"
        table.add_row(*cells)
    return table


def write_report(
    exp_dir: Path, records: Sequence[RunRecord], recipe: Mapping[str, Any], *, baseline: str = "stock"
) -> Report:
    """Write the report of ``records`` (finished runs, in the order they should be listed) into ``exp_dir``.

    Files are written atomically, only after all of them were built; ``exp_dir`` must exist. A report file that is
    a symbolic link raises ``PatchError`` (one line) before anything is written. A run whose ``results.csv`` is
    missing or cut short is left out of ``curves.png`` only, with a note.
    """
    exp_dir = Path(exp_dir)
    summaries = summarize(records, baseline=baseline)
    has_baseline = any(s.is_baseline for s in summaries)
    notes: list[str] = []
    if not has_baseline:
        notes.append(f"the baseline {baseline!r} has no finished run yet: Δ and p are left out ({DASH})")
    curves, skipped = plots.load_curves(exp_dir, records)
    notes += [f"curves.png: {s}" for s in skipped]

    order = variants_in_order(records)
    colors = {v: plots.color(i) for i, v in enumerate(order)}
    cap = caption(recipe, baseline, has_baseline)
    contents: dict[str, bytes] = {
        "ablation.csv": to_csv(records).encode(),
        "summary.md": markdown(summaries, cap, notes).encode(),
        "summary.tex": latex(summaries, caption(recipe, baseline, has_baseline, tex=True)).encode(),
        "summary.json": summary_json(summaries, records, recipe, baseline, cap, notes).encode(),
        "curves.png": plots.png_bytes(plots.curves_figure(plots.bands(curves, order), colors)),
        "tradeoff.png": plots.png_bytes(plots.tradeoff_figure(summaries, colors)),
    }
    files = [confine(exp_dir, exp_dir / name) for name in FILES]  # a planted link refuses the report before any write
    for path in files:
        write_atomic(path, contents[path.name], root=exp_dir)
    return Report(files, rich_table(summaries, cap), summaries, tuple(notes))
