"""An ablation from its options to its records: the plan (variants x seeds under one recipe), then the runs.

:func:`prepare` does every check before anything trains (the patch, the variants' YAMLs and their lint, the dataset
as the target's own ultralytics reads it, the recipe against the one the folder was started with), takes the
experiment's lock (:mod:`mhsa_patch.ablate.lock`) and writes ``models/``, ``recipe.yaml`` and ``measure.json``
(params, true GFLOPs and latency of every variant, measured in one child process, which also tells how many GPUs
there are; with ``ray``, latency is measured in one Ray task on a worker of the runs' device type instead, the
driver needing no GPU). :func:`run` is the one scheduler: it starts the runs not yet finished in the grid's order
(seed-major, the longest variant first), on a backend that only starts runs and reports on them
(:mod:`mhsa_patch.ablate.backends`: one slot, one per GPU, or Ray), and decides for every backend what a failure
means (the others go on; with ``fail_fast`` nothing new starts), records each finished run (``ablation.csv`` and the
report) and keeps ``runs.jsonl`` (:mod:`mhsa_patch.ablate.status`) current.

Folder layout (``<dir>`` = ``--project``/``--name``)::

    recipe.yaml  measure.json  ablation.csv  runs.jsonl  ablate.lock  models/<variant>.yaml|.pt
    logs/<run>.log|.args.json  logs/ray.log (--ray: Ray's own lines)  locks/<run>.lock
    runs/<variant>-s<seed>/   ultralytics' own run folder (weights/, results.csv, args.yaml) and ablate.json
    runs/<variant>-s<seed>.damaged-K/   a run folder the tool could not read, moved aside whole
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mhsa_patch.ablate import backends
from mhsa_patch.ablate import data as datasets
from mhsa_patch.ablate import lock as locks
from mhsa_patch.ablate import recipe as recipes
from mhsa_patch.ablate import runstate
from mhsa_patch.ablate.cluster.fingerprint import recorded
from mhsa_patch.ablate.record import RunRecord, to_csv
from mhsa_patch.ablate.status import Grid
from mhsa_patch.ablate.variants import Variant, plan_variants
from mhsa_patch.errors import PatchError, UsageError
from mhsa_patch.patching.atomic import fsync_dir, write_atomic
from mhsa_patch.patching.target import Target

DONE = runstate.DONE
MEASURE = "measure.json"
LOCK = "ablate.lock"
LATENCY_RUNS = 30
RETRIES = 2  # a run whose backend lost it (a Ray node gone) is tried again this often in one invocation


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
    def label(self) -> str:
        """The run as the user names it: ``MHSA@P3-s0``."""
        return f"{self.variant}-s{self.seed}"

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
    runs: list[Run]  # in the plan's order (variants as given, then seeds): the table's
    measured: dict
    slots: list[str]  # one entry per run that may go at once: "cpu", or a GPU index
    resumed: bool = False
    notes: list[str] = field(default_factory=list)  # warnings for the end of the command
    started_notes: list[str] = field(default_factory=list)  # warnings for its start (a stale lock taken over)
    device_auto: bool = False  # --device not given: every visible GPU, else the CPU
    verbose: bool = False  # keep each run's raw log, and ultralytics' own lines in it
    cwd: str = ""  # where the runs' children work: a relative data path resolves against it, as in yolo train
    lock: Any = None
    ray: Any = None  # the Ray connection prepare made (--ray), closed with the experiment
    data_splits: dict | None = None  # the dataset's splits as the target's ultralytics resolved them

    def done(self, run: Run) -> bool:
        return (self.dir / run.run_dir / DONE).is_file()

    def log(self, run: Run) -> Path:
        return self.dir / "logs" / f"{run.name}.log"

    def close(self) -> None:
        """Let go of the experiment's lock and its Ray connection (``run`` does when it ends; a caller that stops
        before calls this)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        if self.ray is not None:
            self.ray.close()
            self.ray = None


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
    try:
        return backends.parse_slots(text)
    except ValueError:
        raise UsageError(f"--device {str(text).strip()}: cpu, a GPU index (0) or several (0,1,2,3)") from None


