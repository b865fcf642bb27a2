"""``check`` and ``port-weights``: parse options, run the child against the target, print, pick the exit code."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from collections.abc import Iterator
from typing import Annotated, Optional

import typer
from rich.markup import escape

from mhsa_patch.cli.console import fail, header, info, out, warn
from mhsa_patch.errors import PatchError
from mhsa_patch.patches import layer_names
from mhsa_patch.patching.torchload import weights_only_note
from mhsa_patch.cli.options import PythonOpt, TargetOpt, apply_command, open_target, pick_target, warn_shadow


class _Steps:
    """Progress of the child's steps: a spinner on a terminal, one ``✔ step (time)`` line per finished step, one line
    per finished training epoch. Plain lines, no escape codes or carriage returns, when stdout is not a terminal.

    With ``verbose`` the child's own output (ultralytics' logs and progress bars) is shown too: the spinner then stops
    for good before the steps where ultralytics prints.
    """

    QUIET_STEPS = {"data", "train", "reload"}  # ultralytics prints during these

    def __init__(self, enabled: bool = True, verbose: bool = False):
        self.enabled = enabled
        self.verbose = verbose
        self.current: Optional[str] = None
        self.started = 0.0
        self.status = None
        self.epoch_t: Optional[float] = None  # the child's clock at the last epoch's end (events carry "t")

    def __call__(self, event: dict) -> None:
        if not self.enabled:
            return
        if "epoch" in event:
            self._epoch(event)
            return
        if "step" not in event:
            return
        hands_over = self.verbose and event["step"] in self.QUIET_STEPS
        if hands_over:
            self._stop_spinner()  # first: a stopping spinner clears its own line
        self._finish()
        self.current, self.started = event.get("msg", event["step"]), time.monotonic()
        if event["step"] == "train":
            self.epoch_t = event.get("t")
        if hands_over:
            out.print(f"  [bold]…[/] {escape(self.current)}")
            self.current = None  # ultralytics' own output shows this step's progress
        elif out.is_terminal:
            if self.status is None:
                self.status = out.status(escape(self.current), spinner="dots")
                self.status.start()
            else:
                self.status.update(escape(self.current))

    def _epoch(self, event: dict) -> None:
        t, took = event.get("t"), ""
        if isinstance(t, (int, float)) and isinstance(self.epoch_t, (int, float)):
            took = f" [dim]({t - self.epoch_t:.1f} s)[/]"
        self.epoch_t = t
        out.print(f"    epoch {event['epoch']}/{event.get('epochs', '?')}: {escape(epoch_line(event))}{took}")

    def _finish(self) -> None:
        if self.current is not None:
            out.print(f"  [green]✔[/] {escape(self.current)} [dim]({time.monotonic() - self.started:.1f} s)[/]")
            self.current = None

    def _stop_spinner(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None

    def close(self, ok: bool) -> None:
        self._stop_spinner()
        if ok:
            self._finish()

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Close the display however the block ends; a refusal or Ctrl-C becomes one line and an exit code."""
        try:
            yield
        except PatchError as e:
            self.close(ok=False)
            fail(e)
        except KeyboardInterrupt:
            self.close(ok=False)
            fail("interrupted", code=130)
        self.close(ok=True)


def epoch_line(event: dict) -> str:
    """``box_loss 3.214, cls_loss 4.102, dfl_loss 2.310; mAP50-95(B) 0.000`` from a child's epoch event."""
    loss = ", ".join(f"{k} {v:.3f}" for k, v in (event.get("loss") or {}).items())
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in (event.get("metrics") or {}).items())
    return "; ".join(p for p in (loss, metrics) if p) or "done"


def _model_name(report: dict) -> str:
    stem = Path(report.get("model", "model")).stem
    return stem.replace("yolo", "YOLO", 1)


def _fmt_from(f) -> str:
    return str(f)


