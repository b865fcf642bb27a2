"""Child of ``mhsa-patch ablate``: one run (a variant at a seed) with ultralytics' own trainer, resumable after SIGKILL.

``python -m mhsa_patch.child.train --model M.yaml|M.pt --run-dir DIR --args ARGS.json --lock LOCK --events FILE``

``ARGS.json`` holds ``{"train": {...}, "val": {...}, "run": "MHSA@P3-s0", "device": "cuda:2", "verbose": false}``:
the keyword arguments of ``YOLO.train`` (the recipe's, plus this run's ``model``, ``seed``, ``project``/``name`` so
that ultralytics writes exactly ``DIR``) and of the one final ``YOLO.val`` of ``best.pt``, the run's name and the
device it trains on as the user knows them (for its messages).

The run's lock (``LOCK``, see :mod:`mhsa_patch.ablate.lock`) is held for the child's whole life: a second trainer on
the same run (a second driver, a requeued job while the first still runs) is refused.

Resume. Ultralytics writes ``results.csv``'s row for an epoch before ``last.pt``, and writes ``last.pt`` and
``best.pt`` in place (a kill mid-write leaves a truncated file). So after every saved epoch this child copies
``last.pt`` (and ``best.pt`` when that epoch was the best) into ``DIR/weights/.resume/`` and then commits
``state.json`` atomically; ``state.json`` is the one source of truth (:mod:`mhsa_patch.ablate.runstate`). On the
next start: no folder, a fresh run; the tool's own folder with no finished epoch, replaced; a committed state with
``epochs_done < epochs``, the checkpoints are put back, ``results.csv`` cut to those epochs and ultralytics resumes
from ``last.pt``; training over (every epoch, or an early stop), only the final validation is left; anything the
tool cannot read, moved aside whole and resumed from its newest intact snapshot (or started over), in one warning.
Ultralytics' own final validation is skipped (its optimizer stripping kept): the one validation of ``best.pt`` here
is the same for every run, resumed or not.

Early stopping is ultralytics' own (``patience``, which the recipe sets to the epochs unless ``-- patience=N``): a
run it stopped is a finished run, its stop epoch recorded. The recipe must hold for every epoch: if ultralytics
changes an argument (8.4 halves ``batch`` after an out-of-memory error in the first epoch), the run fails at once.

Log. Ultralytics' set-up lines stay; from the first epoch on, its log level is WARNING (which also turns its
progress bars off) and this child prints one line per epoch. ``verbose`` keeps everything.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
import types
from pathlib import Path

from mhsa_patch.ablate import lock as locks
from mhsa_patch.ablate import runstate
from mhsa_patch.ablate.runstate import RESUME
from mhsa_patch.child.compat import require_patched, route_checkpoint_loading, ultralytics_info
from mhsa_patch.child.metrics import extract
from mhsa_patch.child.protocol import ChildError, one_line, run_main
from mhsa_patch.child.torchvision_ops import require as require_torchvision
from mhsa_patch.patching.atomic import copy_atomic, write_atomic

# Where a run goes, not how it trains: ultralytics may rewrite these (a resume's model is last.pt, the CPU forces
# workers=0, device is canonicalised, data becomes the resolved YAML), so the recipe check leaves them out.
PLACEMENT = {"model", "data", "device", "workers", "project", "name", "exist_ok", "save_dir", "resume"}


class RecipeChanged(ChildError):
    """Ultralytics changed one of the recipe's arguments during training."""


