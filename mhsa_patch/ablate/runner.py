"""An ablation from its options to its records: the plan (variants x seeds under one recipe), then the runs.

:func:`prepare` does every check before anything trains (the patch, the variants' YAMLs and their lint, the data on
this machine, the recipe against the one the folder was started with) and writes ``models/``, ``recipe.yaml`` and
``measure.json`` (params, true GFLOPs and latency of every variant, measured in one child process). :func:`run`
trains the runs not yet finished, each in its own child (:mod:`mhsa_patch.child.train`, which resumes an interrupted
run from its own snapshot), one per device at a time, or as Ray tasks (:mod:`mhsa_patch.ablate.ray_backend`).
After every finished run it rewrites ``ablation.csv`` (the runner owns it) and asks the report for the rest.

Folder layout (``<dir>`` = ``--project``/``--name``)::

    recipe.yaml  measure.json  ablation.csv  models/<variant>.yaml|.pt  logs/<run>.log|.args.json
    runs/<variant>-s<seed>/   ultralytics' own run folder (weights/, results.csv, args.yaml) and ablate.json
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mhsa_patch.ablate import data as datasets
from mhsa_patch.ablate import recipe as recipes
from mhsa_patch.ablate.cluster.fingerprint import recorded
from mhsa_patch.ablate.record import RunRecord, to_csv
from mhsa_patch.ablate.variants import Variant, plan_variants
from mhsa_patch.errors import PatchError, UsageError
from mhsa_patch.patching.target import Target

DONE = "ablate.json"  # in a run's folder: its child's result, written once the run is finished and validated
MEASURE = "measure.json"
LATENCY_RUNS = 30


@dataclass(frozen=True)
class Run:
    """One training: a variant at a seed, in ``<dir>/runs/<slug>-s<seed>``."""

    variant: str
    slug: str
    seed: int
    model: str  # the file it starts from: models/<variant>.yaml, or the ported models/<variant>.pt

    @property
    def name(self) -> str:
        return f"{self.slug}-s{self.seed}"

    @property
    def run_dir(self) -> str:
        return f"runs/{self.name}"


@dataclass
class Experiment:
    dir: Path
    target: Target
    variants: list[Variant]
    seeds: list[int]
    dataset: datasets.Dataset
    recipe: dict
    runs: list[Run]
    measured: dict
    slots: list[str]  # one entry per run that may go at once: "cpu", or a GPU index
    resumed: bool = False
    notes: list[str] = field(default_factory=list)

    def done(self, run: Run) -> bool:
        return (self.dir / run.run_dir / DONE).is_file()


# ------------------------------------------------------------------------------------------------------- options


def parse_seeds(text: str) -> list[int]:
    """``3`` -> seeds 0, 1, 2; ``0,1,5`` -> those seeds."""
    text = str(text).strip()
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            n = int(text)
            if n < 1:
                raise ValueError
            seeds = list(range(n))
    except ValueError:
        raise UsageError(f"--seeds {text}: a count (3 means seeds 0, 1, 2) or a list (0,1,2)") from None
    if len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        raise UsageError(f"--seeds {text}: each seed once, none negative")
    return seeds


def parse_device(text: str) -> list[str]:
    """``cpu`` -> one slot on the CPU; ``0,1,2,3`` -> four slots, one GPU each (independent runs, not DDP)."""
    text = str(text).strip().lower()
    if text in ("cpu", "mps"):
        return [text]
    parts = [p.strip() for p in text.split(",")]
    if not parts or not all(p.isdigit() for p in parts) or len(set(parts)) != len(parts):
        raise UsageError(f"--device {text}: cpu, a GPU index (0) or several (0,1,2,3)")
    return parts


def _slot_env(slot: str) -> dict[str, str]:
    return {} if slot in ("cpu", "mps") else {"CUDA_VISIBLE_DEVICES": slot}


def _slot_device(slot: str) -> str:
    return slot if slot in ("cpu", "mps") else "0"  # a run sees its one GPU as device 0


# ------------------------------------------------------------------------------------------------------ prepare


def prepare(
    target: Target,
    *,
    data: str,
    variants: Sequence[str] | None = None,
    seeds: str = "3",
    scale: str = "n",
    base: str | None = None,
    task: str | None = None,
    epochs: int = 100,
    imgsz: int = 640,
    batch: int = 16,
    weights: str | None = None,
    device: str = "cpu",
    project: str = "runs/ablate",
    name: str = "exp",
    extra: Sequence[str] = (),
    download: bool = False,
    on_step: Callable[[str], None] | None = None,
) -> Experiment:
    """Check everything and write the experiment's fixed files; a one-line :class:`PatchError` on any refusal,
    before any run starts."""
    from mhsa_patch.child.launch import require_applied

    step = on_step or (lambda msg: None)
    if epochs < 1 or batch < 1:
        raise UsageError("--epochs and --batch must be >= 1")
    if imgsz < 32 or imgsz % 32:
        raise UsageError(f"--imgsz {imgsz}: must be a multiple of 32, at least 32")
    seed_list = parse_seeds(seeds)
    slots = parse_device(device)
    extra_args = recipes.parse_extra(list(extra))
    exp_dir = (Path(project).expanduser() / name).resolve()
    if exp_dir.exists() and not exp_dir.is_dir():
        raise PatchError(f"{exp_dir} exists and is not a folder")
    require_applied(target)
    step("Generating the variants' model YAMLs")
    plan = plan_variants(target, list(variants) if variants else None, scale=scale, base=base, task=task, imgsz=imgsz)
    weights_path = None
    if weights is not None:
        weights_path = Path(weights).expanduser().resolve()
        if not weights_path.is_file():
            raise PatchError(f"--weights {weights}: no such checkpoint")
        for v in plan:
            if v.scale not in (None, scale):
                raise PatchError(
                    f"--variant {v.name} is scale {v.scale}: it cannot start from {weights_path.name} (scale {scale}); "
                    "drop --weights or that variant"
                )
    ds = datasets.resolve(data, exp_dir, imgsz, download=download, target=target)

    # the versions come from the child that measures the variants: the one place torch is imported
    step("Measuring every variant: parameters, true GFLOPs, latency")
    old_measure = _read_json(exp_dir / MEASURE) or {}
    have = old_measure.get("models", {})
    fresh = not all(v.name in have for v in plan) or old_measure.get("imgsz") != imgsz
    names = [v.name for v in plan] + ([k for k in have if k not in {v.name for v in plan}] if fresh else [])
    texts = {v.name: (v.file_name, v.text) for v in plan}
    for k in names:  # variants of an earlier invocation are measured again alongside, from models/
        if k in texts:
            continue
        file = str(have[k].get("file", "")) if isinstance(have[k], dict) else ""
        if file and Path(file).name == file and (exp_dir / "models" / file).is_file():
            texts[k] = (have[k]["file"], (exp_dir / "models" / have[k]["file"]).read_text(encoding="utf-8"))
    measured = _measure(target, texts, imgsz, ds.nc, slots[0], runs=LATENCY_RUNS if fresh else 0)

    rec = {
        "data": ds.label,
        "epochs": epochs,
        "imgsz": imgsz,
        "batch": batch,
        "weights": None if weights_path is None else str(weights_path),
        "scale": scale,
        "base": (base or "yolov8").lower(),
        "task": (task or "detect").lower(),
        "ultralytics": measured["ultralytics"],
        "torch": measured["torch"],
        "device": device,
        "device_name": measured["device_name"],
        "train": recipes.train_args(
            data=str(ds.yaml), epochs=epochs, imgsz=imgsz, batch=batch, project=exp_dir / "runs", extra=extra_args
        ),
        "val": recipes.val_args(data=str(ds.yaml), imgsz=imgsz, batch=batch, extra=extra_args),
        "extra": extra_args,
    }
    resumed = recipes.check_recipe(exp_dir, rec)
    models = exp_dir / "models"
    for v in plan:
        path = models / v.file_name
        if path.is_file() and path.read_text(encoding="utf-8") != v.text:
            raise PatchError(
                f"{path} differs from the {v.name} this command builds (another --scale, --base or YAML?); "
                "pass --name for a new experiment"
            )
    if download:
        step(f"Fetching {ds.yaml.name} once with ultralytics (--download)")
        datasets.download(target, ds)
    rec.update(recorded(target, ds.yaml))  # what a Ray worker node must match: the patch's and the data's hashes

    models.mkdir(parents=True, exist_ok=True)
    for v in plan:
        if not (models / v.file_name).is_file():
            _write_atomic(models / v.file_name, v.text)
    if not resumed:
        recipes.write_recipe(exp_dir, rec)
    if fresh:
        files = {k: texts[k][0] for k in measured["models"]}
        for k, m in measured["models"].items():
            m["file"] = files[k]
        keep = {k: v for k, v in measured.items() if k != "models"}
        _write_atomic(exp_dir / MEASURE, json.dumps({**keep, "imgsz": imgsz, "models": measured["models"]}, indent=2))
        measured_models = measured["models"]
    else:
        measured_models = have

    starts = {v.name: str(models / v.file_name) for v in plan}
    if weights_path is not None:
        from mhsa_patch.modelyaml.align import port_weights

        for v in plan:
            out = models / (Path(v.file_name).stem + ".pt")
            if not out.is_file():
                step(f"Porting {weights_path.name} into {v.name}")
                tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp.pt")
                port_weights(target, weights_path, models / v.file_name, tmp, quiet=True)
                os.replace(tmp, out)
            starts[v.name] = str(out)
    runs = [Run(v.name, v.slug, s, starts[v.name]) for v in plan for s in seed_list]
    return Experiment(exp_dir, target, plan, seed_list, ds, rec, runs, measured_models, slots, resumed)


def _measure(target: Target, texts: dict[str, tuple[str, str]], imgsz: int, nc: int, slot: str, runs: int) -> dict:
    from mhsa_patch.child.launch import run_child

    with tempfile.TemporaryDirectory(prefix="mhsa-ablate-") as tmp:
        args: list[str] = []
        for k, (file_name, text) in texts.items():
            folder = Path(tmp) / str(len(args))  # each in its own folder: file names may repeat across scales
            folder.mkdir()
            (folder / file_name).write_text(text, encoding="utf-8")
            args += ["--model", f"{k}={folder / file_name}"]
        device = "cpu" if slot in ("cpu", "mps") else "cuda:0"
        args += ["--imgsz", str(imgsz), "--nc", str(nc), "--device", device, "--runs", str(runs)]
        return run_child(target, "mhsa_patch.child.measure", args, extra_env=_slot_env(slot), silent=True)


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------------- runs


def run_spec(exp: Experiment, run: Run, slot: str) -> dict:
    """What one run's child gets: the recipe's arguments plus this run's model, seed, folder and device."""
    train = dict(exp.recipe["train"])
    train.update(model=run.model, seed=run.seed, name=run.name, device=_slot_device(slot))
    val = dict(exp.recipe["val"], device=_slot_device(slot))
    return {"train": train, "val": val}


