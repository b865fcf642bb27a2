"""``ablate``'s bookkeeping without training (fast): the locks, the records from a run's own files, the grid's state.

The trainings that exercise the same code end to end are in ``test_ablate.py`` (marked ``training``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mhsa_patch.ablate import lock as locks
from mhsa_patch.ablate import runstate, status
from mhsa_patch.ablate.runner import Experiment, Run, records, write_outputs
from mhsa_patch.child.metrics import extract
from mhsa_patch.errors import PatchError

ROOT = Path(__file__).resolve().parent.parent

HOLD = """
import sys, time
from pathlib import Path
from mhsa_patch.ablate import lock
held = lock.acquire(Path(sys.argv[1]), device="cuda:1")
print("held", flush=True)
time.sleep(120)
"""


def _holder(path: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_held_lock_refuses_naming_host_pid_and_device_and_a_dead_holders_is_taken_over(tmp_path):
    path = tmp_path / "ablate.lock"
    proc = _holder(path)
    try:
        seen = locks.holder(path)
        assert seen["pid"] == proc.pid and seen["host"] == locks.host() and seen["alive"] is True
        assert seen["device"] == "cuda:1"
        with pytest.raises(locks.Busy) as e:
            locks.acquire(path)
        assert e.value.info["pid"] == proc.pid
        assert f"host {locks.host()} (PID {proc.pid}, since " in str(e.value) and "on cuda:1" in str(e.value)
    finally:
        proc.send_signal(signal.SIGKILL)  # as a crash would: the file still names it
        proc.wait()
    assert locks.holder(path)["alive"] is False
    with locks.acquire(path) as held:
        assert held.took_over.startswith(f"took over the lock of host {locks.host()} (PID {proc.pid}")
        assert held.took_over.endswith("no longer running")
        assert locks.holder(path)["pid"] == os.getpid()
    assert locks.holder(path) is None and path.read_bytes() == b""  # released: it names nobody
    with locks.acquire(path) as held:  # a released lock is taken without a word
        assert held.took_over is None


def test_another_hosts_lock_counts_while_its_heartbeat_is_fresh(tmp_path):
    """On a filesystem whose ``flock`` does not reach other machines, the heartbeat decides."""
    path = tmp_path / "ablate.lock"
    path.write_text(json.dumps({"host": "node-17.cluster", "pid": 4242, "since": time.time() - 3600}) + "\n")
    with pytest.raises(locks.Busy, match=r"host node-17.cluster \(PID 4242"):
        locks.acquire(path)
    old = time.time() - 10 * 60
    os.utime(path, (old, old))
    assert locks.holder(path)["alive"] is False
    with locks.acquire(path) as held:
        assert "host node-17.cluster (PID 4242" in held.took_over and held.took_over.endswith("no heartbeat for 10 min")


def test_reading_a_lock_takes_nothing_and_writes_nothing(tmp_path):
    path = tmp_path / "ablate.lock"
    proc = _holder(path)
    try:
        before = os.stat(path)
        for _ in range(3):
            assert locks.holder(path)["pid"] == proc.pid
        after = os.stat(path)
        assert (before.st_mtime_ns, before.st_size, before.st_ino) == (after.st_mtime_ns, after.st_size, after.st_ino)
    finally:
        proc.kill()
        proc.wait()
    link = tmp_path / "link.lock"
    link.symlink_to(path)
    assert locks.holder(link) is None  # a planted link names nobody
    path.write_text("x" * (locks.LIMIT + 10))
    assert locks.holder(path) is None


# -- records: every metric in its own column (issue 22 A.2) -------------------------------------------------------------

HEADER = "epoch,time,train/box_loss,metrics/precision(B),metrics/recall(B),metrics/mAP50(B),metrics/mAP50-95(B),val/box_loss"
# fitness (mAP50-95 on 8.4) peaks at epoch 2 of 4: best.pt is epoch 2's, and best_epoch is not the last epoch
ROWS = ["1,10.0,1.9,0.51,0.33,0.47,0.30,1.8", "2,20.0,1.7,0.73,0.55,0.61,0.42,1.6", "3,30.0,1.6,0.70,0.57,0.60,0.38,1.5",
        "4,40.0,1.5,0.69,0.58,0.62,0.40,1.5"]  # fmt: skip
RESULT = {"map50": 0.61, "map50_95": 0.42, "precision": 0.73, "recall": 0.55, "params": 3011043, "best_epoch": 2,
          "epochs": 4, "train_s": 12.5, "stopped_early": False, "stop_epoch": None, "batch": 16, "patience": 4}  # fmt: skip


def test_each_metric_lands_in_its_own_column_and_best_epoch_is_the_peak(tmp_path):
    # what the child reads from ultralytics' validator (distinct values: a swap of any two is seen)
    rd = {"metrics/precision(B)": 0.73, "metrics/recall(B)": 0.55, "metrics/mAP50(B)": 0.61, "metrics/mAP50-95(B)": 0.42,
          "fitness": 0.42}  # fmt: skip
    assert extract("detect", rd) == {"map50": 0.61, "map50_95": 0.42, "precision": 0.73, "recall": 0.55}
    run = Run("stock", "stock", 0, "models/yolov8n-stock.yaml")
    folder = tmp_path / run.run_dir
    folder.mkdir(parents=True)
    (folder / "results.csv").write_text("\n".join([HEADER, *ROWS]) + "\n")
    runstate.write_json(folder / runstate.DONE, RESULT)
    measured = {"stock": {"params": 3011043, "gflops": 8.1945, "latency_ms": 12.3}}
    recipe = {"data": "d.yaml", "epochs": 4, "imgsz": 640, "batch": 16, "weights": None, "ultralytics": "8.4.190",
              "torch": "2.14.1", "device": "0", "device_name": "GPU", "train": {}, "extra": {}}  # fmt: skip
    exp = Experiment(tmp_path, None, [], [0], None, recipe, [run], measured, ["0"])
    (rec,) = records(exp)
    assert (rec.map50, rec.map50_95, rec.precision, rec.recall) == (0.61, 0.42, 0.73, 0.55)
    assert (rec.best_epoch, rec.epochs, rec.train_s, rec.params, rec.gflops, rec.latency_ms) == (2, 4, 12.5, 3011043,
                                                                                                 8.1945, 12.3)  # fmt: skip
    write_outputs(exp)
    import csv

    (row,) = list(csv.DictReader((tmp_path / "ablation.csv").open()))
    assert {k: row[k] for k in ("map50", "map50_95", "precision", "recall", "best_epoch", "epochs")} == {
        "map50": "0.61", "map50_95": "0.42", "precision": "0.73", "recall": "0.55", "best_epoch": "2", "epochs": "4"}
    peak = max(range(len(ROWS)), key=lambda k: float(ROWS[k].split(",")[6])) + 1
    assert int(row["best_epoch"]) == peak == 2 < len(ROWS)


def test_an_unreadable_result_is_no_record(tmp_path):
    folder = tmp_path / "runs" / "stock-s0"
    folder.mkdir(parents=True)
    (folder / runstate.DONE).write_text('{"map50": 0.5, "map50_')
    with pytest.raises(runstate.Damaged, match="ablate.json is not readable JSON"):
        runstate.read_done(folder)
    (folder / runstate.DONE).write_text(json.dumps(dict(RESULT, map50="0.5")))
    with pytest.raises(runstate.Damaged, match="ablate.json has no map50"):
        runstate.read_done(folder)


def test_the_child_commits_the_peak_as_best_epoch_and_an_early_stop_as_one(tmp_path):
    """The run's child commits a snapshot after every epoch ultralytics saves (``on_model_save``). Driven here the
    way ultralytics' trainer drives it (``BaseTrainer._do_train``: validate and keep the best fitness, ask its
    ``EarlyStopping``, write ``last.pt``, then the callback), without training: the fitness of ROWS peaks at epoch 2
    of 4, and patience 2 stops a 10-epoch run after epoch 4. The trainer is the attributes the callback reads; the
    stopper is ultralytics' own, the checkpoints are real ``torch.save`` files and the state is read back by the
    reader that resumes a run."""
    import types

    import torch
    from ultralytics.utils.torch_utils import EarlyStopping

    from mhsa_patch.child.train import _Snapshots

    run_dir = tmp_path / "runs" / "stock-s0"
    weights = run_dir / "weights"
    weights.mkdir(parents=True)
    spec = {"train": {"epochs": 10, "batch": 16, "patience": 2}, "run": "stock-s0"}
    snaps = _Snapshots(None, run_dir, None, spec)
    trainer = types.SimpleNamespace(args=types.SimpleNamespace(epochs=10, batch=16, patience=2), epochs=10, epoch=0,
                                    last=weights / "last.pt", fitness=None, best_fitness=None, stop=False,
                                    stopper=EarlyStopping(patience=2))  # fmt: skip
    (run_dir / "results.csv").write_text(HEADER + "\n")
    for epoch, row in enumerate(ROWS):  # ultralytics' epoch index: 0-based
        trainer.epoch, trainer.fitness = epoch, float(row.split(",")[6])  # mAP50-95 as the fitness
        if trainer.best_fitness is None or trainer.best_fitness < trainer.fitness:  # BaseTrainer.validate
            trainer.best_fitness = trainer.fitness
        trainer.stop |= trainer.stopper(epoch + 1, trainer.fitness) or epoch + 1 >= trainer.epochs
        with (run_dir / "results.csv").open("a") as f:  # the epoch's row comes before its checkpoint
            f.write(row + "\n")
        torch.save({"epoch": epoch, "fitness": trainer.fitness}, trainer.last)
        snaps.on_model_save(trainer)
        if trainer.stop:
            break
    assert trainer.stop and trainer.epoch == 3  # ultralytics stopped it after epoch 4 of 10
    state = runstate.read_state(run_dir)  # checked as a resume checks it: snapshots whole, results.csv holds them
    assert (state["epochs_done"], state["best_epoch"]) == (4, 2)
    assert (state["last"], state["best"]) == ("last-e4.pt", "best-e2.pt")
    assert state["stopped_early"] is True and state["batch"] == 16
    snap = weights / runstate.RESUME
    assert sorted(p.name for p in snap.iterdir()) == ["best-e2.pt", "last-e4.pt", runstate.STATE]
    assert torch.load(snap / "best-e2.pt")["epoch"] == 1 and torch.load(snap / "last-e4.pt")["epoch"] == 3


# -- the grid's state ----------------------------------------------------------------------------------------------------


def _grid(tmp_path: Path) -> Path:
    """An experiment of 3 runs of 10 epochs on 2 GPUs: stock-s0 done (4 s/epoch), MHSA-s0 interrupted after epoch 3
    (6 s/epoch), stock-s1 failed earlier, MHSA-s1 pending."""
    exp = tmp_path / "exp"
    (exp / "runs").mkdir(parents=True)
    (exp / "recipe.yaml").write_text(yaml.safe_dump({"epochs": 10, "device": "0,1"}))
    done = exp / "runs" / "stock-s0"
    done.mkdir()
    runstate.write_json(done / runstate.DONE, dict(RESULT, epochs=10, train_s=40.0))
    snap = exp / "runs" / "MHSA-s0" / "weights" / runstate.RESUME
    snap.mkdir(parents=True)
    runstate.write_json(snap / runstate.STATE, {"epochs_done": 3, "last": "last-e3.pt", "best": "best-e2.pt",
                                                "best_epoch": 2, "train_s": 18.0})  # fmt: skip
    rows = [{"run": f"{v}-s{s}", "variant": v, "seed": s, "dir": f"runs/{v}-s{s}", "state": st, "device": dev,
             "epoch": 0, "epochs": 10, "reason": why, "log": log}
            for v, s, st, dev, why, log in (("stock", 0, "running", "cuda:0", None, None),
                                            ("stock", 1, "failed", None, "the child process was killed by SIGKILL",
                                             "logs/stock-s1.log"),
                                            ("MHSA", 0, "running", "cuda:1", None, None),
                                            ("MHSA", 1, "pending", None, None, None))]  # fmt: skip
    (exp / status.RUNS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return exp


def test_status_reads_the_runs_own_files_and_estimates_the_time_left(tmp_path):
    exp = _grid(tmp_path)
    st = status.read(exp)
    by = {r["run"]: r for r in st.rows}
    assert [r["run"] for r in st.rows] == ["stock-s0", "stock-s1", "MHSA-s0", "MHSA-s1"]
    assert by["stock-s0"]["state"] == "done" and by["stock-s0"]["epoch"] == 10  # ablate.json, whatever the line said
    assert by["stock-s1"]["state"] == "failed" and "SIGKILL" in by["stock-s1"]["reason"]
    assert by["MHSA-s0"]["state"] == "interrupted" and by["MHSA-s0"]["epoch"] == 3  # no driver, no run lock: not running
    assert by["MHSA-s1"]["state"] == "pending"
    # 4 s per epoch for stock, 6 s for MHSA: 7 epochs left of MHSA-s0 and 10 of MHSA-s1 at 6 s, on 2 GPUs
    assert by["MHSA-s0"]["eta_s"] == 42.0 and by["MHSA-s1"]["eta_s"] == 60.0
    assert st.eta_s == 51.0 and st.devices == 2 and st.driver is None


def test_status_writes_nothing_and_trusts_no_path_it_reads(tmp_path):
    exp = _grid(tmp_path)
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in exp.rglob("*")}
    status.read(exp)
    assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in exp.rglob("*")} == before
    lines = (exp / status.RUNS).read_text().splitlines()
    for bad in ("../../etc", "runs/../x", "/tmp/x"):
        (exp / status.RUNS).write_text(lines[0].replace('"runs/stock-s0"', json.dumps(bad)) + "\n")
        with pytest.raises(PatchError, match="not a run of this tool"):
            status.read(exp)
    with pytest.raises(PatchError, match="no experiment here"):
        status.read(tmp_path)


def test_a_finished_run_whose_result_cannot_be_read_is_moved_aside_and_trained_again(tmp_path):
    from mhsa_patch.ablate.runner import _pending

    runs = [Run("stock", "stock", s, "m.yaml") for s in (0, 1)]
    for r in runs:
        (tmp_path / r.run_dir).mkdir(parents=True)
    runstate.write_json(tmp_path / runs[0].run_dir / runstate.DONE, RESULT)
    (tmp_path / runs[1].run_dir / runstate.DONE).write_text('{"map50": 0.6')  # cut by a full disk
    (tmp_path / runs[1].run_dir / "results.csv").write_text("\n".join([HEADER, *ROWS]) + "\n")
    exp = Experiment(tmp_path, None, [], [0, 1], None, {}, runs, {}, ["cpu"])
    said = []
    finished, pending = _pending(exp, lambda kind, run, data: said.append((kind, run.name, data["msg"])))
    assert [r.name for r in finished] == ["stock-s0"] and [r.name for r in pending] == ["stock-s1"]
    assert said == [("warning", "stock-s1", "stock-s1: ablate.json is not readable JSON (13 bytes: cut short?); the run "
                     "folder was moved whole to runs/stock-s1.damaged-1; the run trains again")]  # fmt: skip
    aside = tmp_path / "runs" / "stock-s1.damaged-1"
    assert (aside / "results.csv").read_text().splitlines()[1:] == ROWS and not (tmp_path / runs[1].run_dir).exists()
