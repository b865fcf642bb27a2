"""``gen-yaml``: write a ready-to-train MHSA model YAML built from the target release's own config.

Exit codes: 0 written; 1 refused (bad choice or value, existing output, unpatched target with ``--check``, a
model that does not build), one ``ERROR ❌`` line on stderr and nothing written; 2 usage errors found by the
parser itself (a missing ``--scale``, ``--heads abc``). Unknown scale, base, task or lateral names are refusals
(exit 1), not usage errors, so that every bad value gets the same one-line message.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape

from mhsa_patch.cli.console import fail, info, out, warn
from mhsa_patch.errors import PatchError
from mhsa_patch.patching.atomic import write_atomic
from mhsa_patch.cli.options import PythonOpt, TargetOpt, pick_target, warn_shadow
from mhsa_patch.patching.target import Target

if TYPE_CHECKING:
    from mhsa_patch.modelyaml import emit

PROBE_TIMEOUT = 900


def patch_state(target: Target) -> tuple[str, str]:
    """``(state, why)``: the engine's status ("applied", "not-applied", "partial", "conflict") or "unknown"."""
    from mhsa_patch.patching import engine

    try:
        st = engine.status(target)
    except PatchError as e:
        return "unknown", str(e)
    return st.state, "; ".join(st.notes)


