"""``ablate``: parse options, run the experiment (:mod:`mhsa_patch.ablate.runner`), show its progress, print its table.

Progress: a rich display (runs done/total with ETA, each current run's variant, seed, epoch and last mAP50-95) on
a terminal; plain lines, one per event that matters, when stdout is not one (CI logs: no escape codes, no ``\\r``);
nothing but errors and the final paths with ``--quiet``. The runs' own ultralytics output goes to
``<dir>/logs/<run>.log`` as plain lines (``--verbose`` prints each log's path as its run starts and keeps the raw
output too). A failed run is one ``ERROR`` line at the end, after the report of the runs that finished: exit 1.
``--status`` prints the grid's state from its files (:mod:`mhsa_patch.ablate.status`) and trains nothing.
"""

from __future__ import annotations

import threading
import time
from typing import Annotated, Optional

import typer
from rich.markup import escape

from mhsa_patch.cli.console import err, fail, info, out, table, warn
from mhsa_patch.cli.options import PythonOpt, TargetOpt, open_target
from mhsa_patch.errors import PatchError, UsageError


def optional_ray_address(argv: list[str]) -> list[str]:
    """``ablate ... --ray`` with no ADDRESS means ``--ray auto``: Typer has no options with an optional value, so the
    command line is completed before it parses (only before a bare ``--``, where the training arguments start)."""
    if "ablate" not in argv:
        return argv
    out = list(argv)
    end = out.index("--") if "--" in out else len(out)
    for k in range(end - 1, -1, -1):
        if out[k] == "--ray" and (k + 1 >= end or out[k + 1].startswith("-")):
            out.insert(k + 1, "auto")
    return out


class _Progress:
    """Fed by the runner's events (from any thread); draws a rich progress display or prints plain lines."""

    def __init__(self, total: int, done: int, *, quiet: bool, verbose: bool, exp_dir):
        self.quiet, self.verbose, self.exp_dir = quiet, verbose, exp_dir
        self.total, self.done = total, done
        self.lock = threading.Lock()
        self.live = None
        self.tasks: dict[str, int] = {}
        self.frac: dict[str, float] = {}
        self.t0 = time.monotonic()
        if not quiet and out.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.live = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[note]}"),
                TimeRemainingColumn(), console=out, transient=False,
            )  # fmt: skip
            self.overall = self.live.add_task("[bold]runs[/]", total=total, completed=done, note="")
            self.live.start()

    def step(self, msg: str) -> None:
        if not self.quiet:
            out.print(f"  [bold]…[/] {escape(msg)}")

    def __call__(self, kind: str, run, data: dict) -> None:
        with self.lock:
            getattr(self, f"_{kind}")(run, data)

    def _start(self, run, data) -> None:
        self.frac[run.name] = 0.0
        log = f" (log: {self.exp_dir / 'logs' / (run.name + '.log')})" if self.verbose else ""
        if self.live is not None:
            self.tasks[run.name] = self.live.add_task(f"{escape(run.variant)} seed {run.seed}", total=None, note="")
            if log:
                self.live.console.print(escape(f"{run.name}{log}"))
        elif not self.quiet:
            out.print(f"{run.name}: started ({self.done + 1}/{self.total}){log}", markup=False, highlight=False)

    def _event(self, run, ev) -> None:
        if "epoch" in ev:
            n, e, m = int(ev["epoch"]), int(ev["epochs"]), float(ev.get("map50_95", 0.0))
            self.frac[run.name] = n / max(e, 1)
            note = f"epoch {n}/{e}  mAP50-95 {m:.3f}"
            if self.live is not None:
                self.live.update(self.tasks[run.name], total=e, completed=n, note=note)
                self._overall()
            elif not self.quiet:
                out.print(f"{run.name}: {note}", markup=False, highlight=False)
        elif ev.get("started") and ev.get("resumed_from"):
            msg = f"{run.name}: resuming after epoch {ev['resumed_from']} of {ev['epochs']}"
            if self.live is not None:
                self.live.console.print(escape(msg))
            elif not self.quiet:
                out.print(msg, markup=False, highlight=False)
        elif ev.get("restarted"):
            msg = (f"{run.name}: attempt {ev['restarted']} on {ev.get('node')} "
                   "(the previous one lost its node or process)")  # fmt: skip
            if self.live is not None:
                self.live.console.print(escape(msg))
            elif not self.quiet:
                out.print(msg, markup=False, highlight=False)
        elif ev.get("validating") and self.live is not None and run.name in self.tasks:
            self.live.update(self.tasks[run.name], note="validating best.pt")

    def _warning(self, run, data) -> None:
        if self.live is not None:
            self.live.console.print(f"[yellow]WARNING ⚠️[/] {escape(str(data['msg']))}")
        else:
            warn(str(data["msg"]))

    def _failed(self, run, data) -> None:
        self.frac.pop(run.name, None)
        self._ended(run, _failed_line(run.label, data["reason"]), "[red]✘[/]")

    def _done(self, run, result) -> None:
        self.done += 1
        self.frac.pop(run.name, None)
        from mhsa_patch.ablate.record import headline

        stop = f", stopped early after epoch {result['stop_epoch']}" if result.get("stopped_early") else ""
        msg = (f"{run.name}: done ({self.done}/{self.total}) in {result['train_s']:.1f} s, "
               f"{headline(result)}, best epoch {result['best_epoch']}{stop}")  # fmt: skip
        self._ended(run, msg, "[green]✔[/]")

    def _ended(self, run, msg: str, mark: str) -> None:
        """A run's last line: in place of its progress bar, with ``mark``, on a terminal; plain otherwise (unless quiet)."""
        if self.live is not None:
            if run.name in self.tasks:
                self.live.remove_task(self.tasks.pop(run.name))
            self.live.console.print(f"{mark} {escape(msg)}")
            self._overall()
        elif not self.quiet:
            out.print(msg, markup=False, highlight=False)

    def _overall(self) -> None:
        self.live.update(self.overall, completed=self.done + sum(self.frac.values()))

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


