"""``apply``, ``revert`` and ``status``: parse options, call the engine, print, pick the exit code."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer
from rich.markup import escape

from mhsa_patch.cli.console import err, fail, header, info, out, warn
from mhsa_patch.errors import PatchError, UsageError
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
        what = "" if change.what == "changed" else f" ({change.what})"
        out.print(f"  [green]✔[/] {escape(change.rel)}{what}")
    if result.nothing_to_do:
        info(f"nothing to do: {done}")


def _layers(result=None, sep: str = ", ") -> str:
    """The layers a run is about: the tool's, and the target's user layers after it ran."""
    from mhsa_patch.patches import layer_names

    names = list(layer_names())
    if result is not None:
        names += [n for n in _user_names(result.target) if n not in names]
    return sep.join(names)


def _user_names(target) -> list[str]:
    from mhsa_patch.patching.journal import Journal

    try:
        record = Journal(target.package).read()
    except PatchError:
        return []
    return [u.name for u in record.user_layers] if record is not None else []


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
    layer: Annotated[
        Optional[list[str]],
        typer.Option(
            "--layer",
            metavar="FILE.py[:CLASS]",
            help="Also register your own layer: the nn.Module classes of FILE.py (those no other class of it uses, "
            "or the CLASSes named), or ultralytics' own class NAME (CBAM). Repeatable. See docs/layers.md.",
            show_default=False,
        ),
    ] = None,
    as_name: Annotated[
        Optional[str],
        typer.Option("--as", metavar="NAME", help="Register the one class of --layer under NAME (a name taken).",
                     show_default=False),
    ] = None,
    reads: Annotated[
        Optional[str],
        typer.Option(
            "--reads",
            metavar="input|scaled|none|csp",
            help="How parse_model reads the layer's rows, where its __init__ does not say: input (keeps its "
            "channels), scaled (c1, c2 like Conv), none (no channels), csp (c1, c2, n like C3).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Patch ultralytics with MHSA and your layers.

    Inserts the class into conv.py, its exports, and its parse_model branch.
    """
    from mhsa_patch.patching import engine

    try:
        if (as_name is not None or reads is not None) and not layer:
            flag = "--as" if as_name is not None else "--reads"
            raise UsageError(f"{flag} goes with --layer FILE.py")
        if as_name is not None and len(layer) > 1:
            raise UsageError("--as names one layer: give one --layer with it")
        tgt = open_target(target, python, header_line=not dry_run)
        asked = _ask(tgt, layer or [], as_name, reads)
        result = engine.apply(tgt, force=force or replace_foreign, replace_foreign=replace_foreign, dry_run=dry_run,
                              add=tuple(a.layer for a in asked))
    except PatchError as e:
        fail(e)
    for a in asked:  # on a dry run stdout is the diff alone: the reading goes to stderr
        line = f"{escape(a.layer.name)}: {escape(a.inferred.says())}"
        if dry_run:
            err.print(f"[bold blue]mhsa-patch:[/] {line}")
        else:
            info(line)
    _print_result(result, f"{_layers(result)} already applied")
    if not result.dry_run and result.changes:
        nxt = f"mhsa-patch gen-yaml --scale n --layer {asked[-1].layer.name}" if asked else "mhsa-patch gen-yaml --scale n"
        info(f"[green]{_layers(result)} applied ✅[/] next: [bold]{escape(nxt)}[/]")


def _ask(tgt, specs: list[str], as_name, reads):
    """Every --layer read and checked (all problems at once), before the engine takes the lock."""
    from mhsa_patch.patching.register import ask

    asked, problems = [], []
    for spec in specs:
        try:
            asked += ask(tgt, spec, as_name=as_name, reads=reads)
        except UsageError:
            raise
        except PatchError as e:
            problems += list(e.problems)
    if problems:
        from mhsa_patch.errors import UNCHANGED

        problems = list(dict.fromkeys(problems))
        problems[-1] = f"{problems[-1]}; {UNCHANGED}"  # said as the engine's refusals say it
        raise PatchError(problems=problems)
    names = [a.layer.name for a in asked]
    twice = [n for k, n in enumerate(names) if n in names[:k]]
    if twice:
        raise UsageError(f"--layer: {twice[0]} is asked for twice")
    return asked


def revert(
    target: TargetOpt = None,
    python: PythonOpt = None,
    dry_run: DryRunOpt = False,
    layer: Annotated[
        Optional[str],
        typer.Option("--layer", metavar="NAME", help="Remove one user layer only; everything else stays applied.",
                     show_default=False),
    ] = None,
) -> None:
    """Undo apply.

    Byte for byte if the files are unchanged since apply, else only the marked pieces are removed.
    """
    from mhsa_patch.patching import engine

    try:
        tgt = open_target(target, python, header_line=not dry_run)
        before = _user_names(tgt)
        gone = next((u for u in engine.user_layers(tgt) if u.name == layer), None)
        result = engine.revert(tgt, dry_run=dry_run, layer=layer)
    except PatchError as e:
        fail(e)
    if layer is not None:
        _print_result(result, f"{layer} not applied")
        if not result.dry_run and result.changes:
            info(f"[green]{escape(layer)} reverted ✅[/] the other layers stay applied")
            again = layer if gone is not None and gone.kind == "stock" else (gone.source if gone else "") or "FILE.py"
            warn(f"models trained with {layer} need it to load: run 'mhsa-patch apply --layer {again}' before loading "
                 "their .pt files")
        return
    names = ", ".join([*_layers().split(", "), *before])
    _print_result(result, f"{names} not applied")
    if not result.dry_run and result.changes:
        info(f"[green]{names} reverted ✅[/]")
        warn(
            f"models trained with {' or '.join(names.split(', '))} need the patch to load: run 'mhsa-patch apply' "
            "before loading their .pt files"
        )


def _piece_state(p) -> str:
    """A piece's state and where it is; an unsupported one names its anchor (its reason is in the warning below)."""
    if p.state == "unsupported":
        return f"unsupported here (anchor {p.anchor}" + (f", line {p.line}" if p.line else "") + ")"
    where = f" (line {p.line}" + (f", class at {p.origin}" if p.origin else "") + ")" if p.line else ""
    return f"{p.state}{where}"


def _user_line(u) -> str:
    """``user layer ECA: nn/modules/user_ECA.py from /home/me/eca.py (sha256 1a2b3c4d5e6f, unchanged)``."""
    d = u.to_dict()
    if d["kind"] == "stock":
        return f"user layer {d['name']}: ultralytics' own class ({d['module']}), reads {d['reads']}"
    module = d["module"] + ("" if d["module_state"] == "ok" else f" ({d['module_state']})")
    if d["source"] is None:
        return f"user layer {d['name']}: {module}, reads {d['reads']} (source not recorded: no journal)"
    return (f"user layer {d['name']}: {module} from {d['source']} (sha256 {d['sha256'][:12]}, {d['source_state']}), "
            f"reads {d['reads']}")


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
    for u in st.user_layers:  # one line each: name, where its class lives, its source and hash
        out.print(escape(_user_line(u)))
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