def csv_rows(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []


def _cut_results(run_dir: Path, epochs: int) -> None:
    """Keep ``results.csv``'s header and its first ``epochs`` rows (a row written before a kill is dropped)."""
    path = run_dir / "results.csv"
    lines = csv_rows(path)
    if lines:
        write_atomic(path, ("\n".join(lines[: 1 + epochs]) + "\n").encode("utf-8"))


def _restore(run_dir: Path, state: dict) -> None:
    """Put the committed checkpoints back in place of what a kill may have truncated or left ahead."""
    w = run_dir / "weights"
    copy_atomic(w / RESUME / state["last"], w / "last.pt")
    copy_atomic(w / RESUME / state["best"], w / "best.pt")
    _cut_results(run_dir, int(state["epochs_done"]))


def _prepare_folder(events, run_dir: Path, label: str) -> dict | None:
    """The run's folder ready to train: its committed state, or None for a fresh start. Nothing the tool cannot
    read is removed: it is moved aside whole, and the run resumes from its newest intact snapshot."""
    found = runstate.inspect(run_dir)
    if found.kind == "state":
        return found.state
    if found.kind == "empty":  # the tool's own folder, no finished epoch: what a kill during epoch 1 left
        shutil.rmtree(run_dir)
    if found.kind != "damaged":
        runstate.fresh(run_dir, run_dir.name)
        return None
    aside = runstate.set_aside(run_dir)
    state = runstate.salvage(aside, run_dir, run_dir.name)
    if state is None:
        runstate.fresh(run_dir, run_dir.name)
    then = f"resuming from its snapshot of epoch {state['epochs_done']}" if state else "no intact snapshot: starting over"
    events.emit(warning=f"{label}: {found.problem}; the run folder was moved whole to "
                        f"{aside.parent.name}/{aside.name}; {then}")  # fmt: skip
    return state


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return float(a) == float(b)
    return a == b or (a is not None and b is not None and str(a) == str(b))


class _Snapshots:
    """The callbacks that make a run resumable, hold it to its recipe and report its progress to the parent."""

    def __init__(self, events, run_dir: Path, state: dict | None, spec: dict):
        self.events = events
        self.snap = run_dir / "weights" / RESUME
        self.state = dict(state or {"train_s": 0.0, "best_epoch": 0})
        self.base_s = float(self.state.get("train_s", 0.0))
        self.t0 = time.monotonic()
        self.recipe = {k: v for k, v in spec["train"].items() if k not in PLACEMENT}
        self.label = spec.get("run") or run_dir.name
        self.device = spec.get("device") or str(spec["train"].get("device", "cpu"))
        self.verbose = bool(spec.get("verbose"))
        self.level: int | None = None

    def check_recipe(self, trainer) -> None:
        """Fail the run as soon as ultralytics trains with other arguments than the recipe's."""
        for key, want in self.recipe.items():
            got = getattr(trainer.args, key, want)
            if _same(got, want):
                continue
            if key == "batch":
                raise RecipeChanged(
                    f"{self.label} did not fit batch {want} on {self.device}; give every variant a smaller --batch"
                )
            raise RecipeChanged(
                f"{self.label}: ultralytics changed {key} from {want} to {got} during epoch {int(trainer.epoch) + 1}; "
                "every run of an experiment must train with the same recipe"
            )

    def on_pretrain_routine_start(self, trainer) -> None:
        def final_eval(self_):  # ultralytics' final step without its validation: strip the optimizer, as it does
            from ultralytics.utils.torch_utils import strip_optimizer

            for f in (self_.last, self_.best):
                if f.exists():
                    strip_optimizer(f)

        trainer.final_eval = types.MethodType(final_eval, trainer)

    def on_train_start(self, trainer) -> None:
        if not self.verbose:  # its per-epoch lines and progress bars: this child prints one line per epoch instead
            from ultralytics.utils import LOGGER

            self.level = LOGGER.level
            LOGGER.setLevel(logging.WARNING)

    def on_train_end(self, trainer) -> None:
        self.quiet_off()

    def quiet_off(self) -> None:
        if self.level is not None:
            from ultralytics.utils import LOGGER

            LOGGER.setLevel(self.level)
            self.level = None

    def on_train_batch_start(self, trainer) -> None:
        self.check_recipe(trainer)

    def on_model_save(self, trainer) -> None:
        self.check_recipe(trainer)  # never commit an epoch trained under another recipe
        n = int(trainer.epoch) + 1
        self.snap.mkdir(parents=True, exist_ok=True)
        last = f"last-e{n}.pt"
        copy_atomic(Path(trainer.last), self.snap / last)
        state = dict(self.state)
        if trainer.best_fitness == trainer.fitness or not state.get("best"):  # what save_model wrote to best.pt
            # the same bytes as last.pt: a second name for the snapshot (snapshots are replaced, never rewritten)
            best = f"best-e{n}.pt"
            (self.snap / best).unlink(missing_ok=True)
            os.link(self.snap / last, self.snap / best)
            state.update(best=best, best_epoch=n)
        stopper = getattr(trainer, "stopper", None)
        patience = getattr(stopper, "patience", None)
        early = bool(
            trainer.stop and n < int(trainer.epochs) and stopper is not None and isinstance(patience, int)
            and n - int(getattr(stopper, "best_epoch", n)) >= patience
        )  # fmt: skip
        state.update(epochs_done=n, last=last, train_s=round(self.base_s + time.monotonic() - self.t0, 3),
                     batch=int(trainer.args.batch), stopped_early=early)  # fmt: skip
        runstate.write_json(self.snap / runstate.STATE, state)  # the commit point
        for f in self.snap.glob("*.pt"):
            if f.name not in (state["last"], state["best"]):
                f.unlink(missing_ok=True)
        self.state = state

    def on_fit_epoch_end(self, trainer) -> None:
        metrics = getattr(trainer, "metrics", None) or {}
        n, total = int(trainer.epoch) + 1, int(trainer.epochs)
        if n > total:  # the final validation's call (skipped here anyway)
            return
        m = {k: float(metrics.get(f"metrics/{k}(B)", 0.0) or 0.0) for k in ("precision", "recall", "mAP50", "mAP50-95")}
        try:
            losses = trainer.label_loss_items(trainer.tloss, prefix="train")
        except Exception:  # noqa: BLE001 - the line only shows them
            losses = {}
        seconds = float(getattr(trainer, "epoch_time", 0.0) or 0.0)
        parts = [f"epoch {n}/{total}"] + [f"{k.split('/')[-1]} {float(v):.4g}" for k, v in losses.items()]
        parts += [f"P {m['precision']:.3f}", f"R {m['recall']:.3f}", f"mAP50 {m['mAP50']:.3f}",
                  f"mAP50-95 {m['mAP50-95']:.3f}", f"{seconds:.1f} s"]  # fmt: skip
        print("  ".join(parts), flush=True)
        self.events.emit(epoch=n, epochs=total, map50_95=m["mAP50-95"], seconds=round(seconds, 3))


def _train(events, model: str, run_dir: Path, spec: dict, state: dict | None) -> dict:
    from ultralytics import YOLO

    train_args = spec["train"]
    snaps = _Snapshots(events, run_dir, state, spec)
    if state is None:
        yolo = YOLO(model)
        kwargs = dict(train_args)
    else:
        _restore(run_dir, state)
        yolo = YOLO(str(run_dir / "weights" / "last.pt"))
        # what a resumed run may take from the command line; the rest comes from last.pt's own arguments (patience:
        # a snapshot of an experiment begun before the recipe held it trained with ultralytics' default)
        keep = ("data", "device", "workers", "save_dir", "patience")
        kwargs = {k: train_args[k] for k in keep if k in train_args}
        kwargs.update(resume=True, save_dir=str(run_dir))
    for name in ("on_pretrain_routine_start", "on_train_start", "on_train_batch_start", "on_model_save",
                 "on_fit_epoch_end", "on_train_end"):  # fmt: skip
        yolo.add_callback(name, getattr(snaps, name))
    try:
        yolo.train(**kwargs)
    except RecipeChanged:
        raise
    except Exception as e:  # noqa: BLE001
        raise ChildError(f"ultralytics' trainer failed: {one_line(e)}") from None
    finally:
        snaps.quiet_off()
    return snaps.state


def run(events, a) -> dict:
    require_torchvision()  # before training: ultralytics validates with torchvision's nms
    ultralytics_info()
    require_patched()
    route_checkpoint_loading()  # before anything loads a checkpoint: resume from last.pt on old releases, today's torch
    run_dir = Path(a.run_dir)
    spec = json.loads(Path(a.args).read_text(encoding="utf-8"))
    label = spec.get("run") or run_dir.name
    if a.lock:
        try:
            held = locks.acquire(Path(a.lock), run=label, device=spec.get("device"))
        except locks.Busy as e:
            who = locks.describe(e.info) if e.info else "another process"
            raise ChildError(f"{label} is being trained by {who} already (lock {e.path}); this one is not started") from None
        if held.took_over:
            events.emit(warning=f"{label}: {held.took_over}")
    try:
        return _run(events, a, run_dir, spec, label)
    finally:
        if a.lock:
            held.release()


def _run(events, a, run_dir: Path, spec: dict, label: str) -> dict:
    train_args, val_args = spec["train"], spec["val"]
    epochs = int(train_args["epochs"])
    state = _prepare_folder(events, run_dir, label)
    over = state is not None and (int(state["epochs_done"]) >= epochs or state.get("stopped_early"))
    if not over:
        resumed = 0 if state is None else int(state["epochs_done"])
        events.emit(started=True, resumed_from=resumed, epochs=epochs)
        state = _train(events, a.model, run_dir, spec, state)
    else:  # training was over; a kill during ultralytics' stripping may have cut a file: put both back, strip again
        from ultralytics.utils.torch_utils import strip_optimizer

        _restore(run_dir, state)
        for name in ("last.pt", "best.pt"):
            strip_optimizer(run_dir / "weights" / name)
    done = int(state.get("epochs_done", 0))
    if done < epochs and not state.get("stopped_early"):
        raise ChildError(f"the trainer stopped after {done} of {epochs} epochs, not early stopping")
    rows = csv_rows(run_dir / "results.csv")[1:]
    if len(rows) != done:
        raise ChildError(f"{run_dir / 'results.csv'} has {len(rows)} epochs, expected {done}")

    events.emit(validating=True)
    from ultralytics import YOLO

    best = run_dir / "weights" / "best.pt"
    try:
        yolo = YOLO(str(best))
        params = int(sum(p.numel() for p in yolo.model.parameters()))  # before val, which fuses Conv and BN
        metrics = yolo.val(**val_args)
    except Exception as e:  # noqa: BLE001
        raise ChildError(f"validating {best} failed: {one_line(e)}") from None
    return {
        **extract(yolo.task, metrics.results_dict),  # the columns of the model's own task (mask mAP for segment)
        "task": yolo.task,
        "params": params,
        "best_epoch": int(state["best_epoch"]),
        "epochs": len(rows),  # the epochs it really trained (fewer than the recipe's after an early stop)
        "train_s": float(state["train_s"]),
        "stopped_early": bool(state.get("stopped_early")),
        "stop_epoch": done if state.get("stopped_early") else None,
        "batch": state.get("batch", train_args.get("batch")),  # the batch it trained with (the recipe's: checked)
        "patience": train_args.get("patience"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mhsa_patch.child.train")
    ap.add_argument("--model", required=True)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--args", required=True)
    ap.add_argument("--lock", help="the run's lock file, held while the child lives")
    ap.add_argument("--events")
    a = ap.parse_args(argv)
    return run_main(lambda ev: run(ev, a), a.events)


if __name__ == "__main__":
    raise SystemExit(main())