def ablate(
    data: Annotated[Optional[str], typer.Option("--data", metavar="DATA.yaml", help="Dataset YAML (used as it is), or 'synthetic' / "
                                                "'synthetic:N' (check --train's offline shapes set, N training images).",
                                                show_default=False)] = None,  # fmt: skip
    target: TargetOpt = None,
    python: PythonOpt = None,
    scale: Annotated[str, typer.Option("--scale", "-s", metavar="n|s|m|l|x", help="Scale of every variant (stock:s picks another).")] = "n",
    variant: Annotated[
        Optional[list[str]],
        typer.Option("--variant", "-v", metavar="V", help="stock, stock:SCALE, MHSA, MHSA@P3, MHSA@P3+P4+P5, BoT3, a layer of "
                     "'apply --layer' (ECA, ECA@P4), yaml:PATH; "
                     "repeat it (default: stock, MHSA, BoT3); stock is always trained.", show_default=False),
    ] = None,  # fmt: skip
    seeds: Annotated[str, typer.Option("--seeds", metavar="N|0,1,2", help="A count (3: seeds 0, 1, 2) or a list (0,1,2).")] = "3",
    epochs: Annotated[int, typer.Option("--epochs", min=1, metavar="N")] = 100,
    imgsz: Annotated[int, typer.Option("--imgsz", min=32, metavar="N")] = 640,
    batch: Annotated[int, typer.Option("--batch", min=1, metavar="N")] = 16,
    weights: Annotated[
        Optional[str],
        typer.Option("--weights", metavar="PATH", help="Start every variant from this checkpoint (ported, as port-weights does). "
                     "Default: from scratch.", show_default=False),
    ] = None,  # fmt: skip
    device: Annotated[
        Optional[str],
        typer.Option("--device", metavar="cpu|0|0,1,2,3", help="cpu, a GPU (0), or several (0,1,2,3): one run per GPU at once. "
                     "Default: every visible GPU, one run each; the CPU where there is none.", show_default=False),
    ] = None,  # fmt: skip
    project: Annotated[str, typer.Option("--project", metavar="PATH", help="Parent folder of the experiment.")] = "runs/ablate",
    name: Annotated[str, typer.Option("--name", metavar="NAME", help="The experiment's folder; another name starts another one.")] = "exp",
    ray: Annotated[
        Optional[str],
        typer.Option("--ray", metavar="[ADDRESS]", help="Run each run as a Ray task on the cluster at ADDRESS ('auto': RAY_ADDRESS or "
                     "the local cluster; 'local': start one here for this command).", show_default=False),
    ] = None,  # fmt: skip
    storage: Annotated[
        Optional[str],
        typer.Option("--storage", metavar="PATH|URI", help="With --ray: keep each run's epoch snapshots in this folder, or at this URI "
                     "(s3://, gs://, ftp://, ... through fsspec), which every node reaches (default: sent back to the "
                     "experiment folder).", show_default=False),
    ] = None,  # fmt: skip
    workers: Annotated[
        Optional[int],
        typer.Option("--workers", min=0, metavar="N", help="Dataloader workers of every run; with --ray each run asks for N + 1 CPUs. "
                     "[default: ultralytics' 8]", show_default=False),
    ] = None,  # fmt: skip
    base: Annotated[Optional[str], typer.Option("--base", metavar="yolov8|yolo11|yolo26", help="yolov8, yolo11 or yolo26. [default: yolov8]")] = None,
    task: Annotated[Optional[str], typer.Option("--task", metavar="detect|segment|pose|obb", help="detect, segment, pose or obb. [default: detect]")] = None,
    download: Annotated[
        bool, typer.Option("--download", help="Let ultralytics fetch the dataset once, before the runs.")
    ] = False,
    fail_fast: Annotated[
        bool, typer.Option("--fail-fast", help="Start no run after the first failure (the runs going finish).")
    ] = False,
    status: Annotated[
        bool, typer.Option("--status", help="Print the state of the grid in --project/--name (train nothing, write nothing).")
    ] = False,
    eval_split: Annotated[
        str, typer.Option("--eval-split", metavar="val|test", help="The split the table reports (best.pt is always chosen "
                          "on val; test needs a 'test:' entry in the data YAML).")
    ] = "val",  # fmt: skip
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress; errors and the files written only.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Name each run's log file as it starts; keep its raw output too.")] = False,
    extra: Annotated[
        Optional[list[str]],
        typer.Argument(metavar="[-- key=value ...]", help="ultralytics train arguments for every run (lr0=0.005).",
                       show_default=False),
    ] = None,  # fmt: skip
) -> None:
    """Compare variants over seeds under one recipe.

    Trains the stock model and MHSA variants, several seeds each, and writes a paper-ready table. Resumable: run the same command again to skip finished runs and retry or resume the others.
    """
    from mhsa_patch.ablate import runner

    if status:
        return print_status(runner.experiment_dir(project, name))
    progress: _Progress | None = None
    exp = None
    try:
        if data is None:
            raise UsageError("Missing option '--data' (or pass --status to see a grid's state)")
        extra = list(extra or [])
        if workers is not None:
            if any(e.split("=", 1)[0].strip() == "workers" for e in extra):
                raise UsageError(f"--workers {workers} and -- workers=...: give the dataloader workers once")
            extra.append(f"workers={workers}")
        if storage is not None:
            if ray is None:
                raise UsageError("--storage keeps the snapshots of Ray tasks: it needs --ray")
            from mhsa_patch.ablate.cluster.store import parse_storage

            storage = parse_storage(storage)  # a URI with no filesystem here refused before anything is measured
        if ray is not None:  # before anything is checked or measured
            from mhsa_patch.ablate.ray_backend import require_ray

            require_ray()
        tgt = open_target(target, python, header_line=not quiet)
        step = (lambda msg: None) if quiet else (lambda msg: out.print(f"  [bold]…[/] {escape(msg)}"))
        exp = runner.prepare(
            tgt, data=data, variants=variant, seeds=seeds, scale=scale, base=base, task=task, epochs=epochs,
            imgsz=imgsz, batch=batch, weights=weights, device=device, project=project, name=name,
            extra=extra, download=download, verbose=verbose, on_step=step, eval_split=eval_split, ray=ray,
        )  # fmt: skip
        for note in exp.started_notes:
            warn(f"{exp.dir}: {note}")
        done = sum(exp.done(r) for r in exp.runs)
        if not quiet:
            how = "resuming" if exp.resumed else "new experiment"
            start = "from " + exp.recipe["weights"] if exp.recipe["weights"] else "from scratch"
            info(
                f"{escape(str(exp.dir))} ({how}): {len(exp.variants)} variants × {len(exp.seeds)} seeds = "
                f"{len(exp.runs)} runs, {done} already finished; {epochs} epochs at {imgsz}, batch {batch}, {start}"
            )
            if exp.device_auto and exp.slots == ["cpu"] and ray is None:
                info("no GPU visible: the runs train on the CPU, one at a time (--device picks the devices)")
        progress = _Progress(len(exp.runs), done, quiet=quiet, verbose=verbose, exp_dir=exp.dir)
        outcome = runner.run(exp, on_event=progress, ray_address=ray, fail_fast=fail_fast, storage=storage)
        progress.close()
    except PatchError as e:
        if progress is not None:
            progress.close()
        if exp is not None:
            exp.close()
        fail(e)
    except KeyboardInterrupt:
        if progress is not None:
            progress.close()
        if exp is not None:
            exp.close()
        fail("interrupted: finished epochs are saved; run the same command again to resume", code=130)
    rep = outcome.report
    for note in exp.notes:
        warn(note)
    if rep is not None:
        for note in rep.notes:
            warn(note)
        if not quiet:
            table(rep.table)
    files = rep.files if rep is not None else [f for f in [exp.dir / "ablation.csv"] if f.is_file()]
    for f in files:
        out.print(f"  {f}", markup=False, highlight=False)
    if outcome.failed:
        later = f", {len(outcome.not_started)} not started (--fail-fast)" if outcome.not_started else ""
        info(f"{len(outcome.finished)} runs trained, {len(outcome.skipped)} already finished, {len(outcome.failed)} "
             f"failed{later}; the same command again retries the failed runs, each from its last snapshot")
        for f in outcome.failed:
            log = f" (log: {f.log})" if f.log else ""
            err.print(f"[red]ERROR ❌[/] {escape(_failed_line(f.run.label, f.reason) + log)}")
        raise typer.Exit(1)
    info(f"[green]ablation done ✅[/] {len(outcome.finished)} runs trained, {len(outcome.skipped)} already finished")


