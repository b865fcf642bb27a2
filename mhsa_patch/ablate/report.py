"""The experiment's report, rewritten after every finished run: ``ablation.csv``, ``summary.md``, ``summary.tex``,
``summary.json``, ``curves.png`` and ``tradeoff.png`` in the experiment folder, and the summary as a rich table.

Everything is computed from the run records and each run's ``results.csv``, never copied from logs. Every file is
built in memory first and then written atomically (temporary file + ``os.replace``), so a reader never sees half a
report, and a partial experiment (one run, a variant with one seed, no baseline yet, failed runs, NaN metrics) gives
a partial report. A report that cannot be written (a plotting error, a full disk, a planted link) leaves no file
that looks current: the previous report's files that were not replaced are moved into ``report.stale/``, and the
error says so in one line.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from rich.markup import escape
from rich.table import Table

from mhsa_patch.ablate import plots
from mhsa_patch.ablate.record import BOX, LABELS, RunRecord, records_task, to_csv
from mhsa_patch.ablate.stats import (
    ALPHA, BASELINE, BETTER, CONFIDENCE, MISSING, NO_BASELINE, WORSE, Spread, VariantSummary, summarize,
)  # fmt: skip
from mhsa_patch.child import metrics as task_metrics
from mhsa_patch.errors import PatchError
from mhsa_patch.patching.atomic import confine, write_atomic

FILES = ("ablation.csv", "summary.md", "summary.tex", "summary.json", "curves.png", "tradeoff.png")
STALE = "report.stale"  # where the files of a report that could not be replaced go
DASH = "—"
MAP_DIGITS = 1  # mAP in % to one decimal, as papers and ultralytics' own tables print it; summary.json keeps all

# The two metric columns the table shows per task: (second, primary). Δ, p and the reading use the primary.
SHOWN = {
    "detect": ("map50", "map50_95"),
    "segment": ("map50_95", "mask_map50_95"),
    "pose": ("map50_95", "pose_map50_95"),
    "obb": ("obb_map50", "obb_map50_95"),
    "classify": ("top5", "top1"),
}
assert all(SHOWN[t][1] == task_metrics.PRIMARY[t] for t in task_metrics.TASK_METRICS)

Failed = tuple[str, int, str]  # (variant, seed, one-line reason) of a run that gave no record


class ReportError(PatchError):
    """The report could not be written; what was moved aside is in the message (one line)."""


@dataclass(frozen=True)
class Report:
    """What :func:`write_report` wrote (``files``, in :data:`FILES` order), the summary for the terminal
    (``table``), the per-variant numbers, and notes worth a warning (baseline missing, curves skipped, missing runs,
    runs that stopped early)."""

    files: list[Path]
    table: Table
    summaries: tuple[VariantSummary, ...]
    notes: tuple[str, ...]


# -- names -------------------------------------------------------------------------------------------------------


def label(column: str, task: str) -> str:
    """A metric column's name in the report: ``mask mAP50-95``; a box column says ``box`` beside another kind."""
    text = LABELS[column]
    return f"box {text}" if column in BOX and task in ("segment", "pose") else text


def headers(task: str) -> tuple[str, ...]:
    """The table's columns. Only the primary metric has a Δ: every Δ in the table carries its interval and its
    adjusted p (the other Δs are in ``summary.json``)."""
    second, first = (label(c, task) for c in SHOWN[task])
    return (
        "variant", "n", "params (M)", "GFLOPs", "latency (ms)", f"{second} (%)", f"{first} (%)", f"Δ {first}",
        "95% CI", "p (Holm)", "reading",
    )  # fmt: skip


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
    """``mean ± std`` (the std only for n > 1; with ``always=False`` only when the seeds differ at all); a dash
    where there is no value at all."""
    if s.n == 0:
        return "---" if tex else DASH
    mean = s.mean * scale
    d = _decimals(mean) if digits is None else digits
    if s.std is None or (not always and s.std == 0):
        return _num(mean, d)
    if tex:  # in math mode: a binary operator's spacing, narrower than two word spaces
        return f"${_num(mean, d)} \\pm {_num(s.std * scale, d)}$"
    return f"{_num(mean, d)} ± {_num(s.std * scale, d)}"