def run_probe(target: Target, cfgs: list[str], imgsz: int) -> dict:
    """Build the configs with the target's ultralytics in a child process (see :mod:`mhsa_patch.child.probe`)."""
    import subprocess

    from mhsa_patch.child.env import run_module

    try:
        proc = run_module(target, "mhsa_patch.child.probe", [*cfgs, "--imgsz", str(imgsz)], timeout=PROBE_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise PatchError(f"--check: building the models took more than {PROBE_TIMEOUT} s") from None
    lines = [ln for ln in (proc.stdout or "").splitlines() if ln.strip()]
    try:
        result = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        result = None
    if not isinstance(result, dict):
        tail = [ln for ln in (proc.stderr or "").splitlines() if ln.strip()]
        why = tail[-1].strip() if tail else f"exit code {proc.returncode}"
        raise PatchError(f"--check: the model build crashed: {why}")
    if not result.get("ok"):
        cfg = Path(str(result.get("cfg") or "?")).name
        raise PatchError(f"--check: {cfg} does not build with ultralytics {target.version}: {result.get('error')}")
    return result


def _fmt_gflops(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_check(result: emit.Result, name: str, probe: dict, imgsz: int) -> None:
    """The layer table of the MHSA model, then both models side by side."""
    mhsa, stock = probe["models"][0], probe["models"][1]
    versions = f"ultralytics {probe.get('ultralytics')} (torch {probe.get('torch')})"
    out.print(f"\n[bold]{escape(name)}[/] built with {versions}")
    header = f"{'':>3}{'from':>20}{'n':>3}{'params':>10}  {'module':<22}{'GFLOPs':>8}  arguments"
    out.print(header, markup=False)
    for layer in mhsa["layers"]:
        module = str(layer["module"]).rsplit(".", 1)[-1]
        n = layer["n"] if layer["n"] is not None else ""
        line = (
            f"{layer['index']:>3}{str(layer['from']):>20}{n!s:>3}{layer['params']:>10}  {module:<22}"
            f"{_fmt_gflops(layer['gflops']):>8}  {layer['arguments'] or ''}"
        )
        out.print(f"[bold]{escape(line)}[/]" if layer["index"] in mhsa["mhsa"] else escape(line))
    c = result.channels
    expected = 3 * (c * c + c) + (c * (result.grid * 2) if len(result.mhsa_args) > 3 else 0)
    delta = mhsa["parameters"] - stock["parameters"]
    rows = [
        (result.stock_name, stock),
        (name, mhsa),
    ]
    width = max(len(r[0]) for r in rows + [("difference", None)])
    out.print(
        f"\n{'model':<{width}}  {'layers':>6}  {'parameters':>12}  {'GFLOPs':>8}  {'GFLOPs (thop)':>13}", markup=False
    )
    for label, m in rows:
        out.print(
            f"{label:<{width}}  {len(m['layers']):>6}  {m['parameters']:>12,}  {_fmt_gflops(m['gflops']):>8}  "
            f"{_fmt_gflops(m['gflops_thop']):>13}",
            markup=False,
        )
    def minus(key):
        return None if mhsa[key] is None or stock[key] is None else mhsa[key] - stock[key]

    dg, dt = minus("gflops"), minus("gflops_thop")
    out.print(
        f"{'difference':<{width}}  {len(mhsa['layers']) - len(stock['layers']):>+6}  {delta:>+12,}  "
        f"{'-' if dg is None else f'{dg:+.2f}':>8}  {'-' if dt is None else f'{dt:+.2f}':>13}",
        markup=False,
    )
    out.print(
        f"GFLOPs: one forward pass at {imgsz}x{imgsz} counted by torch's FlopCounterMode, attention matmuls included. "
        "GFLOPs (thop): ultralytics' own estimate; releases that scale a 32x32 pass linearly miss most of the "
        "attention (its cost grows with the square of the grid).",
        markup=False,
    )
    if delta != expected:
        warn(f"MHSA added {delta:,} parameters, expected {expected:,} for C={c}")
    else:
        positions = " + C·(w+h) positions" if len(result.mhsa_args) > 3 else ""
        info(f"MHSA adds {delta:,} parameters = 3·(C²+C) with C={c}{positions}")


def gen_yaml(
    scale: Annotated[
        str, typer.Option("--scale", "-s", help="Model scale: n, s, m, l or x.", show_default=False)
    ],
    output: Annotated[
        Optional[str],
        typer.Option(
            "--output",
            "-o",
            help="File (or folder) to write. Default: <base><scale>[-task]-MHSA.yaml in the working directory.",
            show_default=False,
        ),
    ] = None,
    heads: Annotated[int, typer.Option("--heads", help="Attention heads; must divide the channels C.")] = 4,
    pos_emb: Annotated[
        bool,
        typer.Option("--pos-emb", help="Learned relative positions, sized to the feature grid at --imgsz."),
    ] = False,
    imgsz: Annotated[
        int, typer.Option("--imgsz", help="Training image size: the grid of --pos-emb, the GFLOPs of --check.")
    ] = 640,
    base: Annotated[str, typer.Option("--base", help="Model family: yolov8, yolo11 or yolo26.")] = "yolov8",
    task: Annotated[str, typer.Option("--task", help="detect, segment, pose or obb.")] = "detect",
    at: Annotated[
        Optional[str],
        typer.Option(
            "--at",
            help="Insert after a backbone stage (P3, P4, P5: the stage's last layer), a backbone module "
            "(SPPF, C2PSA) or a layer index. Default: P5.",
            show_default=False,
        ),
    ] = None,
    lateral: Annotated[
        str,
        typer.Option(
            "--lateral",
            help="What the head's other readers of that layer get: 'attention' (the MHSA output, the "
            "tutorial's wiring) or 'pre-attention' (the feature before MHSA).",
        ),
    ] = "attention",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")] = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Build the model with the target's patched ultralytics first; print its layers, parameters "
            "and true GFLOPs next to the stock model.",
        ),
    ] = False,
    target: TargetOpt = None,
    python: PythonOpt = None,
) -> None:
    """Write a ready-to-train MHSA model YAML, built from the installed release's own config."""
    from mhsa_patch.modelyaml import emit, graph, naming, request  # here, not at import: every other command would pay for PyYAML

    try:
        res = pick_target(target, python)
        tgt = res.target
        req = request.Request(
            scale=scale, base=base, task=task, heads=heads, pos_emb=pos_emb, imgsz=imgsz, at=at, lateral=lateral
        )
        result = emit.generate(tgt, req)
        path = Path.cwd() / result.file_name if output is None else Path(output).expanduser()
        if output is not None and (path.is_dir() or output.endswith(("/", os.sep))):
            if not path.is_dir():
                raise PatchError(f"{output}: no such directory")
            path = path / result.file_name
        path = path.absolute()
        notes = list(result.warnings) + naming.check_output(path, req, tgt, force=force)
        state, why = patch_state(tgt)
        if check and state != "applied":
            detail = f" ({why})" if state == "unknown" and why else ""
            raise PatchError(
                f"--check needs the patch: ultralytics {tgt.version} at {tgt.package} is not patched "
                f"(status: {state}{detail}); run 'mhsa-patch apply' first"
            )
        probe = None
        if check:
            with tempfile.TemporaryDirectory(prefix="mhsa-gen-yaml-") as tmp:
                # both by path, each in its own folder: a stock name alone would resolve against the cwd first
                trial = Path(tmp) / "mhsa" / path.name
                stock = Path(tmp) / "stock" / result.stock_name
                for file, data in ((trial, result.text.encode("utf-8")), (stock, result.base_file.read_bytes())):
                    file.parent.mkdir()
                    file.write_bytes(data)
                probe = run_probe(tgt, [str(trial), str(stock)], imgsz)
        try:
            write_atomic(path, result.text.encode("utf-8"), exclusive=not force)
        except FileExistsError:
            raise PatchError(f"{path} exists: pass --force to overwrite it") from None
    except PatchError as e:
        fail(e)
    warn_shadow(res)
    for note in notes:
        warn(note)
    if state != "applied":
        warn(
            f"ultralytics {tgt.version} at {tgt.package} is not patched (status: {state}): run 'mhsa-patch apply' "
            "before building or training this model"
        )
    info(
        f"wrote {escape(str(path))}: MHSA after layer {result.after} as layer {result.index} "
        f"({graph.stage_label(result.stride)}, C={result.channels}, {req.heads} heads"
        f"{f', {result.grid}x{result.grid} positions' if req.pos_emb else ''}), read by layers "
        f"{', '.join(map(str, result.readers))}"
    )
    if probe is not None:
        print_check(result, path.name, probe, imgsz)
    task_word = {"detect": "detect", "segment": "segment", "pose": "pose", "obb": "obb"}[req.task]
    info(f"next: [bold]yolo {task_word} train model={escape(str(path))} data=...[/]")