def _failed_line(label: str, reason: str) -> str:
    """``MHSA-s0 failed: <reason>``; a reason that names the run already reads as the line itself."""
    return reason if reason.startswith(f"{label} ") or reason.startswith(f"{label}:") else f"{label} failed: {reason}"


STATE_STYLE = {"done": "green", "stopped early": "green", "running": "bold", "starting": "bold", "failed": "red",
               "interrupted": "yellow", "pending": "dim"}  # fmt: skip


def print_status(exp_dir) -> None:
    """``ablate --status``: every planned run with its state, epoch and time left, from the grid's files alone."""
    from rich.table import Table

    from mhsa_patch.ablate.status import duration, read

    try:
        st = read(exp_dir)
    except PatchError as e:
        fail(e)
    t = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    for h in ("run", "state", "device", "epoch", "ETA", "reason"):
        t.add_column(h, justify="right" if h in ("epoch", "ETA") else "left")
    for r in st.rows:
        style = STATE_STYLE.get(r["state"], "")
        reason = r["reason"] or ""
        if r["state"] == "failed" and r["log"]:
            reason += f" (log: {r['log']})"
        t.add_row(escape(r["run"]), f"[{style}]{escape(r['state'])}[/]", escape(r["device"] or "") if r["state"] in ("running", "starting") else "",
                  f"{r['epoch']}/{r['epochs']}", duration(r["eta_s"]) if r["eta_s"] else "", escape(reason))  # fmt: skip
    table(t)
    counts = ", ".join(f"{n} {s}" for s in ("done", "stopped early", "running", "failed", "interrupted", "pending")
                       if (n := st.count(s) + (st.count("starting") if s == "running" else 0)))  # fmt: skip
    if st.driver:
        who = f"ablate running on host {st.driver['host']} (PID {st.driver['pid']})"
    else:
        who = "no ablate running: the same command resumes the grid"
    left = f"; about {duration(st.eta_s)} left on {st.devices} device{'s' if st.devices > 1 else ''}" if st.eta_s else ""
    info(f"{escape(str(st.dir))}: {len(st.rows)} runs: {counts}{left}; {escape(who)}")