def _points(x: float) -> str:
    return "nan" if math.isnan(x) else f"{100 * x:+.{MAP_DIGITS}f}"


def _signed(x: Optional[float], *, tex: bool = False) -> str:
    if x is None:
        return "---" if tex else DASH
    t = _points(x)
    return f"${t}$" if tex and t != "nan" else t


def _ci(ci: Optional[tuple[float, float]], *, tex: bool = False) -> str:
    """``[low, high]`` in points (signs only where negative: the Δ beside it has its own)."""
    if ci is None:
        return "---" if tex else DASH
    text = "[" + ", ".join(_num(100 * x, MAP_DIGITS) for x in ci) + "]"
    return f"${text}$" if tex else text


def _p(p: Optional[float], *, tex: bool = False) -> str:
    if p is None:
        return "---" if tex else DASH
    if p < 0.001:
        return "$<$0.001" if tex else "<0.001"
    text = f"{p:.3f}"
    if (float(text) < ALPHA) != (p < ALPHA):  # 0.0496 must not print as 0.050 beside "better"
        text = f"{p:.4f}"
    return text


def _cells(s: VariantSummary, task: str, *, tex: bool = False) -> list[str]:
    """One row's cells; for ``tex``, already escaped."""
    name = tex_escape(s.variant) if tex else s.variant
    d = s.delta
    second, first = SHOWN[task]
    return [
        name,
        str(s.n),
        _spread(s.params_m, digits=2, tex=tex, always=False),  # an architecture's size: the same for every seed
        _spread(s.gflops, tex=tex, always=False),
        _spread(s.latency_ms, tex=tex, always=False),  # measured once per variant, not per seed
        _spread(s.metrics[second], scale=100, digits=MAP_DIGITS, tex=tex),
        _spread(s.metrics[first], scale=100, digits=MAP_DIGITS, tex=tex),
        _signed(None if d is None else d[first], tex=tex),
        _ci(s.test.ci95, tex=tex),
        _p(s.test.p_holm, tex=tex),
        s.test.reading,
    ]


# -- the recipe in words -----------------------------------------------------------------------------------------


def _file_name(path: Any) -> str:
    """The last component of a POSIX or Windows path (a recipe may come from either), or the text itself."""
    text = str(path)
    return re.split(r"[\\/]", text.rstrip("\\/"))[-1] or text


def split_of(recipe: Mapping[str, Any]) -> str:
    """The split the table's numbers come from (the final validation's ``split``; ``val`` by default)."""
    val = recipe.get("val")
    return str(val.get("split") or "val") if isinstance(val, Mapping) else "val"


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


def _who(variant: str, seed: int) -> str:
    return f"{variant} seed {seed}"