def execute_run(
    target: Target,
    exp_dir: Path,
    run: Run,
    spec: dict,
    *,
    env: dict[str, str] | None = None,
    on_event: Callable[[dict], None] | None = None,
    on_start: Callable[[Any], None] | None = None,
) -> dict:
    """Train (or resume) one run in a child and validate its ``best.pt`` once; the child's result. Writes only
    under ``exp_dir`` (the run's folder, its log and its arguments in ``logs/``)."""
    from mhsa_patch.child.launch import run_child

    logs = exp_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    args_file = logs / f"{run.name}.args.json"
    _write_atomic(args_file, json.dumps(spec, indent=2))
    run_dir = exp_dir / run.run_dir
    args = ["--model", run.model, "--run-dir", str(run_dir), "--args", str(args_file)]
    try:
        return run_child(
            target, "mhsa_patch.child.train", args, on_event=on_event, extra_env=env, log=logs / f"{run.name}.log",
            on_start=on_start,
        )  # fmt: skip
    except PatchError as e:
        raise PatchError(f"{run.name}: {e} (log: {logs / f'{run.name}.log'})") from None


def record_of(exp: Experiment, run: Run, result: dict) -> RunRecord:
    m = exp.measured.get(run.variant, {})
    return RunRecord(
        variant=run.variant,
        seed=run.seed,
        params=int(m.get("params", result.get("params", 0))),
        gflops=float(m.get("gflops", float("nan"))),
        latency_ms=float(m.get("latency_ms") if m.get("latency_ms") is not None else float("nan")),
        map50=float(result["map50"]),
        map50_95=float(result["map50_95"]),
        precision=float(result["precision"]),
        recall=float(result["recall"]),
        best_epoch=int(result["best_epoch"]),
        epochs=int(result["epochs"]),
        train_s=round(float(result["train_s"]), 3),
        run_dir=run.run_dir,
    )