def _print_table(summary: dict, ours: frozenset = frozenset()) -> None:
    """The layer table as ultralytics prints it, with the true GFLOPs of each layer added; the patch's layers and
    the user layers ``ours`` in bold."""
    out.print(
        f"\n{'':>3}{'from':>20}{'n':>3}{'params':>10}{'GFLOPs':>9}  {'module':<45}{'arguments':<30}", markup=False
    )
    for layer in summary.get("layers", []):
        g = layer.get("gflops")
        gs = f"{g:9.3f}" if isinstance(g, (int, float)) else f"{'':>9}"
        n = layer.get("n")
        args = layer.get("arguments")
        line = (
            f"{layer['index']:>3}{_fmt_from(layer['from']):>20}{(n if n is not None else ''):>3}{layer['params']:10.0f}"
            f"{gs}  {layer['module']:<45}{(args if args is not None else ''):<30}"
        )
        if layer["module"].rsplit(".", 1)[-1] in layer_names() or layer["module"].rsplit(".", 1)[-1] in ours:
            out.print(f"[bold magenta]{escape(line)}[/]")
        else:
            out.print(line, markup=False)


def _signed(x: float, spec: str = ",") -> str:
    """``+214,784``, ``−245,504`` (a real minus sign), ``+7.1%``: a difference in plain words."""
    text = format(abs(x), spec)
    return ("−" if x < 0 else "+") + text


def _print_check(report: dict, ours: frozenset = frozenset()) -> None:
    s, st, lat = report["summary"], report["stock"], report["latency"]
    name = _model_name(report)
    _print_table(s, ours)
    thop = s.get("gflops_thop")
    thop_note = f"; ultralytics' own count says {thop:.1f}" if isinstance(thop, (int, float)) else ""
    out.print(
        f"{name} summary: {len(s['layers'])} layers, {s['parameters']:,} parameters, {s['gradients']:,} gradients, "
        f"{s['gflops']:.1f} GFLOPs at {s['imgsz']}x{s['imgsz']} (true, attention included{thop_note})",
        markup=False,
    )
    if st.get("note"):
        warn(st["note"])
    out.print(
        f"baseline: {st.get('name', 'the stock model')} (nc={st.get('nc', '?')}): {st['layers']} layers, "
        f"{st['parameters']:,} parameters, {st['gflops']:.1f} GFLOPs",
        markup=False,
    )
    dp = s["parameters"] - st["parameters"]
    dg = s["gflops"] - st["gflops"]
    out.print(
        f"{st.get('changes', 'the added layers')}: {_signed(dp)} parameters ({_signed(dp / st['parameters'], '.1%')}), "
        f"{_signed(dg, '.2f')} GFLOPs ({_signed(dg / st['gflops'], '.1%')})",
        markup=False,
    )
    out.print(
        f"CPU latency at {lat['imgsz']}x{lat['imgsz']}, batch 1, {lat['threads']} thread{'s' * (lat['threads'] != 1)}, median of {lat['runs']}: "
        f"{lat['model_ms']:.1f} ms vs {lat['stock_ms']:.1f} ms baseline → ×{lat['ratio']:.2f}",
        markup=False,
    )
    step = report["train_step"]
    out.print(
        f"Training step ({step.get('loss_kind', 'loss')}): {step['loss']:.3f} {step['loss_items']}, "
        f"gradient norm of the added layers {step['added_grad_norm']:.3g}",
        markup=False,
    )
    tr = report.get("train")
    if tr:
        rel = ", ".join(f"{k} ({v['boxes']} boxes)" for k, v in tr["reloaded"].items())
        out.print(
            f"Training run: {tr['iterations']} iterations, finite losses {tr['first_loss']} → {tr['last_loss']}; "
            f"reloaded and predicted: {rel}",
            markup=False,
        )
        if tr.get("save_dir"):
            out.print(f"Run kept in {tr['save_dir']}", markup=False)


def _ranges(pairs: list[list[int]]) -> str:
    """``[[10, 11], [11, 12], ...]`` → ``10-22 → 11-23`` (runs of consecutive layers with the same shift)."""
    runs: list[list[int]] = []
    for i, j in pairs:
        if runs and i == runs[-1][1] + 1 and j - i == runs[-1][2]:
            runs[-1][1] = i
        else:
            runs.append([i, i, j - i])
    parts = []
    for a, b, d in runs:
        parts.append(f"{a} → {a + d}" if a == b else f"{a}-{b} → {a + d}-{b + d}")
    return ", ".join(parts)


