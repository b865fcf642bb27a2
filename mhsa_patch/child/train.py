"""Child of ``mhsa-patch ablate``: one run (a variant at a seed) with ultralytics' own trainer, resumable after SIGKILL.

``python -m mhsa_patch.child.train --model M.yaml|M.pt --run-dir DIR --args ARGS.json --events FILE``

``ARGS.json`` holds ``{"train": {...}, "val": {...}}``: the keyword arguments of ``YOLO.train`` (the recipe's, plus
this run's ``model``, ``seed``, ``project``/``name`` so that ultralytics writes exactly ``DIR``) and of the one final
``YOLO.val`` of ``best.pt``.

Resume. Ultralytics writes ``results.csv``'s row for an epoch before ``last.pt``, and writes ``last.pt`` and
``best.pt`` in place (a kill mid-write leaves a truncated file). So after every saved epoch this child copies
``last.pt`` (and ``best.pt`` when that epoch was the best) into ``DIR/weights/.resume/`` and then commits
``state.json`` atomically; ``state.json`` is the one source of truth. On the next start: no state, a fresh run (what a
killed first epoch left is removed); ``epochs_done < epochs``, the checkpoints are put back, ``results.csv`` cut to
those epochs and ultralytics resumes from ``last.pt``; ``epochs_done == epochs``, training is over, only the final
validation is left. Ultralytics' own final validation is skipped (its optimizer stripping kept): the one validation
of ``best.pt`` here is the same for every run, resumed or not.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import time
import types
from pathlib import Path

from mhsa_patch.child.compat import require_patched, route_checkpoint_loading, ultralytics_info
from mhsa_patch.child.metrics import extract
from mhsa_patch.child.protocol import ChildError, one_line, run_main

RESUME = ".resume"


def _atomic_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _atomic_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def read_state(run_dir: Path) -> dict | None:
    """The committed state of a run (``epochs_done``, ``last``, ``best``, ``best_epoch``, ``train_s``), or None."""
    path = run_dir / "weights" / RESUME / "state.json"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    snap = path.parent
    if not isinstance(state, dict) or not isinstance(state.get("epochs_done"), int):
        return None
    for k in ("last", "best"):  # names this child wrote, nothing else (the file is read as untrusted input)
        name = state.get(k)
        if not isinstance(name, str) or not re.fullmatch(rf"(last|best)-e\d+\.pt", name):
            return None
        p = snap / name
        if p.is_symlink() or not p.is_file():
            return None
    return state


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
        text = "\n".join(lines[: 1 + epochs]) + "\n"
        tmp = path.with_name(".results.csv.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)


def _restore(run_dir: Path, state: dict) -> None:
    """Put the committed checkpoints back in place of what a kill may have truncated or left ahead."""
    w = run_dir / "weights"
    _atomic_copy(w / RESUME / state["last"], w / "last.pt")
    _atomic_copy(w / RESUME / state["best"], w / "best.pt")
    _cut_results(run_dir, int(state["epochs_done"]))


def _fresh(run_dir: Path) -> None:
    """A run with no committed epoch starts over: remove what a killed first epoch wrote."""
    if run_dir.is_dir():
        shutil.rmtree(run_dir)


class _Snapshots:
    """The callbacks that make a run resumable and report its progress to the parent."""

    def __init__(self, events, run_dir: Path, state: dict | None):
        self.events = events
        self.snap = run_dir / "weights" / RESUME
        self.state = dict(state or {"train_s": 0.0, "best_epoch": 0})
        self.base_s = float(self.state.get("train_s", 0.0))
        self.t0 = time.monotonic()

    def on_pretrain_routine_start(self, trainer) -> None:
        def final_eval(self_):  # ultralytics' final step without its validation: strip the optimizer, as it does
            from ultralytics.utils.torch_utils import strip_optimizer

            for f in (self_.last, self_.best):
                if f.exists():
                    strip_optimizer(f)

        trainer.final_eval = types.MethodType(final_eval, trainer)

    def on_model_save(self, trainer) -> None:
        n = int(trainer.epoch) + 1
        self.snap.mkdir(parents=True, exist_ok=True)
        last = f"last-e{n}.pt"
        _atomic_copy(Path(trainer.last), self.snap / last)
        state = dict(self.state)
        if trainer.best_fitness == trainer.fitness or not state.get("best"):  # what save_model wrote to best.pt
            # the same bytes as last.pt: a second name for the snapshot (snapshots are replaced, never rewritten)
            best = f"best-e{n}.pt"
            (self.snap / best).unlink(missing_ok=True)
            os.link(self.snap / last, self.snap / best)
            state.update(best=best, best_epoch=n)
        state.update(epochs_done=n, last=last, train_s=round(self.base_s + time.monotonic() - self.t0, 3))
        _atomic_json(self.snap / "state.json", state)  # the commit point
        for f in self.snap.glob("*.pt"):
            if f.name not in (state["last"], state["best"]):
                f.unlink(missing_ok=True)
        self.state = state

    def on_fit_epoch_end(self, trainer) -> None:
        metrics = getattr(trainer, "metrics", None) or {}
        if int(trainer.epoch) + 1 > int(trainer.epochs):  # the final validation's call (skipped here anyway)
            return
        self.events.emit(
            epoch=int(trainer.epoch) + 1,
            epochs=int(trainer.epochs),
            map50_95=float(metrics.get("metrics/mAP50-95(B)", 0.0) or 0.0),
        )


def _train(events, model: str, run_dir: Path, train_args: dict, state: dict | None) -> dict:
    from ultralytics import YOLO

    snaps = _Snapshots(events, run_dir, state)
    if state is None:
        _fresh(run_dir)
        yolo = YOLO(model)
        kwargs = dict(train_args)
    else:
        _restore(run_dir, state)
        yolo = YOLO(str(run_dir / "weights" / "last.pt"))
        # what a resumed run may take from the command line; the rest comes from last.pt's own arguments
        keep = ("data", "device", "workers", "save_dir")
        kwargs = {k: train_args[k] for k in keep if k in train_args}
        kwargs.update(resume=True, save_dir=str(run_dir))
    for name in ("on_pretrain_routine_start", "on_model_save", "on_fit_epoch_end"):
        yolo.add_callback(name, getattr(snaps, name))
    try:
        yolo.train(**kwargs)
    except Exception as e:  # noqa: BLE001
        raise ChildError(f"ultralytics' trainer failed: {one_line(e)}") from None
    return snaps.state


def run(events, a) -> dict:
    ultralytics_info()
    require_patched()
    route_checkpoint_loading()  # before anything loads a checkpoint: resume from last.pt on old releases, today's torch
    run_dir = Path(a.run_dir)
    spec = json.loads(Path(a.args).read_text(encoding="utf-8"))
    train_args, val_args = spec["train"], spec["val"]
    epochs = int(train_args["epochs"])
    state = read_state(run_dir)
    if state is None or int(state["epochs_done"]) < epochs:
        resumed = 0 if state is None else int(state["epochs_done"])
        events.emit(started=True, resumed_from=resumed, epochs=epochs)
        state = _train(events, a.model, run_dir, train_args, state)
    else:  # training was over; a kill during ultralytics' stripping may have cut a file: put both back, strip again
        from ultralytics.utils.torch_utils import strip_optimizer

        _restore(run_dir, state)
        for name in ("last.pt", "best.pt"):
            strip_optimizer(run_dir / "weights" / name)
    if int(state.get("epochs_done", 0)) < epochs:
        raise ChildError(f"the trainer stopped after {state.get('epochs_done', 0)} of {epochs} epochs")
    rows = csv_rows(run_dir / "results.csv")[1:]
    if len(rows) != epochs:
        raise ChildError(f"{run_dir / 'results.csv'} has {len(rows)} epochs, expected {epochs}")

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
        "epochs": len(rows),
        "train_s": float(state["train_s"]),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mhsa_patch.child.train")
    ap.add_argument("--model", required=True)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--args", required=True)
    ap.add_argument("--events")
    a = ap.parse_args(argv)
    return run_main(lambda ev: run(ev, a), a.events)


if __name__ == "__main__":
    raise SystemExit(main())