def records(exp: Experiment) -> list[RunRecord]:
    """The records of the runs finished so far, in the plan's order (variants as given, then seeds)."""
    out = []
    for r in exp.runs:
        result = _read_json(exp.dir / r.run_dir / DONE)
        if result is not None:
            out.append(record_of(exp, r, result))
    return out


def finish_run(exp: Experiment, run: Run, result: dict) -> list[Path]:
    """Mark ``run`` finished, rewrite ``ablation.csv`` from every finished run, and write the report's files."""
    _write_atomic(exp.dir / run.run_dir / DONE, json.dumps(result, indent=2))
    # the resume snapshots (checkpoints with the optimizer) are not needed once the run is recorded
    shutil.rmtree(exp.dir / run.run_dir / "weights" / ".resume", ignore_errors=True)
    return write_outputs(exp)


def write_outputs(exp: Experiment):
    """The report of every finished run: ``ablation.csv``, the summaries and the plots, and its table.

    A report that fails must not stop the trainings: the CSV is then written alone, and a note says so.
    """
    from mhsa_patch.ablate.report import write_report  # matplotlib and scipy: only once a run has finished

    recs = records(exp)
    try:
        return write_report(exp.dir, recs, exp.recipe, baseline="stock")
    except Exception as e:  # noqa: BLE001
        from mhsa_patch.child.protocol import one_line

        _write_atomic(exp.dir / "ablation.csv", to_csv(recs))
        note = f"the report could not be written ({one_line(e)}); ablation.csv is complete"
        if note not in exp.notes:
            exp.notes.append(note)
        return None


