"""``gen-yaml``: write a ready-to-train model YAML with one of our layers (MHSA by default), built from the target release's own config or the user's.

Exit codes: 0 written, or the file already holds exactly this text (``unchanged``); 1 refused (an existing output
that holds something else, a refused output name, unpatched target with ``--check``, a model that does not build,
an unreadable ``--from`` file), one ``ERROR ❌`` line on stderr and nothing written; 2 usage errors, one
``ERROR ❌ usage: ...`` line: a missing ``--scale`` without ``--from``, ``--heads abc``, and every bad option value
(an unknown scale, base, task, layer or lateral, ``--at P7``, ``--imgsz 0``, ``--heads`` that do not divide C).
The work is :func:`mhsa_patch.modelyaml.write.write_model_yaml`; this module parses and prints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape

from mhsa_patch.cli.console import fail, info, out, warn
from mhsa_patch.cli.options import PythonOpt, TargetOpt, apply_command, pick_target, warn_shadow
from mhsa_patch.errors import PatchError, UsageError
from mhsa_patch.patches import LAYERS

if TYPE_CHECKING:
    from mhsa_patch.modelyaml import emit


def _fmt_gflops(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_check(result: emit.Result, name: str, probe: dict, imgsz: int) -> None:
    """The layer table of the generated model, then both models side by side."""
    mhsa, stock = probe["models"][0], probe["models"][1]
    versions = f"ultralytics {probe.get('ultralytics')} (torch {probe.get('torch')})"
    out.print(f"\n[bold]{escape(name)}[/] built with {versions}")
    header = f"{'':>3}{'from':>20}{'n':>3}{'params':>10}  {'module':<22}{'GFLOPs':>8}  arguments"
    out.print(header, markup=False)
    new = {ins.index for ins in result.insertions}
    for layer in mhsa["layers"]:
        module = str(layer["module"]).rsplit(".", 1)[-1]
        n = layer["n"] if layer["n"] is not None else ""
        line = (
            f"{layer['index']:>3}{str(layer['from']):>20}{n!s:>3}{layer['params']:>10}  {module:<22}"
            f"{_fmt_gflops(layer['gflops']):>8}  {layer['arguments'] or ''}"
        )
        out.print(f"[bold]{escape(line)}[/]" if layer["index"] in new else escape(line))
    expected = result.params
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
    cs = ", ".join(str(ins.channels) for ins in result.insertions)
    c_is = f"C={cs}" if len(result.insertions) == 1 else f"C = {cs}"
    name = result.spec.name
    if expected is None:
        first = result.insertions[0]
        was = f" in place of layer {first.index} {first.replaced}" if first.replaced else ""
        info(f"{name}{was}: {delta:+,} parameters")
    elif delta != expected:
        warn(f"{name} added {delta:,} parameters, expected {expected:,} for {c_is}")
    else:
        positions = " + C·(w+h) positions" if len(result.mhsa_args) > 3 else ""
        each = "" if len(result.insertions) == 1 else f" for each of {len(result.insertions)} layers"
        info(f"{name} adds {delta:,} parameters = 3·(C²+C){positions}{each} with {c_is}")


def read_by(readers) -> str:
    """``read by layer 9``, ``read by layers 11, 21``."""
    return f"read by layer{'s' * (len(readers) != 1)} {', '.join(map(str, readers))}"


def _describe(ins: emit.Insertion, pos_emb: bool, heads: int) -> str:
    from mhsa_patch.modelyaml.graph import stage_label

    name = ins.spec.name
    if ins.replaced is not None:
        return (
            f"{name} in place of layer {ins.index} {ins.replaced} ({stage_label(ins.stride)}, {ins.channels} "
            f"channels, args {ins.mhsa_args}), {read_by(ins.readers)}"
        )
    given = " from --channels" if ins.channels_given else ""
    positions = f", {ins.grid}x{ins.grid} positions" if pos_emb else ""
    heads_ = f", {heads} heads" if "heads" in ins.spec.options else ""
    args = "" if "heads" in ins.spec.options else f", args {ins.row_args}"
    return (
        f"{name} after layer {ins.after} as layer {ins.index} ({stage_label(ins.stride)}, C={ins.channels}{given}"
        f"{heads_}{positions}{args}), {read_by(ins.readers)}"
    )


def gen_yaml(
    scale: Annotated[
        Optional[str],
        typer.Option(
            "--scale",
            "-s",
            metavar="n|s|m|l|x",
            help="Model scale: n, s, m, l or x. Required, except with --from (default: the file's name or only "
            "scale; refused for a file without 'scales').",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        Optional[str],
        typer.Option(
            "--output",
            "-o",
            metavar="PATH",
            help="File (or folder) to write. Default, in the working directory: a name that says what is in the "
            "file and carries its scale, e.g. yolov8n-MHSA.yaml, yolov8n-MHSA-P3P4P5.yaml, yolo11s-seg-BoT3.yaml "
            "(with --from: the file's name, its scale letter set to --scale, and the layer).",
            show_default=False,
        ),
    ] = None,
    from_yaml: Annotated[
        Optional[str],
        typer.Option(
            "--from",
            metavar="PATH",
            help="Your own model YAML as the base (custom modules, P2 heads ...), in place of the release's config. "
            "Excludes --base and --task.",
            show_default=False,
        ),
    ] = None,
    layer: Annotated[
        Optional[str],
        typer.Option(
            "--layer",
            metavar="|".join(spec.name for spec in LAYERS) + "|NAME",
            help="The layer to add: "
            + "; ".join(f"{spec.name}: {spec.note}" for spec in LAYERS)
            + "; a layer registered with 'apply --layer' (inserted after --at, or in place of the last C2f for a "
            + f"CSP block). Options a layer does not take are refused. [default: {LAYERS[0].name}]",
            show_default=False,
        ),
    ] = None,
    heads: Annotated[
        int, typer.Option("--heads", metavar="N", help="Attention heads; must divide the channels C.")
    ] = 4,
    pos_emb: Annotated[
        bool,
        typer.Option("--pos-emb", help="Learned relative positions, sized to the feature grid at --imgsz."),
    ] = False,
    imgsz: Annotated[
        int,
        typer.Option("--imgsz", metavar="N", help="Training image size: the grid of --pos-emb, the GFLOPs of --check."),
    ] = 640,
    base: Annotated[
        Optional[str],
        typer.Option(
            "--base", metavar="yolov8|yolo11|yolo26", help="Model family: yolov8, yolo11 or yolo26. [default: yolov8]"
        ),
    ] = None,
    task: Annotated[
        Optional[str],
        typer.Option(
            "--task", metavar="detect|segment|pose|obb", help="detect, segment, pose or obb. [default: detect]"
        ),
    ] = None,
    at: Annotated[
        Optional[str],
        typer.Option(
            "--at",
            metavar="P3,P4,P5",
            help="Insert after a backbone stage (P3, P4, P5: the stage's last layer), a backbone module "
            "(SPPF, C2PSA) or a layer index; several, comma-separated (P3,P4,P5), insert one MHSA after each. "
            "Default: P5.",
            show_default=False,
        ),
    ] = None,
    channels: Annotated[
        Optional[str],
        typer.Option(
            "--channels",
            metavar="C[,C...]",
            help="The channels C MHSA gets, where a module gen-yaml does not know feeds it: one value, or one per "
            "--at point (comma-separated).",
            show_default=False,
        ),
    ] = None,
    lateral: Annotated[
        str,
        typer.Option(
            "--lateral",
            metavar="attention|pre-attention",
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
    """Write a model YAML with MHSA (or --layer BoT3).

    Built from the installed release's own config (or from yours with --from).
    """
    # here, not at import: every other command would pay for PyYAML
    from mhsa_patch.modelyaml import request, write

    try:
        if scale is None and from_yaml is None:
            raise UsageError("missing option '--scale' / '-s': n, s, m, l or x (only --from can do without)")
        res = pick_target(target, python)
        tgt = res.target
        from mhsa_patch.patching.engine import user_specs

        req = request.Request(
            scale=scale, base=base, task=task, heads=heads, pos_emb=pos_emb, imgsz=imgsz, at=at, lateral=lateral,
            from_yaml=from_yaml, channels=channels, layer=layer, extra=user_specs(tgt) if layer else (),
        )  # fmt: skip
        apply_cmd = apply_command(target, python)
        done = write.write_model_yaml(tgt, req, output, force=force, check=check, apply=apply_cmd)
    except PatchError as e:
        fail(e)
    result = done.result
    warn_shadow(res)
    for note in done.warnings:
        warn(note)
    if done.state != "applied":
        warn(
            f"ultralytics {tgt.version} at {tgt.package} is not patched (status: {done.state}): run '{apply_cmd}' "
            "before building or training this model"
        )
    where = escape(str(done.path))
    did = "unchanged" if done.unchanged else "wrote"  # the same command run twice: the file already holds this text
    if len(result.insertions) == 1:
        info(f"{did} {where}: {_describe(result.insertions[0], req.pos_emb, req.heads)}")
    else:
        info(f"{did} {where}: {len(result.insertions)} {result.spec.name} layers")
        for ins in result.insertions:
            info(f"  {_describe(ins, req.pos_emb, req.heads)}")
    if done.probe is not None:
        print_check(result, done.path.name, done.probe, imgsz)
    info(f"next: [bold]yolo {result.task} train model={where} data=...[/]")