def experiment_dir(project: str, name: str) -> Path:
    return (Path(project).expanduser() / name).resolve()


def check_options(*, data: str, seeds: str, epochs: int, imgsz: int, batch: int, device: str | None,
                  extra: Sequence[str]) -> tuple[list[int], list[str] | None, dict]:  # fmt: skip
    """Every option value checked before anything else: a :class:`UsageError` (exit 2) for a bad one."""
    if epochs < 1 or batch < 1:
        raise UsageError("--epochs and --batch must be >= 1")
    if imgsz < 32 or imgsz % 32:
        raise UsageError(f"--imgsz {imgsz}: must be a multiple of 32, at least 32")
    datasets.synthetic_count(data)
    seed_list = parse_seeds(seeds)
    slots = None if device is None else parse_device(device)
    return seed_list, slots, recipes.parse_extra(list(extra))


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
    device: str | None = None,
    project: str = "runs/ablate",
    name: str = "exp",
    extra: Sequence[str] = (),
    download: bool = False,
    verbose: bool = False,
    on_step: Callable[[str], None] | None = None,
    eval_split: str = "val",
    ray: str | None = None,
) -> Experiment:
    """Check everything and write the experiment's fixed files, holding its lock (released by :func:`run`, or by
    ``Experiment.close``); a one-line :class:`PatchError` on any refusal, before any run starts. ``device`` None:
    every GPU the target's torch sees, one run each, else the CPU. ``ray``: the runs go to the Ray cluster at that
    address (``--ray``): connected here, ``device`` None meaning a GPU where some node has one; the connection is the
    experiment's (``Experiment.ray``) until :func:`run` ends."""
    from mhsa_patch.child.launch import require_applied

    step = on_step or (lambda msg: None)
    seed_list, slots, extra_args = check_options(data=data, seeds=seeds, epochs=epochs, imgsz=imgsz, batch=batch,
                                                 device=device, extra=extra)  # fmt: skip
    if ray is None:  # with Ray, the GPUs are the worker nodes'
        for s in slots or ():
            backends.slot_env(s)  # a GPU index past CUDA_VISIBLE_DEVICES: refused now, not in every run
    exp_dir = experiment_dir(project, name)
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
    if eval_split not in recipes.SPLITS:
        raise UsageError(f"--eval-split {eval_split}: val or test")
    ds = datasets.locate(data, exp_dir, imgsz, download=download, target=target, split=eval_split)
    task_ = (task or "detect").lower()
    train = recipes.train_args(data=str(ds.yaml), epochs=epochs, imgsz=imgsz, batch=batch, project=exp_dir / "runs",
                               extra=extra_args)  # fmt: skip
    if ds.synthetic is None and download:
        step(f"Fetching {ds.yaml.name} once with ultralytics (--download)")
        datasets.download(target, ds)
    datasets.write_synthetic(ds, imgsz)  # drawn into <dir>/data/, renamed into place whole

    # one child reads the dataset as the target's ultralytics does (a refusal: before anything else is written),
    # tells the versions and the GPUs, and measures the variants an earlier invocation has not measured
    step(f"Reading {ds.yaml.name} as ultralytics {target.version} does; measuring every variant: parameters, true "
         "GFLOPs, latency")  # fmt: skip
    old_measure = _read_json(exp_dir / MEASURE) or {}
    have = old_measure.get("models", {}) if isinstance(old_measure.get("models"), dict) else {}
    fresh = not all(v.name in have for v in plan) or old_measure.get("imgsz") != imgsz
    names = [v.name for v in plan] + ([k for k in have if k not in {v.name for v in plan}] if fresh else [])
    texts = {v.name: (v.file_name, v.text) for v in plan}
    for k in names:  # variants of an earlier invocation are measured again alongside, from models/
        if k in texts:
            continue
        file = str(have[k].get("file", "")) if isinstance(have[k], dict) else ""
        if file and Path(file).name == file and (exp_dir / "models" / file).is_file():
            texts[k] = (have[k]["file"], (exp_dir / "models" / have[k]["file"]).read_text(encoding="utf-8"))
    device_auto = slots is None
    conn = None
    if ray is not None:
        from mhsa_patch.ablate import ray_backend

        step(f"Connecting to the Ray cluster ({ray})")
        conn = ray_backend.connect(ray)
    try:
        data_args = dict(train, task=task_, eval_split=eval_split)
        if conn is None:
            measured = _measure(target, texts if fresh else {}, imgsz, slots[0] if slots else None,
                                runs=LATENCY_RUNS if fresh else 0, data_args=data_args)  # fmt: skip
        else:  # parameters and GFLOPs here, on the CPU; the latency on a worker of the runs' device type
            measured = _measure(target, texts if fresh else {}, imgsz, "cpu", runs=0, data_args=data_args)
        if measured.get("data_error"):
            raise PatchError(datasets.refusal(target, ds, str(measured["data_error"])))
        if measured["data"].get("split_error"):  # --eval-split test where the YAML has none: before anything is written
            raise PatchError(str(measured["data"]["split_error"]))
        ds = datasets.Dataset(ds.label, ds.yaml, int(measured["data"]["nc"]), ds.synthetic)
        splits = {k: measured["data"][k] for k in ("path", *datasets.CHECKED_SPLITS) if k in measured["data"]}
        content = recorded(target, splits)  # the patch's and the data's hashes: compared on resume, and on every node
        if conn is not None:
            slots = _ray_device(conn, slots, measured, old_measure, texts if fresh else {}, target, imgsz, ds, train,
                                content, step)  # fmt: skip

        exp_dir.mkdir(parents=True, exist_ok=True)
        exp_lock = _lock_experiment(exp_dir, project, name)
    except BaseException:
        if conn is not None:
            conn.close()
        raise
    try:
        started = [exp_lock.took_over] if exp_lock.took_over else []
        exp = _prepare_locked(target, exp_dir, plan, ds, seed_list, slots, train, extra_args, weights_path, measured,
                              have, texts, fresh, scale=scale, base=base, task=task_, epochs=epochs, imgsz=imgsz,
                              batch=batch, step=step, eval_split=eval_split, device_auto=device_auto,
                              content=content, ray=conn is not None)  # fmt: skip
    except BaseException:
        exp_lock.release()
        if conn is not None:
            conn.close()
        raise
    exp.lock, exp.started_notes, exp.verbose = exp_lock, started, verbose
    exp.ray, exp.data_splits = conn, splits
    return exp