@dataclass
class Outcome:
    finished: list[Run]
    skipped: list[Run]
    report: Any = None


RunEvent = Callable[[str, Run, dict], None]  # ("start" | "event" | "done", run, data)


def run(exp: Experiment, *, on_event: RunEvent | None = None, ray_address: str | None = None,
        storage: str | None = None) -> Outcome:
    """Train every run not yet finished; after each, rewrite the CSV and the report. Stops at the first failed run
    (runs already going on other devices finish first) with its one-line error."""
    emit = on_event or (lambda kind, run, data: None)
    skipped = [r for r in exp.runs if exp.done(r)]
    pending = [r for r in exp.runs if not exp.done(r)]
    out = Outcome([], skipped)
    if ray_address is not None:
        from mhsa_patch.ablate.ray_backend import run_on_ray

        run_on_ray(exp, pending, ray_address, emit, out, execute_run=execute_run, finish_run=finish_run,
                   run_spec=run_spec, storage=storage)
    elif len(exp.slots) == 1 or len(pending) <= 1:
        for r in pending:
            slot = exp.slots[0]
            emit("start", r, {"slot": slot})
            result = execute_run(exp.target, exp.dir, r, run_spec(exp, r, slot), env=_slot_env(slot),
                                 on_event=lambda ev, r=r: emit("event", r, ev))  # fmt: skip
            out.report = finish_run(exp, r, result)
            out.finished.append(r)
            emit("done", r, result)
    else:
        _run_parallel(exp, pending, emit, out)
    if not pending:
        out.report = write_outputs(exp)
    return out


def _run_parallel(exp: Experiment, pending: list[Run], emit: RunEvent, out: Outcome) -> None:
    """Up to one run per GPU at once, each child seeing only its GPU; a failure lets the others finish, then raises."""
    free: queue.Queue[str] = queue.Queue()
    for s in exp.slots:
        free.put(s)
    procs: set = set()
    lock = threading.Lock()

    def one(r: Run) -> tuple[Run, dict]:
        slot = free.get()
        try:
            emit("start", r, {"slot": slot})
            return r, execute_run(
                exp.target, exp.dir, r, run_spec(exp, r, slot), env=_slot_env(slot),
                on_event=lambda ev: emit("event", r, ev), on_start=procs.add,
            )  # fmt: skip
        finally:
            free.put(slot)

    error: PatchError | None = None
    with ThreadPoolExecutor(max_workers=len(exp.slots)) as pool:
        todo = [pool.submit(one, r) for r in pending]
        try:
            waiting = set(todo)
            while waiting:
                done, waiting = wait(waiting, return_when=FIRST_COMPLETED)
                for f in done:
                    try:
                        r, result = f.result()
                    except PatchError as e:
                        error = error or e
                        for g in waiting:
                            g.cancel()
                        continue
                    except Exception:  # noqa: BLE001 - a cancelled future
                        continue
                    with lock:
                        out.report = finish_run(exp, r, result)
                        out.finished.append(r)
                    emit("done", r, result)
        except KeyboardInterrupt:
            for g in todo:
                g.cancel()
            for p in list(procs):
                if p.poll() is None:
                    p.terminate()
            raise
    if error is not None:
        raise error