def stopped_early(records: Sequence[RunRecord], recipe: Mapping[str, Any]) -> list[RunRecord]:
    """The runs that trained fewer epochs than the recipe's (ultralytics' ``patience``)."""
    try:
        planned = int(recipe.get("epochs"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return []
    return [r for r in records if r.epochs < planned]


def caption(
    recipe: Mapping[str, Any], baseline: str, has_baseline: bool, *, tex: bool = False,
    summaries: Sequence[VariantSummary] = (), records: Sequence[RunRecord] = (),
) -> str:  # fmt: skip
    """The table's caption: the recipe, the split, how to read the numbers, and which runs are missing or stopped
    early."""
    esc = tex_escape if tex else str
    task = records_task(records, recipe.get("task"))
    second, first = (esc(label(c, task)) for c in SHOWN[task])
    pm, delta, geq = ("$\\pm$", "$\\Delta$", "$\\geq$") if tex else ("±", "Δ", "≥")
    pct, n, p = ("\\%", "$n$", "$p$") if tex else ("%", "n", "p")
    split = split_of(recipe)
    head = "Ablation: " + "; ".join(esc(i) for i in _recipe_items(recipe)) + "."
    where = f"the {esc(split)} split" + (" (best.pt chosen on val)" if split != "val" else "")
    k = sum(s.test.p is not None for s in summaries)
    conf = f"{round(100 * CONFIDENCE)}{pct}"
    comparisons = f"{k} comparison{'' if k == 1 else 's'} of the table" if k else "comparisons of the table (none yet)"
    how = (
        f" {second} and {first} of each run's best.pt on {where} in {pct}, mean {pm} sample standard deviation over"
        f" the {n} seeds with a value; {delta} {first} in points against {esc(baseline)}, with its {conf} confidence"
        f" interval (Welch{'--' if tex else '–'}Satterthwaite df); {p}: two-sided Welch t-test on {first},"
        f" Holm-adjusted over the {comparisons}; within seed spread: {p} {geq} {ALPHA:g}, a single"
        " seed, or no spread to test."
    )
    if not has_baseline:
        how += f" The baseline {esc(baseline)} has no finished run yet: no {delta}."
    missing = [f"{_who(s.variant, seed)} ({'failed' if why.startswith('failed') else 'NaN'})"
               for s in summaries for seed, why in s.missing]  # fmt: skip
    if missing:
        how += " Missing: " + esc(", ".join(missing)) + "."
    early = stopped_early(records, recipe)
    if early:
        how += " Stopped early: " + esc(", ".join(
            f"{_who(r.variant, r.seed)} after {r.epochs} of {recipe.get('epochs')} epochs" for r in early)) + "."
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


def markdown(summaries: Sequence[VariantSummary], cap: str, notes: Sequence[str], task: str = "detect") -> str:
    def cell(t: str) -> str:
        return t.replace("|", "\\|")

    heads = headers(task)
    lines = [
        "# Ablation summary",
        "",
        cap,
        "",
        "| " + " | ".join(heads) + " |",
        "|" + "|".join(":---" if i in (0, len(heads) - 1) else "---:" for i in range(len(heads))) + "|",
    ]
    lines += ["| " + " | ".join(cell(c) for c in _cells(s, task)) + " |" for s in summaries]
    lines += ["", "Readings:", ""]
    lines += [f"- {cell(s.variant)}: {s.test.reading} ({s.test.why})" for s in summaries]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def latex(summaries: Sequence[VariantSummary], cap: str, task: str = "detect") -> str:
    """A booktabs table, ready to ``\\input`` (needs ``\\usepackage{booktabs}``).

    ``table*``, footnotesize, units (and, for segment and pose, which mAP) on a second header line: eleven columns
    fit the 6.9 in text width of a two-column paper (CVPR/IEEE, measured with pdflatex), not one of its columns; in
    a one-column document ``table*`` is an ordinary table.
    """
    second, first = SHOWN[task]

    def name_unit(column: str, unit: str) -> tuple[str, str]:
        kind = "box " if column in BOX and task in ("segment", "pose") else ""
        text = LABELS[column]
        if text.startswith(("mask ", "pose ")):
            kind, text = text.split(" ", 1)[0] + " ", text.split(" ", 1)[1]
        return tex_escape(text), f"{kind}({unit})"

    (n2, u2), (n1, u1) = name_unit(second, "\\%"), name_unit(first, "\\%")
    d1 = name_unit(first, "pt")[1]
    names = ["Variant", "$n$", "Params", "GFLOPs", "Latency", n2, n1, f"$\\Delta${n1}", "95\\% CI",
             "$p_{\\mathrm{Holm}}$", "Reading"]  # fmt: skip
    units = ["", "", "(M)", "", "(ms)", u2, u1, d1, "(pt)", "", ""]
    rows = [" & ".join(_cells(s, task, tex=True)) + " \\\\" for s in summaries]
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
    return {"n": s.n, "mean": s.mean, "std": s.std}


def summary_json(
    summaries: Sequence[VariantSummary], records: Sequence[RunRecord], recipe: Mapping[str, Any], baseline: str,
    cap: str, notes: Sequence[str], failed: Sequence[Failed] = (),
) -> str:  # fmt: skip
    task = records_task(records, recipe.get("task"))
    primary = task_metrics.primary(task)
    variants = []
    for s in summaries:
        variants.append(
            {
                "variant": s.variant,
                "n": s.n,
                "seeds": list(s.seeds),
                "missing": [{"seed": seed, "reason": why} for seed, why in s.missing],
                "params_m": _spread_json(s.params_m),
                "gflops": _spread_json(s.gflops),
                "latency_ms": _spread_json(s.latency_ms),
                **{c: _spread_json(m) for c, m in s.metrics.items()},
                "delta": None if s.delta is None else dict(s.delta),
                "ci95": None if s.test.ci95 is None else list(s.test.ci95),
                "df": s.test.df,
                "p": s.test.p,
                "p_holm": s.test.p_holm,
                "reading": s.test.reading,
                "why": s.test.why,
            }
        )
    k = sum(s.test.p is not None for s in summaries)
    doc = {
        "baseline": baseline,
        "has_baseline": any(s.is_baseline for s in summaries),
        "task": task,
        "metric": primary,
        "split": split_of(recipe),
        "alpha": ALPHA,
        "test": f"two-sided Welch t-test on {primary} per seed (scipy.stats.ttest_ind, equal_var=False)",
        "ci95": f"{CONFIDENCE:.0%} confidence interval of Δ {primary}, Welch–Satterthwaite degrees of freedom",
        "adjustment": f"Holm over the {k} comparisons with a p; the reading comes from p_holm",
        "comparisons": k,
        "units": {"params_m": "millions", "gflops": "GFLOPs", "latency_ms": "ms",
                  **{c: "fraction" for c in task_metrics.columns(task)}, "delta": "as each quantity",
                  "ci95": "fraction"},  # fmt: skip
        "runs": len(records),
        "failed": [{"variant": v, "seed": seed, "reason": why} for v, seed, why in failed],
        "stopped_early": [
            {"variant": r.variant, "seed": r.seed, "epochs": r.epochs, "of": recipe.get("epochs"),
             "best_epoch": r.best_epoch}
            for r in stopped_early(records, recipe)
        ],  # fmt: skip
        "caption": cap,
        "recipe": recipe,
        "variants": variants,
        "notes": list(notes),
    }
    return json.dumps(_jsonable(doc), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


READING_STYLE = {BETTER: "green", WORSE: "red", BASELINE: "bold", NO_BASELINE: "yellow", MISSING: "yellow"}


def rich_table(summaries: Sequence[VariantSummary], cap: str, task: str = "detect") -> Table:
    """The summary for the terminal, in the look of the tool's other tables."""
    table = Table(box=None, pad_edge=False, show_header=True, header_style="bold", caption=escape(cap))
    heads = headers(task)
    for i, h in enumerate(heads):
        table.add_column(h, justify="left" if i in (0, len(heads) - 1) else "right")
    for s in summaries:
        cells = [escape(c) for c in _cells(s, task)]
        style = READING_STYLE.get(s.test.reading, "dim")
        cells[-1] = f"[{style}]{cells[-1]}[/]"
        table.add_row(*cells)
    return table


def _notes(
    summaries: Sequence[VariantSummary], records: Sequence[RunRecord], recipe: Mapping[str, Any], baseline: str,
    has_baseline: bool, skipped: Sequence[str],
) -> list[str]:  # fmt: skip
    notes: list[str] = []
    if not has_baseline:
        notes.append(f"the baseline {baseline!r} has no finished run yet: Δ and p are left out ({DASH})")
    for s in summaries:
        for seed, why in s.missing:
            notes.append(f"{_who(s.variant, seed)}: {why}; left out of the table (n counts real values)")
    for r in stopped_early(records, recipe):
        notes.append(
            f"{_who(r.variant, r.seed)} stopped early: {r.epochs} of {recipe.get('epochs')} epochs (best epoch "
            f"{r.best_epoch})"
        )
    notes += [f"curves.png: {s}" for s in skipped]
    return notes


def _move_aside(exp_dir: Path, keep: set[str]) -> list[str]:
    """Move every regular file of :data:`FILES` not in ``keep`` into ``<exp_dir>/report.stale/``; the names moved.
    Links are left where they are (never followed, never renamed)."""
    moved = []
    for name in FILES:
        path = exp_dir / name
        if name in keep or path.is_symlink() or not path.is_file():
            continue
        stale = exp_dir / STALE
        try:
            if stale.is_symlink():
                continue
            stale.mkdir(exist_ok=True)
            os.replace(path, stale / name)
            moved.append(name)
        except OSError:
            continue
    return moved


def _clear_stale(exp_dir: Path) -> None:
    """A report was written whole: the files a failed one moved aside are superseded (the tool's own output)."""
    stale = exp_dir / STALE
    if stale.is_symlink() or not stale.is_dir():
        return
    for name in FILES:
        path = stale / name
        if path.is_file() and not path.is_symlink():
            path.unlink()
    try:
        stale.rmdir()
    except OSError:
        pass  # something else is in there: not the tool's


def write_report(
    exp_dir: Path,
    records: Sequence[RunRecord],
    recipe: Mapping[str, Any],
    *,
    baseline: str = "stock",
    failed: Sequence[Failed] = (),
) -> Report:
    """Write the report of ``records`` (finished runs, in the order they should be listed) into ``exp_dir``.

    ``failed``: ``(variant, seed, one-line reason)`` of runs that failed (no record): shown as missing, like a run
    whose primary metric is NaN. Files are written atomically, only after all of them were built; ``exp_dir`` must
    exist. A report file that is a symbolic link refuses the report before anything is written. A run whose
    ``results.csv`` is missing or cut short is left out of ``curves.png`` only, with a note.

    When the report cannot be written whole, the previous report's files that this call did not replace are moved
    into ``report.stale/`` and :class:`ReportError` says so in one line: no file in ``exp_dir`` is older than the
    records it claims to show.
    """
    exp_dir = Path(exp_dir)
    failed = [(str(v), int(seed), str(why)) for v, seed, why in failed]
    written: set[str] = set()
    try:
        task = records_task(records, recipe.get("task"))
        summaries = summarize(records, baseline=baseline, task=task, failed=failed)
        has_baseline = any(s.is_baseline for s in summaries)
        curves, skipped = plots.load_curves(exp_dir, records, task=task)
        notes = _notes(summaries, records, recipe, baseline, has_baseline, skipped)
        order = [s.variant for s in summaries]
        colors = {v: plots.color(i) for i, v in enumerate(order)}
        cap = caption(recipe, baseline, has_baseline, summaries=summaries, records=records)
        tex_cap = caption(recipe, baseline, has_baseline, tex=True, summaries=summaries, records=records)
        y_label = label(task_metrics.primary(task), task)
        contents: dict[str, bytes] = {
            "ablation.csv": to_csv(records, task).encode(),
            "summary.md": markdown(summaries, cap, notes, task).encode(),
            "summary.tex": latex(summaries, tex_cap, task).encode(),
            "summary.json": summary_json(summaries, records, recipe, baseline, cap, notes, failed).encode(),
            "curves.png": plots.png_bytes(plots.curves_figure(plots.bands(curves, order), colors, y_label)),
            "tradeoff.png": plots.png_bytes(plots.tradeoff_figure(summaries, colors, y_label)),
        }
        files = [confine(exp_dir, exp_dir / name) for name in FILES]  # a planted link refuses before any write
        for path in files:
            write_atomic(path, contents[path.name], root=exp_dir)
            written.add(path.name)
    except Exception as e:  # noqa: BLE001 - whatever failed, the old files must not pass for current ones
        from mhsa_patch.child.protocol import one_line

        moved = _move_aside(exp_dir, written)
        aside = f"; the previous {', '.join(moved)} moved to {exp_dir / STALE}" if moved else ""
        msg = str(e) if isinstance(e, PatchError) else one_line(e)
        raise ReportError(f"{msg}{aside}") from e
    _clear_stale(exp_dir)
    return Report(files, rich_table(summaries, cap, task), summaries, tuple(notes))