def _print_lint(result, tgt, *, quiet: bool, lint_only: bool, apply: str) -> None:
    """The lint's findings: info lines on stdout (none with --json), warnings on stderr."""
    if not quiet:
        if result.error is None:  # an error stops the lint: no scale or layer count to tell
            scale = f"scale {result.scale}" if result.scale else "no scale"
            counts = {name: result.added.count(name) for name in dict.fromkeys(result.added)}
            added = ", ".join(f"{n} {name}" for name, n in counts.items()) or "none of the patch's layers"
            what = f"{result.layers} layers, {scale}, {added}"
        else:
            what = f"{result.layers} layers"
        out.print(f"Lint {result.name}: {what}, --imgsz {result.imgsz}", markup=False)
        for c in result.calls:  # every MHSA and BoT3 row, as the target's parse_model reads it
            out.print(f"  {c.describe()}", markup=False)
        if lint_only and result.calls and result.patched is False:
            out.print(
                f"  ultralytics {tgt.version} at {tgt.package} is not patched: "
                f"run '{apply}{result.apply_hint.removeprefix('mhsa-patch apply')}' before building or training this model",
                markup=False,
            )
    for f in result.warnings:
        warn(f.message)


def check(
    model: Annotated[
        str,
        typer.Argument(
            metavar="MODEL", help="The MHSA model: a YAML (from gen-yaml) or a .pt checkpoint."
        ),
    ],
    target: TargetOpt = None,
    python: PythonOpt = None,
    train: Annotated[
        bool,
        typer.Option("--train", help="Also train briefly with ultralytics' own trainer on a synthetic dataset."),
    ] = False,
    imgsz: Annotated[int, typer.Option("--imgsz", min=64, metavar="N", help="Square size for forward, FLOPs and latency.")] = 640,
    runs: Annotated[int, typer.Option("--runs", min=1, metavar="N", help="Timed runs per model for the latency ratio.")] = 10,
    train_imgsz: Annotated[int, typer.Option("--train-imgsz", min=32, metavar="N", help="Image size of the --train run.")] = 128,
    epochs: Annotated[int, typer.Option("--epochs", min=1, metavar="N", help="Epochs of the --train run.")] = 1,
    batch: Annotated[int, typer.Option("--batch", min=1, metavar="N", help="Batch size of the --train run.")] = 4,
    images: Annotated[int, typer.Option("--images", min=2, metavar="N", help="Synthetic training images of the --train run.")] = 16,
    keep: Annotated[
        Optional[str], typer.Option("--keep", metavar="PATH", help="Keep the --train run (dataset, weights) in this folder.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object on stdout.")] = False,
    lint_only: Annotated[
        bool,
        typer.Option("--lint-only", help="Stop after the lint of the YAML: no build, no child process, no patch needed."),
    ] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Lint warnings fail the command (exit 1), for CI.")] = False,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", help="Also show ultralytics' own log: the trainer's lines and progress bars."),
    ] = False,
) -> None:
    """Prove an MHSA model builds and trains.

    Lints the YAML; builds it; runs forward (square and rectangular), backward and one optimizer step.
    Prints the layer table, the true GFLOPs and the CPU latency against the stock model.
    With --train, also a short real training run with ultralytics' own trainer.
    """
    from mhsa_patch.child.launch import check_inputs, run_check

    steps = _Steps(enabled=not as_json, verbose=verbose)
    lint = None
    with steps.running():
        tgt = open_target(target, python, header_line=not as_json)
        torch_note = weights_only_note(tgt)
        if torch_note:
            warn(torch_note)
        path = check_inputs(model, imgsz=imgsz, train=train, runs=runs, train_imgsz=train_imgsz, epochs=epochs,
                            batch=batch, images=images)
        if path.suffix == ".pt":
            if lint_only:
                raise PatchError(f"{path.name}: --lint-only reads a model YAML (a checkpoint is linted by building it)")
        else:
            from mhsa_patch.modelyaml.lint import lint_file

            lint = lint_file(path, tgt, imgsz=imgsz)
            _print_lint(lint, tgt, quiet=as_json, lint_only=lint_only, apply=apply_command(target, python))
            if lint.error is not None:
                raise PatchError(("" if lint.error.rule == "yaml" else "the model does not build: ") + lint.error.message)
            if strict and lint.warnings:
                raise PatchError(f"--strict: {len(lint.warnings)} lint warning{'s' * (len(lint.warnings) != 1)}")
        if lint_only:
            if as_json:
                sys.stdout.write(json.dumps({"lint": lint.to_dict()}, indent=2) + "\n")
            else:
                n = len(lint.warnings)
                info(f"[green]lint passed ✅[/] ({'no' if not n else n} warning{'s' * (n != 1)}; nothing built)")
            return
        report = run_check(
            tgt,
            model,
            train=train,
            imgsz=imgsz,
            runs=runs,
            train_imgsz=train_imgsz,
            epochs=epochs,
            batch=batch,
            images=images,
            keep=keep,
            on_event=steps,
            quiet=as_json,
            apply=apply_command(target, python),
            verbose=verbose,
        )
    if as_json:
        if lint is not None:
            report["lint"] = lint.to_dict()
        report["torch_load_note"] = torch_note
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    from mhsa_patch.patching.engine import user_layers

    user = frozenset(u.name for u in user_layers(tgt))
    if not report.get("added_layers"):
        names = [*layer_names(), *sorted(user)]
        warn(f"{Path(model).name} has none of the patch's layers ({', '.join(names)}): this checked a stock model")
    _print_check(report, user)
    info(f"[green]check passed ✅[/]{' (with a training run)' if train else ''}")