def _ray_device(conn, slots, measured: dict, old_measure: dict, texts: dict, target: Target, imgsz: int,
                ds: datasets.Dataset, train: dict, content: dict, step) -> list[str]:  # fmt: skip
    """The runs' device on the cluster (``--device``, else a GPU where a node has one), refused where no node can
    hold a run; the variants' latency measured in one task on a worker of that kind (``texts``: those to measure),
    its device's name in ``measured`` (on a resume that measures nothing: the name of the first measurement's)."""
    from mhsa_patch.ablate import ray_backend
    from mhsa_patch.ablate.cluster.fingerprint import Expected

    slots = ray_backend.device_slots(conn, slots)
    ray_backend.require_placeable(conn, slots[0], train)
    if not texts:
        measured["device_name"] = old_measure.get("device_name") or measured.get("device_name")
        return slots
    kind = "CPU" if slots[0] in ("cpu", "mps") else "GPU"
    step(f"Timing every variant on a {kind} worker of the Ray cluster")
    expected = Expected(ultralytics=str(measured["ultralytics"]), torch=str(measured["torch"]), patch=content["patch"],
                        data=ds.label, data_sha256="")  # fmt: skip
    lat = ray_backend.measure_latency(conn, target, texts, imgsz, ds.nc, slots[0], LATENCY_RUNS, train, expected)
    for k, m in measured["models"].items():
        m["latency_ms"] = (lat["models"].get(k) or {}).get("latency_ms")
    measured.update(device=lat["device"], device_name=lat["device_name"], latency_node=lat["node"],
                    threads=lat.get("threads"), runs=lat.get("runs"))  # fmt: skip
    return slots


