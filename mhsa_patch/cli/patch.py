"""``apply``, ``revert`` and ``status``: parse options, call the engine, print, pick the exit code."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.markup import escape

from mhsa_patch.cli.console import err, fail, header, info, out, warn
from mhsa_patch.errors import PatchError
from mhsa_patch.cli.options import PythonOpt, TargetOpt, open_target, pick_target, warn_shadow

DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print the unified diff and write nothing.")]

STATE_STYLE = {"applied": "green", "not-applied": "dim", "partial": "yellow", "conflict": "red"}


def _print_result(result, done: str) -> None:
    for note in result.notes:
        warn(note)
    if result.dry_run:
        if result.nothing_to_do:  # the same words as the real run: no empty diff, no "0 files"
            info(f"nothing to do: {done} (dry run, nothing was written)")
            return
        sys.stdout.write(result.diff())
        sys.stdout.flush()
        n = len(result.changes)
        err.print(f"dry run: {n} file{'s' * (n != 1)} would change, nothing was written")
        return
    for change in result.changes:
        out.print(f"  [green]✔[/] {change.rel}")
    if result.nothing_to_do:
        info(f"nothing to do: {done}")


def _layers(sep: str = ", ") -> str:
    from mhsa_patch.patches import layer_names

    return sep.join(layer_names())


def apply(
    target: TargetOpt = None,
    python: PythonOpt = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace an MHSA pasted by hand (no marker) with the tool's own."),
    ] = False,
    replace_foreign: Annotated[
        bool,
        typer.Option(
            "--replace-foreign",
            help="With --force: also replace a class named MHSA that is not the tutorial's (other parameters).",
        ),
    ] = False,
    dry_run: DryRunOpt = False,
) -> None:
    """Patch ultralytics with MHSA.

    Inserts the class into conv.py, its exports, and its parse_model branch.
    """
    from mhsa_patch.patching import engine

    try:
        tgt = open_target(target, python, header_line=not dry_run)
        result = engine.apply(tgt, force=force or replace_foreign, replace_foreign=replace_foreign, dry_run=dry_run)
    except PatchError as e:
        fail(e)
    _print_result(result, f"{_layers()} already applied")
    if not result.dry_run and result.changes:
        info(f"[green]{_layers()} applied ✅[/] next: [bold]mhsa-patch gen-yaml --scale n[/]")


def revert(target: TargetOpt = None, python: PythonOpt = None, dry_run: DryRunOpt = False) -> None:
    """Undo apply.

    Byte for byte if the files are unchanged since apply, else only the marked pieces are removed.
    """
    from mhsa_patch.patching import engine

    try:
        result = engine.revert(open_target(target, python, header_line=not dry_run), dry_run=dry_run)
    except PatchError as e:
        fail(e)
    _print_result(result, f"{_layers()} not applied")
    if not result.dry_run and result.changes:
        info(f"[green]{_layers()} reverted ✅[/]")
        warn(
            f"models trained with {_layers(' or ')} need the patch to load: run 'mhsa-patch apply' before loading "
            "their .pt files"
        )


def _piece_state(p) -> str:
    """A piece's state and where it is; an unsupported one names its anchor (its reason is in the warning below)."""
    if p.state == "unsupported":
        return f"unsupported here (anchor {p.anchor}" + (f", line {p.line}" if p.line else "") + ")"
    where = f" (line {p.line}" + (f", class at {p.origin}" if p.origin else "") + ")" if p.line else ""
    return f"{p.state}{where}"


def status(
    target: TargetOpt = None,
    python: PythonOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show whether the patch is applied.

    Per file, with any drift since apply; lists every visible copy of ultralytics.
    """
    from mhsa_patch.patching import engine
    from mhsa_patch.patching.discover import copy_states
    from mhsa_patch.patching.torchload import weights_only_note

    try:
        res = pick_target(target, python)
        st = engine.status(res.target)
        copies = None if res.discovery is None else copy_states(res.discovery, {st.target.package: st.state})
        torch_note = weights_only_note(res.target)
    except PatchError as e:
        fail(e)
    if as_json:
        warn_shadow(res)
        data = st.to_dict()
        data["torch_load_note"] = torch_note
        data["python"] = None if res.discovery is None else res.discovery.python
        data["copies"] = None if copies is None else [c.to_dict() for c in copies]
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    header(st.target)
    warn_shadow(res)
    # One line per piece under its file, not a table: a table wraps a piece over two lines at 80 columns, and a
    # piped or narrow output must keep each piece, and each path, whole on its line.
    fw = max(len(f.rel) for f in st.files)
    pw = max((len(p.label) for f in st.files for p in f.pieces), default=0)
    for f in st.files:
        out.print(f"{escape(f.rel):<{fw}}  [{STATE_STYLE[f.state]}]{f.state}[/]")
        for p in f.pieces:
            out.print(f"  {escape(p.label):<{pw}}  {escape(_piece_state(p))}")
    for r in st.readings:  # how parse_model reads each layer's rows (docs/status.md); one line each, as the pieces
        out.print(f"parse_model reads {r.layer} rows: {escape(r.describe())}")
    for note in st.notes:
        warn(note)
    if torch_note:
        warn(torch_note)
    out.print(f"state: [bold {STATE_STYLE[st.state]}]{st.state}[/]")
    if copies and len(copies) > 1:
        d = res.discovery
        out.print(f"\ncopies of ultralytics visible to {escape(d.python)} run in {escape(str(d.cwd))}, in import order:")
        vw = max(len(c.copy.version or "?") for c in copies)
        sw = max(len(c.state) for c in copies)
        for c in copies:  # plain lines, not a Table: a path is never cut to the terminal's width
            mark = "imported" if c.copy.imported else "shadowed"
            state = f"[{STATE_STYLE.get(c.state, 'red')}]{c.state:<{sw}}[/]"
            out.print(f"  {mark}  {c.copy.version or '?':<{vw}}  {state}  {escape(str(c.copy.package))}")