def port_weights(
    src: Annotated[
        str, typer.Argument(metavar="SRC", help="A stock checkpoint: yolov8n.pt and its kind.")
    ],
    model: Annotated[
        str,
        typer.Argument(
            metavar="MODEL", help="The MHSA model YAML (from gen-yaml) of the same base and scale."
        ),
    ],
    output: Annotated[
        str, typer.Option("--output", "-o", metavar="PATH", help="Where to write the MHSA checkpoint (.pt).")
    ],
    target: TargetOpt = None,
    python: PythonOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUTPUT if it exists.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object on stdout.")] = False,
) -> None:
    """Port stock weights into an MHSA model.

    Each layer of the stock checkpoint goes to the index it moved to; MHSA keeps its initialisation.
    """
    from mhsa_patch.modelyaml.align import port_weights as run_port

    steps = _Steps(enabled=not as_json, verbose=True)  # the port child's own output is shown
    with steps.running():
        res = pick_target(target, python)
        tgt = res.target
        if Path(output).expanduser().exists() and not force:
            raise PatchError(f"{output} exists; pass --force to overwrite it")
        if not as_json:
            header(tgt)
        warn_shadow(res)
        report = run_port(tgt, src, model, output, on_event=steps, quiet=as_json)
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    src_name, out_path = Path(src).name, Path(report["out"])
    if report.get("kept"):
        a, b = report["kept"]
        out.print(f"  layers {a}-{b} keep their index", markup=False)
    if report.get("moved"):
        out.print(f"  layers {_ranges(report['moved'])} (moved past MHSA)", markup=False)
    for layer in report["added_layers"]:
        keys = [k for k in report["left_at_init"] if k.startswith(f"model.{layer['index']}.")]
        out.print(
            f"  layer {layer['index']} {layer['type']}: left at its initialisation "
            f"({len(keys)} tensors, {layer['params']:,} parameters: {', '.join(k.split('.', 2)[2] for k in keys)})",
            markup=False,
        )
    if report.get("yaml_nc") is not None and report.get("nc") is not None and report["yaml_nc"] != report["nc"]:
        warn(
            f"built with nc={report['nc']} as in {src_name} ({Path(model).name} says nc={report['yaml_nc']}); "
            "training on your data resizes the class head as it does for yolov8n.pt"
        )
    out.print(f"Transferred {report['transferred']}/{report['total']} tensors from {src_name}", markup=False)
    info(
        f"[green]saved {escape(str(out_path))} ✅[/] ({report['bytes'] / 1e6:.1f} MB). "
        f"Train it: [bold]yolo train model={escape(str(out_path))} data=YOUR_DATA.yaml[/]"
    )