def _lock_experiment(exp_dir: Path, project: str, name: str):
    try:
        return locks.acquire(exp_dir / LOCK)
    except locks.Busy as e:
        who = locks.describe(e.info) if e.info else "another ablate"
        raise PatchError(
            f"{exp_dir} is in use by {who}; wait for it to end (ablate --status --project {project} --name {name} "
            "shows its runs), or stop it there: its runs resume from their snapshots, and the lock of an ablate that "
            "died is taken over by the next one"
        ) from None


def _prepare_locked(target, exp_dir, plan, ds, seed_list, slots, train, extra_args, weights_path, measured, have,
                    texts, fresh, *, scale, base, task, epochs, imgsz, batch, step, eval_split, device_auto, content,
                    ray) -> Experiment:  # fmt: skip
    if slots is None:
        slots = [str(i) for i in range(int(measured.get("gpus") or 0))] or ["cpu"]
    rec = {
        "data": ds.label,
        "epochs": epochs,
        "imgsz": imgsz,
        "batch": batch,
        "weights": None if weights_path is None else str(weights_path),
        "scale": scale,
        "base": (base or "yolov8").lower(),
        "task": task,
        "ultralytics": measured["ultralytics"],
        "torch": measured["torch"],
        "device": ("Ray " + ("CPU" if slots[0] in ("cpu", "mps") else "GPU")) if ray else ",".join(slots),
        "device_name": measured["device_name"],
        "train": train,
        "val": recipes.val_args(data=str(ds.yaml), imgsz=imgsz, batch=batch, extra=extra_args, split=eval_split),
        "extra": extra_args,
        **content,
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
    models.mkdir(parents=True, exist_ok=True)
    for v in plan:
        if not (models / v.file_name).is_file():
            write_atomic(models / v.file_name, v.text.encode("utf-8"))
    if not resumed:
        recipes.write_recipe(exp_dir, rec)
    if fresh:
        files = {k: texts[k][0] for k in measured["models"]}
        for k, m in measured["models"].items():
            m["file"] = files[k]
        keep = {k: v for k, v in measured.items() if k not in ("models", "gpus", "data")}
        runstate.write_json(exp_dir / MEASURE, {**keep, "imgsz": imgsz, "models": measured["models"]})
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
                with open(tmp, "rb") as f:  # as every file the runs start from: synced, then renamed into place
                    os.fsync(f.fileno())
                os.replace(tmp, out)
                fsync_dir(models)
            starts[v.name] = str(out)
    runs = [Run(v.name, v.slug, s, starts[v.name]) for v in plan for s in seed_list]
    return Experiment(exp_dir, target, plan, seed_list, ds, rec, runs, measured_models, slots, resumed,
                      device_auto=device_auto, cwd=os.getcwd())  # fmt: skip


def _measure(target: Target, texts: dict[str, tuple[str, str]], imgsz: int, slot: str | None, runs: int,
             data_args: dict) -> dict:  # fmt: skip
    import json

    from mhsa_patch.child.launch import run_child

    with tempfile.TemporaryDirectory(prefix="mhsa-ablate-") as tmp:
        (Path(tmp) / "train.json").write_text(json.dumps(data_args), encoding="utf-8")
        args: list[str] = ["--data-args", str(Path(tmp) / "train.json")]
        for k, (file_name, text) in texts.items():
            folder = Path(tmp) / str(len(args))  # each in its own folder: file names may repeat across scales
            folder.mkdir()
            (folder / file_name).write_text(text, encoding="utf-8")
            args += ["--model", f"{k}={folder / file_name}"]
        device = "auto" if slot is None else "cpu" if slot in ("cpu", "mps") else "cuda:0"
        args += ["--imgsz", str(imgsz), "--device", device, "--runs", str(runs)]
        env = {} if slot is None else backends.slot_env(slot)
        return run_child(target, "mhsa_patch.child.measure", args, extra_env=env, silent=True)


def _read_json(path: Path) -> dict | None:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ---------------------------------------------------------------------------------------------------------- runs


def order(exp: Experiment, runs: Sequence[Run]) -> list[Run]:
    """The order runs start in: seed-major (seed 0 of every variant, then seed 1, ...), so that a grid stopped at
    any point has every variant at as many seeds as possible; within a seed the longest first (the most GFLOPs),
    so that the last runs to start are the short ones."""
    seeds = {s: k for k, s in enumerate(exp.seeds)}
    plan = {r.variant: k for k, r in enumerate(exp.runs)}

    def cost(r: Run) -> float:
        m = exp.measured.get(r.variant)
        g = m.get("gflops") if isinstance(m, dict) else None
        return float(g) if isinstance(g, (int, float)) else 0.0

    return sorted(runs, key=lambda r: (seeds.get(r.seed, r.seed), -cost(r), plan[r.variant]))


def run_spec(exp: Experiment, run: Run, slot: str) -> dict:
    """What one run's child gets: the recipe's arguments plus this run's model, seed, folder and device."""
    train = dict(exp.recipe["train"])
    train.update(model=run.model, seed=run.seed, name=run.name, device=backends.slot_device(slot))
    val = dict(exp.recipe["val"], device=backends.slot_device(slot))
    label = "Ray" if slot == "ray" else backends.slot_label(slot)
    return {"train": train, "val": val, "run": run.label, "device": label, "cwd": exp.cwd, "verbose": exp.verbose}


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
    """Train (or resume) one run in a child and validate its ``best.pt`` once; the child's result, or its one-line
    error. Writes only under ``exp_dir`` (the run's folder, its log, its lock and its arguments)."""
    from mhsa_patch.child.launch import run_child

    logs = exp_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    args_file = logs / f"{run.name}.args.json"
    runstate.write_json(args_file, spec)
    run_dir = exp_dir / run.run_dir
    lock = exp_dir / "locks" / f"{run.name}.lock"
    args = ["--model", run.model, "--run-dir", str(run_dir), "--args", str(args_file), "--lock", str(lock)]
    raw = logs / f"{run.name}.raw.log" if spec.get("verbose") else None
    cwd = spec.get("cwd")
    return run_child(
        target, "mhsa_patch.child.train", args, on_event=on_event, extra_env=env, log=logs / f"{run.name}.log",
        raw_log=raw, on_start=on_start, cwd=Path(cwd) if cwd and Path(cwd).is_dir() else None,
    )  # fmt: skip


def record_of(exp: Experiment, run: Run, result: dict) -> RunRecord:
    """The record of a finished run: the child's result (its metric columns: those of the recipe's task, NaN where
    the result has none) and the variant's measurements."""
    from mhsa_patch.child.metrics import columns

    m = exp.measured.get(run.variant, {})
    task = exp.recipe.get("task") or "detect"

    def value(key: str) -> float:
        try:
            return float(result[key])
        except (KeyError, TypeError, ValueError):
            return float("nan")

    values = {c: value(c) for c in columns(task)}
    return RunRecord(
        variant=run.variant,
        seed=run.seed,
        params=int(m.get("params", result.get("params", 0))),
        gflops=float(m.get("gflops", float("nan"))),
        latency_ms=float(m.get("latency_ms") if m.get("latency_ms") is not None else float("nan")),
        **{c: values.pop(c, float("nan")) for c in ("map50", "map50_95", "precision", "recall")},
        best_epoch=int(result["best_epoch"]),
        epochs=int(result["epochs"]),
        train_s=round(float(result["train_s"]), 3),
        run_dir=run.run_dir,
        metrics=values,
        task=task,
    )


def records(exp: Experiment) -> list[RunRecord]:
    """The records of the runs finished so far, in the plan's order (variants as given, then seeds)."""
    out = []
    for r in exp.runs:
        try:
            result = runstate.read_done(exp.dir / r.run_dir)
        except runstate.Damaged:
            result = None  # the scheduler moves it aside and trains the run again
        if result is not None:
            out.append(record_of(exp, r, result))
    return out


def finish_run(exp: Experiment, run: Run, result: dict, failed: Sequence[Failure] = ()) -> Any:
    """Mark ``run`` finished, rewrite ``ablation.csv`` from every finished run, and write the report's files
    (``failed``: the runs failed so far, shown there as missing)."""
    runstate.write_json(exp.dir / run.run_dir / DONE, result)
    # the resume snapshots (checkpoints with the optimizer) are not needed once the run is recorded
    shutil.rmtree(exp.dir / run.run_dir / "weights" / runstate.RESUME, ignore_errors=True)
    return write_outputs(exp, failed)


def write_outputs(exp: Experiment, failed: Sequence[Failure] = ()):
    """The report of every finished run: ``ablation.csv``, the summaries and the plots, and its table.

    A report that fails must not stop the trainings: the CSV is then written alone, and a note says so.
    """
    from mhsa_patch.ablate.report import write_report  # matplotlib and scipy: only once a run has finished

    recs = records(exp)
    try:
        return write_report(exp.dir, recs, exp.recipe, baseline="stock",
                            failed=[(f.run.variant, f.run.seed, f.reason) for f in failed])  # fmt: skip
    except Exception as e:  # noqa: BLE001
        from mhsa_patch.child.protocol import one_line

        write_atomic(exp.dir / "ablation.csv", to_csv(recs).encode("utf-8"))
        note = f"the report could not be written ({one_line(e)}); ablation.csv is complete"
        if note not in exp.notes:
            exp.notes.append(note)
        return None


@dataclass(frozen=True)
class Failure:
    run: Run
    reason: str
    log: str | None


@dataclass
class Outcome:
    finished: list[Run]
    skipped: list[Run]
    failed: list[Failure] = field(default_factory=list)
    not_started: list[Run] = field(default_factory=list)  # left by --fail-fast
    report: Any = None


RunEvent = Callable[[str, Run, dict], None]  # ("start" | "event" | "warning" | "done" | "failed", run, data)


def _backend(exp: Experiment, ray_address: str | None, storage: str | None = None):
    if ray_address is not None:
        from mhsa_patch.ablate.ray_backend import RayBackend

        return RayBackend(exp, ray_address, execute_run=execute_run, run_spec=run_spec, storage=storage,
                          conn=exp.ray)  # fmt: skip

    def execute(r: Run, slot: str, on_event, on_start) -> dict:
        return execute_run(exp.target, exp.dir, r, run_spec(exp, r, slot), env=backends.slot_env(slot),
                           on_event=on_event, on_start=on_start)  # fmt: skip

    return backends.LocalBackend(list(exp.slots), execute, lambda r: str(exp.log(r)))


def _pending(exp: Experiment, emit: RunEvent) -> tuple[list[Run], list[Run]]:
    """(finished, to train). A run whose ``ablate.json`` cannot be read is moved aside whole and trained again."""
    finished, pending = [], []
    for r in exp.runs:
        run_dir = exp.dir / r.run_dir
        try:
            done = runstate.read_done(run_dir)
        except runstate.Damaged as d:
            aside = runstate.set_aside(run_dir)
            emit("warning", r, {"msg": f"{r.label}: {d.problem}; the run folder was moved whole to "
                                       f"runs/{aside.name}; the run trains again"})  # fmt: skip
            done = None
        (finished if done is not None else pending).append(r)
    return finished, pending


def run(exp: Experiment, *, on_event: RunEvent | None = None, ray_address: str | None = None,
        fail_fast: bool = False, storage: str | None = None) -> Outcome:  # fmt: skip
    """Train every run not yet finished, and record each as it finishes (the CSV and the report). A failed run is
    recorded with its one-line reason and its log, and every other run goes on (``fail_fast``: none starts after
    it; the runs going finish). ``ray_address``: on that Ray cluster (``storage``: ``--storage``, where the tasks
    keep their snapshots). Releases the experiment's lock when it returns."""
    emit = on_event or (lambda kind, run, data: None)
    try:
        return _schedule(exp, emit, ray_address, fail_fast, storage)
    finally:
        exp.close()


def _schedule(exp: Experiment, emit: RunEvent, ray_address: str | None, fail_fast: bool,
              storage: str | None = None) -> Outcome:  # fmt: skip
    skipped, pending = _pending(exp, emit)
    out = Outcome([], skipped)
    grid = Grid.start(exp.dir, exp.runs, exp.slots if ray_address is None else ["ray"], int(exp.recipe["epochs"]))
    queue = order(exp, pending)
    tries: Counter = Counter()
    running: dict[str, Run] = {}
    stopping = False
    backend = _backend(exp, ray_address, storage) if queue else None
    try:
        while queue or running:
            while queue and not stopping and len(running) < backend.capacity:
                r = queue.pop(0)
                running[r.name] = r
                grid.update(r.name, state="starting", reason=None)
                backend.start(r)
            if not running:
                break
            for ev in backend.events(timeout=0.5):
                r = ev.run
                if isinstance(ev, backends.Started):
                    grid.update(r.name, state="running", device=ev.device)
                    emit("start", r, {"slot": ev.device})
                elif isinstance(ev, backends.Progress):
                    if "warning" in ev.event:
                        emit("warning", r, {"msg": str(ev.event["warning"])})
                        continue
                    if "epoch" in ev.event:
                        grid.epoch(r.name, ev.event)
                    emit("event", r, ev.event)
                elif isinstance(ev, backends.Finished):
                    running.pop(r.name, None)
                    out.report = finish_run(exp, r, ev.result, out.failed)
                    out.finished.append(r)
                    grid.finished(r.name, ev.result)
                    emit("done", r, ev.result)
                elif isinstance(ev, backends.Failed):
                    running.pop(r.name, None)
                    if ev.retryable and tries[r.name] < RETRIES and not stopping:
                        tries[r.name] += 1
                        queue.insert(0, r)
                        grid.update(r.name, state="pending", reason=ev.reason)
                        emit("warning", r, {"msg": f"{r.label}: {ev.reason}; trying it again ({tries[r.name]}/{RETRIES})"})
                        continue
                    out.failed.append(Failure(r, ev.reason, ev.log))
                    grid.update(r.name, state="failed", reason=ev.reason, log=ev.log)
                    emit("failed", r, {"reason": ev.reason, "log": ev.log})
                    stopping = stopping or fail_fast
    except KeyboardInterrupt:
        if backend is not None:
            backend.stop()
        for name in running:
            grid.update(name, state="interrupted")
        raise
    finally:
        if backend is not None:
            backend.close()
        grid.close()
    out.not_started = list(queue)
    if (out.report is None or out.failed) and any(exp.done(r) for r in exp.runs):
        # the report of the runs finished before, when none finished now; or with every failure shown as missing
        out.report = write_outputs(exp, out.failed)
    if grid.problem:
        exp.notes.append(grid.problem)
    return out
