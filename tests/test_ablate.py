"""``mhsa-patch ablate``, the runner side: real trainings, tiny (imgsz 64, a few images, 1-8 epochs).

A few experiments are shared by the tests that read them (module fixtures):

* ``learn``: stock and MHSA on the learnable set (``tests/learnable.py``: mAP moves within seconds), ``-- patience=2``:
  both stop early, mAP is not 0, the best epoch is not the last. Started from the project folder with a dataset YAML
  whose ``path:`` is relative to it, as ``yolo train`` reads it;
* ``par``: stock seeds 0 and 1 on two CPU slots at once (the GPU scheduler), and ``ray``: the same on Ray, which must
  give the same table and the same losses (same seed, same losses, across experiments and backends);
* ``interrupted``: stock seeds 0 and 1, 4 epochs: Ctrl-C, then the run's child killed with SIGKILL while the grid
  goes on; its run folder as the kill left it is what the damage tests start from.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pytest
import yaml

import ftpserver
import helpers
import learnable
import netguard
import trainkit
from mhsa_patch.ablate import lock as locks

pytestmark = pytest.mark.training

TINY = ["--data", "synthetic:4", "--epochs", "2", "--imgsz", "64", "--batch", "2"]
EXTRA = ["--", "workers=0", "plots=False"]
LEARN = ["--data", "cfg/square.yaml", "--epochs", "8", "--imgsz", "64", "--batch", str(learnable.BATCH), "--variant",
         "MHSA", "--seeds", "1", "--", *learnable.ARGS, "patience=2"]  # fmt: skip
DETERMINISTIC = ("variant", "seed", "params", "gflops", "map50", "map50_95", "precision", "recall", "best_epoch",
                 "epochs", "run_dir")  # fmt: skip  # every column but the timings (train_s, latency_ms)
OOM = Path(__file__).resolve().parent / "oom"  # its sitecustomize: a CUDA out-of-memory error in the first epoch


def ablate(site: Path, project: Path, name: str, *args: str, timeout: float = 900, cwd: Path | None = None):
    return trainkit.cli("ablate", "--target", str(site), "--project", str(project), "--name", name, *args,
                        site=site, timeout=timeout, cwd=cwd)  # fmt: skip


def read_csv(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def results(run_dir: Path) -> list[dict]:
    return [{k.strip(): v.strip() for k, v in row.items()} for row in read_csv(run_dir / "results.csv")]


LOSSES = ("train/box_loss", "train/cls_loss", "train/dfl_loss", "val/box_loss", "val/cls_loss", "val/dfl_loss")


def losses(run_dir: Path) -> list[tuple]:
    return [tuple(row[k] for k in LOSSES) for row in results(run_dir)]


def best_epoch(run_dir: Path) -> int:
    """best.pt's epoch as ultralytics' save_model picks it: the last epoch whose fitness (mAP50-95 on 8.4) equals the
    best so far, numbered from 1."""
    maps = [float(x["metrics/mAP50-95(B)"]) for x in results(run_dir)]
    return max(k + 1 for k, v in enumerate(maps) if v == max(maps))


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def stamps(root: Path) -> dict[str, tuple]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(root.rglob("*"))}


def status(project: Path, name: str):
    """``ablate --status``: no --target, no training, nothing written."""
    return helpers.run_tool("ablate", "--status", "--project", str(project), "--name", name,
                            env=helpers.checkout_env(None, offline=False))  # fmt: skip


@pytest.fixture(scope="module")
def site() -> Path:
    return trainkit.patched()["site"]


@pytest.fixture(scope="module")
def learn(site, tmp_path_factory):
    """stock and MHSA at seed 0 on the learnable set, patience 2, started from the project folder, under the network
    guard (tests/netguard.py: every connect and name lookup of the tool and of each process it starts recorded)."""
    project = tmp_path_factory.mktemp("learn")
    learnable.write_dataset(project / "sets" / "square", path="sets/square", yaml_path=project / "cfg" / "square.yaml")
    guarded = netguard.run("ablate", "--target", str(site), "--project", str(project), "--name", "l", *LEARN,
                           site=site, cwd=project)  # fmt: skip
    proc = trainkit.ok(guarded.proc)
    return {"dir": project / "l", "project": project, "proc": proc, "guarded": guarded}


def test_a_grid_stays_offline(learn):
    """Issue 22 A.10: the tool, its measuring child and each run's child (ultralytics' trainer and validator on a
    dataset YAML) start offline and never try the network, nor does the report the tool draws itself."""
    run = learn["guarded"]
    netguard.assert_offline(run)
    assert len(run.processes) >= 4, run.processes  # the tool, its measuring child, and the two runs' children


# ---------------------------------------------------------------------------------------------------- the table

RECOMPUTE = r"""
import json, sys
from ultralytics import YOLO
from mhsa_patch.child.probe import true_flops

exp, runs, val = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
out = {}
for run in runs:
    best = f"{exp}/{run}/weights/best.pt"
    yolo = YOLO(best)
    model = yolo.model.float()
    m = YOLO(best).val(**val).results_dict
    out[run] = {
        "params": sum(p.numel() for p in model.parameters()),
        "gflops": true_flops(model, val["imgsz"])["gflops"],
        "map50": m["metrics/mAP50(B)"], "map50_95": m["metrics/mAP50-95(B)"],
        "precision": m["metrics/precision(B)"], "recall": m["metrics/recall(B)"],
    }
print(json.dumps(out))
"""


def test_the_table_equals_a_recomputation_from_each_runs_own_files(learn, site):
    d = learn["dir"]
    rows = read_csv(d / "ablation.csv")
    assert [(r["variant"], r["seed"]) for r in rows] == [("stock", "0"), ("MHSA", "0")]
    recipe = yaml.safe_load((d / "recipe.yaml").read_text())
    val = dict(recipe["val"], device="cpu")
    # from the project folder, where the dataset YAML's relative path: resolves; the checkout on PYTHONPATH
    proc = subprocess.run([sys.executable, "-c", RECOMPUTE, str(d), json.dumps([r["run_dir"] for r in rows]),
                           json.dumps(val)], env=helpers.checkout_env(site), cwd=learn["project"], capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads(proc.stdout.strip().splitlines()[-1])
    measure = json.loads((d / "measure.json").read_text())
    for r in rows:
        run_dir = d / r["run_dir"]
        got = again[r["run_dir"]]
        res = results(run_dir)
        assert int(r["epochs"]) == len(res) and [int(float(x["epoch"])) for x in res] == list(range(1, len(res) + 1))
        assert int(r["best_epoch"]) == best_epoch(run_dir) < int(r["epochs"])  # the peak, before the last epoch
        assert float(r["map50"]) > 0.5 and float(r["map50_95"]) > 0.05  # numbers that moved
        assert int(r["params"]) == got["params"] == measure["models"][r["variant"]]["params"]
        assert float(r["gflops"]) == pytest.approx(got["gflops"], abs=1e-4)
        for key in ("map50", "map50_95", "precision", "recall"):
            assert float(r[key]) == pytest.approx(got[key], abs=1e-9), key
        assert float(r["latency_ms"]) == measure["models"][r["variant"]]["latency_ms"] > 0
        assert float(r["train_s"]) == json.loads((run_dir / "ablate.json").read_text())["train_s"] > 0
    stock, mhsa = rows
    assert int(mhsa["params"]) > int(stock["params"]) and float(mhsa["gflops"]) > float(stock["gflops"])
    assert len({stock["map50_95"], mhsa["map50_95"]}) == 2
    # every variant's YAML, stock included, is kept for readers to rebuild it
    assert sorted(p.name for p in (d / "models").iterdir()) == ["yolov8n-MHSA.yaml", "yolov8n-stock.yaml"]


def test_a_run_that_stops_early_is_finished_and_never_trained_again(learn, site):
    d, project = learn["dir"], learn["project"]
    recipe = yaml.safe_load((d / "recipe.yaml").read_text())
    assert recipe["train"]["patience"] == 2 and recipe["extra"]["patience"] == 2
    for row in read_csv(d / "ablation.csv"):
        done = json.loads((d / row["run_dir"] / "ablate.json").read_text())
        assert done["stopped_early"] is True and done["stop_epoch"] == int(row["epochs"]) == len(results(d / row["run_dir"]))
        assert done["stop_epoch"] - done["best_epoch"] == 2 and done["stop_epoch"] < 8  # patience epochs after the best
        assert done["batch"] == learnable.BATCH and done["patience"] == 2
        assert f"{row['variant']}-s0: done" in learn["proc"].stdout
    assert learn["proc"].stdout.count(", stopped early after epoch ") == 2
    kept = [p for p in d.rglob("*") if p.is_file() and p.suffix in (".csv", ".json", ".pt")]
    before = {p: p.read_bytes() for p in kept}
    again = trainkit.ok(ablate(site, project, "l", *LEARN, cwd=project))
    assert "0 runs trained, 2 already finished" in again.stdout and ": started" not in again.stdout
    assert {p: p.read_bytes() for p in kept} == before  # results.csv, weights, ablate.json, ablation.csv as they were


def test_each_runs_args_yaml_matches_the_recipe(learn):
    d = learn["dir"]
    recipe = yaml.safe_load((d / "recipe.yaml").read_text())
    for key in ("data", "epochs", "imgsz", "batch", "weights", "ultralytics", "torch", "device", "device_name",
                "train", "extra"):  # fmt: skip
        assert key in recipe, key
    assert recipe["weights"] is None and recipe["extra"]["workers"] == 0 and recipe["extra"]["lr0"] == 0.01
    assert recipe["train"]["deterministic"] is True and recipe["device"] == "cpu"
    args = {p.parent.name: yaml.safe_load(p.read_text()) for p in sorted((d / "runs").glob("*/args.yaml"))}
    assert sorted(args) == ["MHSA-s0", "stock-s0"]
    for name, a in args.items():
        for k, v in recipe["train"].items():
            assert a[k] == v, (name, k)
        assert a["seed"] == 0 and a["name"] == name and Path(a["save_dir"]) == d / "runs" / name
    varying = {"model", "seed", "name", "save_dir"}
    first = {k: v for k, v in args["stock-s0"].items() if k not in varying}
    for a in args.values():
        assert {k: v for k, v in a.items() if k not in varying} == first
    assert args["MHSA-s0"]["model"].endswith("models/yolov8n-MHSA.yaml")


def test_progress_is_plain_and_each_log_holds_one_line_per_epoch(learn):
    text = learn["proc"].stdout
    assert "\x1b[" not in text and "\r" not in text
    assert "no GPU visible: the runs train on the CPU, one at a time" in text  # --device left to its default
    assert "MHSA-s0: epoch 7/8  mAP50-95 " in text
    # the longest variant first (MHSA has more GFLOPs): a grid stopped early still has something to compare
    assert text.index("MHSA-s0: started (1/2)") < text.index("stock-s0: started (2/2)")
    d = learn["dir"]
    for name in ("stock-s0", "MHSA-s0"):
        log = (d / "logs" / f"{name}.log").read_text()
        lines = log.splitlines()
        assert "\r" not in log and "\x1b" not in log and len(log) < 30_000
        epochs = [k for k, ln in enumerate(lines) if ln.startswith("epoch ")]
        assert [lines[k].split()[1] for k in epochs] == [f"{n}/8" for n in range(1, 8)]
        assert epochs == list(range(epochs[0], epochs[0] + 7))  # nothing between two epochs: no progress frames
        assert "mAP50-95 " in lines[epochs[-1]] and "box_loss " in lines[epochs[-1]]
        assert not (d / "logs" / f"{name}.raw.log").exists()  # the raw output is kept with --verbose only


def test_status_of_a_finished_grid_and_runs_jsonl(learn):
    d, project = learn["dir"], learn["project"]
    before = stamps(d)
    r = trainkit.ok(status(project, "l"))
    assert stamps(d) == before  # status never writes, not even its lock
    lines = {ln.split()[0]: ln.split() for ln in r.stdout.splitlines() if ln.split() and ln.split()[0] in ("stock-s0", "MHSA-s0")}
    assert lines["stock-s0"][1:4] == ["stopped", "early", "7/8"] and lines["MHSA-s0"][1:4] == ["stopped", "early", "7/8"]
    assert "2 runs: 2 stopped early" in r.stdout and "no ablate running" in r.stdout
    rows = [json.loads(ln) for ln in (d / "runs.jsonl").read_text().splitlines()]
    assert [(x["run"], x["state"], x["epoch"], x["epochs"]) for x in rows] == [("stock-s0", "stopped early", 7, 8),
                                                                              ("MHSA-s0", "stopped early", 7, 8)]  # fmt: skip
    assert all(x["seconds_per_epoch"] > 0 and x["eta_s"] == 0 for x in rows)


YOLO_TRAIN = "import sys\nfrom ultralytics.cfg import entrypoint\nsys.argv = ['yolo', *sys.argv[1:]]\nentrypoint()\n"


def test_a_dataset_is_accepted_exactly_when_yolo_train_accepts_it(learn, site, tmp_path):
    """Both YAMLs have a relative ``path:``. ``cfg/square.yaml`` names ``sets/square``, which is there from the working
    folder: ``yolo train`` trains on it, and so did ``learn``. ``sets/b.yaml`` names ``square``, which is there from
    the YAML's own folder but not from the working folder nor ultralytics' datasets folder: ``yolo train`` refuses it,
    and so does ``ablate``, in one line with ultralytics' reason, before anything is written."""
    project = learn["project"]
    (project / "sets" / "b.yaml").write_text("path: square\ntrain: images/train\nval: images/val\nnames:\n  0: square\n")
    common = ["model=yolov8n.yaml", "epochs=1", "imgsz=64", "batch=4", "workers=0", "plots=False", "val=False",
              "fraction=0.25", "device=cpu", f"project={tmp_path}"]  # fmt: skip
    yes = trainkit.run_python(YOLO_TRAIN, site, "train", "data=cfg/square.yaml", "name=a", *common, cwd=project)
    assert yes.returncode == 0, yes.stderr[-3000:]
    no = trainkit.run_python(YOLO_TRAIN, site, "train", "data=sets/b.yaml", "name=b", *common, cwd=project)
    assert no.returncode != 0 and "images not found" in no.stdout + no.stderr
    r = ablate(site, project, "b", "--data", "sets/b.yaml", "--epochs", "1", "--imgsz", "64", cwd=project)
    line = helpers.assert_refused(r, "b.yaml: ultralytics 8.4.190 refuses this dataset: ", "images not found",
                                  "the runs never download")  # fmt: skip
    # where ultralytics looked last (its datasets folder), never the YAML's own folder, where the images are
    assert "square/images/val'" in line and f"'{project / 'sets' / 'square'}" not in line
    assert not (project / "b").exists()


# ------------------------------------------------------------------------------------------------ several devices


@pytest.fixture(scope="module")
def par(site, tmp_path_factory):
    """stock seeds 0 and 1, two CPU slots (what ``--device 0,1`` gives as slots "0" and "1"), --verbose."""
    from mhsa_patch.ablate import runner
    from mhsa_patch.patching.target import find_target

    project = tmp_path_factory.mktemp("par")
    e = runner.prepare(find_target(site), data="synthetic:4", variants=["stock"], seeds="2", epochs=2, imgsz=64,
                       batch=2, device="cpu", project=str(project), name="par", extra=["workers=0", "plots=False"],
                       verbose=True)  # fmt: skip
    e.slots = ["cpu", "cpu"]
    caches = sorted(e.dataset.yaml.parent.glob("labels/*.cache"))
    built = {c: c.stat().st_mtime_ns for c in caches}  # before any run started
    seen = []
    out = runner.run(e, on_event=lambda kind, run, data: seen.append((kind, run.name)))
    return {"dir": e.dir, "out": out, "seen": seen, "caches": built}


def test_runs_on_several_devices_at_once(par):
    assert len(par["out"].finished) == 2 and not par["out"].failed
    kinds = [k for k, _ in par["seen"] if k != "event"]
    assert kinds == ["start", "start", "done", "done"]  # both runs going at once before the first one finished
    # the label caches were built once, before the runs started side by side, and no run wrote them again
    assert [c.name for c in par["caches"]] == ["train.cache", "val.cache"]
    assert {c: c.stat().st_mtime_ns for c in par["caches"]} == par["caches"]
    d = par["dir"]
    recipe = yaml.safe_load((d / "recipe.yaml").read_text())
    assert recipe["train"]["patience"] == 2 == recipe["epochs"]  # by default no run stops early
    assert losses(d / "runs/stock-s0") != losses(d / "runs/stock-s1")  # another seed, other losses
    for name in ("stock-s0", "stock-s1"):  # --verbose keeps ultralytics' progress bars, raw, beside the plain log
        raw, plain = (d / "logs" / f"{name}.raw.log").read_text(), (d / "logs" / f"{name}.log").read_text()
        assert "━" in raw and "\r" not in plain and "epoch 2/2 " in plain


def test_ray_local_on_a_shared_folder_gives_the_local_backends_table_and_losses(par, site, tmp_path):
    """stock seed 0 as a Ray task on a local Ray started by the command (``--ray local``), inside a network namespace
    of its own (only 127.0.0.1 exists there), with its own HOME and temporary folder, shut down when the command ends.
    The task's node sees the experiment folder (the driver's own machine), so the run writes there in place, as on a
    shared filesystem (the two-node tests below send the epochs back instead). Its row equals the local backend's in
    every column but the timings, and its losses are the local run's: same seed, same losses, across two experiments
    and two backends."""
    import shlex

    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.fail("the Ray test needs unshare and ip (util-linux, iproute2) for a private network namespace")
    cmd = [sys.executable, "-m", "mhsa_patch", "ablate", "--target", str(site), "--project", str(tmp_path), "--name",
           "ray", *TINY, "--variant", "stock", "--seeds", "1", "--ray", "local", *EXTRA]  # fmt: skip
    (tmp_path / "home").mkdir()
    # Ray's session folder of its own, on a short path (its socket paths must fit 107 bytes), removed at the end
    ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    env = dict(trainkit.env(site), RAY_USAGE_STATS_ENABLED="0", HOME=str(tmp_path / "home"), RAY_TMPDIR=ray_tmp)
    try:
        r = subprocess.run(["unshare", "-rn", "sh", "-c", "ip link set lo up && exec " + shlex.join(cmd)], env=env,
                           capture_output=True, text=True, timeout=900, cwd=trainkit.ROOT)  # fmt: skip
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    trainkit.ok(r)
    local = read_csv(par["dir"] / "ablation.csv")[:1]
    ray_rows = read_csv(tmp_path / "ray" / "ablation.csv")
    assert [{k: x[k] for k in DETERMINISTIC} for x in ray_rows] == [{k: x[k] for k in DETERMINISTIC} for x in local]
    run_dir = tmp_path / "ray" / "runs" / "stock-s0"
    assert losses(run_dir) == losses(par["dir"] / "runs" / "stock-s0")
    assert yaml.safe_load((run_dir / "args.yaml").read_text())["save_dir"] == str(run_dir)  # trained in place
    assert (run_dir / "weights" / "best.pt").is_file() and not (run_dir / "weights" / ".resume").exists()
    assert "stock-s0: started (1/1)" in r.stdout and "stock-s0: epoch 2/2  " in r.stdout
    assert not list((tmp_path / "ray" / "runs").glob(".*"))  # nothing left of any unpacking
    (row,) = [json.loads(ln) for ln in (tmp_path / "ray" / "runs.jsonl").read_text().splitlines()]
    assert row["device"] == "node 127.0.0.1"  # "started" once the task began on a node, not when it was submitted
    _no_ray_lines(r)


# -------------------------------------------------------------------------------- interruptions, failures, resume


def _committed(state: Path) -> int:
    try:
        return int(json.loads(state.read_text())["epochs_done"])
    except (OSError, ValueError, KeyError):
        return 0


def _as_in_a_terminal() -> None:
    """Ctrl-C reaches the command as it does in a terminal, even when the suite itself runs where SIGINT is ignored
    (``pytest ... &`` from a script: a background job inherits SIGINT ignored, and so would the tool)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(args: list[str], site: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mhsa_patch", *args], env=trainkit.env(site), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=_as_in_a_terminal)  # fmt: skip


def _wait_for_epoch(proc: subprocess.Popen, state: Path, wanted: int) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None and _committed(state) < wanted:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be interrupted"


@pytest.fixture(scope="module")
def interrupted(site, tmp_path_factory):
    """stock seeds 0 and 1, 4 epochs on the learnable set: Ctrl-C during stock-s0's epoch 2; the same command again,
    ``--status`` while it trains, and stock-s0's child killed with SIGKILL (as the OOM killer would) during its
    next epoch, while stock-s1 then trains and finishes. Keeps a copy of stock-s0's folder as the kill left it."""
    project = tmp_path_factory.mktemp("interrupted")
    data = learnable.write_dataset(project / "square")
    args = ["ablate", "--target", str(site), "--project", str(project), "--name", "k", "--data", str(data), "--epochs",
            "4", "--imgsz", "64", "--batch", str(learnable.BATCH), "--variant", "stock", "--seeds", "2", "--device",
            "cpu", "--", *learnable.ARGS]  # fmt: skip
    d = project / "k"
    run_dir = d / "runs" / "stock-s0"
    state = run_dir / "weights" / ".resume" / "state.json"
    out: dict = {"args": args, "dir": d, "project": project}

    proc = _start(args, site)
    try:
        _wait_for_epoch(proc, state, 1)
        time.sleep(0.3)  # somewhere in epoch 2
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: the driver and its child
        stdout, stderr = proc.communicate(timeout=120)
        out["ctrl_c"] = (proc.returncode, stdout, stderr)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out["first_row"] = results(run_dir)[0]

    proc = _start(args, site)
    try:
        _wait_for_epoch(proc, state, _committed(state) + 1)  # an epoch of this session's own
        out["status_running"] = status(project, "k")
        out["driver_pid"] = proc.pid
        child = json.loads((d / "locks" / "stock-s0.lock").read_text())["pid"]
        os.kill(child, signal.SIGKILL)  # the child alone: the driver goes on with stock-s1
        stdout, stderr = proc.communicate(timeout=900)
        out["killed"] = (proc.returncode, stdout, stderr)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out["status_failed"] = status(project, "k")
    out["state"] = json.loads(state.read_text())
    out["rows"] = results(run_dir)[: out["state"]["epochs_done"]]
    out["stash"] = tmp_path_factory.mktemp("stash") / "stock-s0"
    shutil.copytree(run_dir, out["stash"], symlinks=True)
    return out


def test_ctrl_c_stops_the_grid_and_says_how_to_resume(interrupted):
    code, _, err = interrupted["ctrl_c"]
    assert code == 130, err
    assert err.strip().splitlines()[-1] == "ERROR ❌ interrupted: finished epochs are saved; run the same command again to resume"


def test_a_run_killed_by_sigkill_fails_alone_and_the_others_finish(interrupted):
    code, stdout, stderr = interrupted["killed"]
    d = interrupted["dir"]
    assert code == 1, stdout + stderr
    errors = [ln for ln in stderr.splitlines() if ln.startswith("ERROR")]
    assert errors == [f"ERROR ❌ stock-s0 failed: the child process (mhsa_patch.child.train) was killed by SIGKILL (as the "
                      f"kernel's out-of-memory killer does) (log: {d / 'logs' / 'stock-s0.log'})"]  # fmt: skip
    assert "stock-s1: done (1/2)" in stdout and "1 runs trained, 0 already finished, 1 failed" in stdout
    assert [(r["variant"], r["seed"]) for r in read_csv(d / "ablation.csv")] == [("stock", "1")]  # the report of those done
    assert not (d / "runs" / "stock-s0" / "ablate.json").exists()
    st = interrupted["status_failed"]
    trainkit.ok(st)
    s0 = next(ln for ln in st.stdout.splitlines() if ln.startswith("stock-s0"))
    assert " failed " in s0 and "killed by SIGKILL" in s0 and "stock-s0.log" in s0
    assert "1 done, 1 failed" in st.stdout


def test_status_while_the_grid_trains_takes_no_lock(interrupted):
    st = interrupted["status_running"]
    trainkit.ok(st)
    s0 = next(ln for ln in st.stdout.splitlines() if ln.startswith("stock-s0")).split()
    assert s0[1:3] == ["running", "cpu"] and int(s0[3].split("/")[0]) >= 2 and s0[3].endswith("/4")
    assert f"ablate running on host {locks.host()} (PID {interrupted['driver_pid']})" in st.stdout
    assert "stock-s1: done" in interrupted["killed"][1]  # the grid went on after --status read it


def test_the_same_command_resumes_the_failed_run_from_its_snapshot_and_a_second_driver_refuses(interrupted, site):
    """Two drivers started at once on the folder: one trains, the other refuses naming it; stock-s0 resumes after the
    epoch its snapshot holds, keeps its rows, and its table row is there once."""
    d, args = interrupted["dir"], interrupted["args"]
    run_dir = d / "runs" / "stock-s0"
    n = interrupted["state"]["epochs_done"]
    assert n >= 2 and interrupted["rows"][0] == interrupted["first_row"]
    procs = [_start(args, site) for _ in range(2)]
    outs = [(p.pid, *p.communicate(timeout=900), p.returncode) for p in procs]
    (wpid, wout, werr, _), = [o for o in outs if o[3] == 0]
    (_, _, lerr, lcode), = [o for o in outs if o[3] != 0]
    helpers.assert_refused(subprocess.CompletedProcess([], lcode, "", lerr),
                           f"{d} is in use by host {locks.host()} (PID {wpid}, since ", "--status")  # fmt: skip
    assert f"stock-s0: resuming after epoch {n} of 4" in wout
    res = results(run_dir)
    assert [int(float(x["epoch"])) for x in res] == [1, 2, 3, 4]  # each epoch once, the full count
    assert res[:n] == interrupted["rows"]  # the epochs of the snapshot are kept, not re-run
    rows = read_csv(d / "ablation.csv")
    assert sorted((r["variant"], r["seed"]) for r in rows) == [("stock", "0"), ("stock", "1")]  # each run once
    row = next(r for r in rows if r["seed"] == "0")
    assert row["epochs"] == "4" and int(row["best_epoch"]) == best_epoch(run_dir)
    assert json.loads((run_dir / "ablate.json").read_text())["best_epoch"] == best_epoch(run_dir)
    assert float(row["train_s"]) > 0 and not (run_dir / "weights" / ".resume").exists()


# ------------------------------------------------------------------------------------------- nothing is ever lost


class Events:
    def __init__(self):
        self.seen = []

    def emit(self, **event):
        self.seen.append(event)


def _damaged(interrupted, tmp_path, damage) -> tuple[Path, dict[str, bytes], list[str]]:
    """stock-s0 as the SIGKILL left it, damaged by ``damage(run_dir)``, then read by the child's own first step:
    (the run folder, what the damaged folder held, the warnings)."""
    from mhsa_patch.child.train import _prepare_folder

    run_dir = tmp_path / "k" / "runs" / "stock-s0"
    shutil.copytree(interrupted["stash"], run_dir, symlinks=True)
    damage(run_dir)
    held = tree(run_dir)
    events = Events()
    _prepare_folder(events, run_dir, "stock-s0")
    return run_dir, held, [e["warning"] for e in events.seen if "warning" in e]


def _resumed_at(run_dir: Path, interrupted, n: int) -> None:
    state = json.loads((run_dir / "weights" / ".resume" / "state.json").read_text())
    assert state["epochs_done"] == n and state["salvaged_from"] == "stock-s0.damaged-1"
    assert results(run_dir) == interrupted["rows"][:n]
    assert (run_dir / "weights" / "last.pt").read_bytes() == (run_dir / "weights" / ".resume" / state["last"]).read_bytes()


def test_a_cut_state_json_moves_the_run_aside_and_resumes_from_its_snapshot(interrupted, tmp_path):
    def cut(run_dir):
        p = run_dir / "weights" / ".resume" / "state.json"
        p.write_bytes(p.read_bytes()[:40])

    run_dir, held, warnings = _damaged(interrupted, tmp_path, cut)
    n = interrupted["state"]["epochs_done"]
    assert warnings == ["stock-s0: weights/.resume/state.json is not readable JSON (40 bytes: cut short?); the run folder "
                        f"was moved whole to runs/stock-s0.damaged-1; resuming from its snapshot of epoch {n}"]  # fmt: skip
    assert tree(run_dir.with_name("stock-s0.damaged-1")) == held  # every file kept, as it was
    _resumed_at(run_dir, interrupted, n)


def test_a_missing_snapshot_resumes_from_the_newest_intact_one(interrupted, tmp_path):
    state = interrupted["state"]
    n, best = state["epochs_done"], state["best_epoch"]
    run_dir, held, warnings = _damaged(interrupted, tmp_path,
                                       lambda d: (d / "weights" / ".resume" / state["last"]).unlink())  # fmt: skip
    # best-eB.pt is epoch B's last.pt as well: the newest intact snapshot (epoch n itself when n was the best)
    assert warnings == [f"stock-s0: weights/.resume/{state['last']}, which state.json names, is missing; the run folder "
                        f"was moved whole to runs/stock-s0.damaged-1; resuming from its snapshot of epoch {best}"]  # fmt: skip
    assert tree(run_dir.with_name("stock-s0.damaged-1")) == held
    _resumed_at(run_dir, interrupted, best)
    assert best <= n


def test_a_half_unpacked_run_folder_is_kept_whole(interrupted, tmp_path):
    """What an interrupted extraction leaves (a Ray archive, an rsync): the first members of the run's archive, the
    last one cut short. Nothing of it is deleted: moved aside whole, and the run starts over or resumes from what is
    intact in it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(interrupted["stash"], arcname="stock-s0")
    members = tarfile.open(fileobj=io.BytesIO(buf.getvalue())).getmembers()
    files = [m for m in members if m.isfile()]
    cut_at = files[len(files) // 2]

    def half(run_dir):
        shutil.rmtree(run_dir)
        with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tar:
            for m in members:
                if m is cut_at:
                    data = tar.extractfile(m).read()
                    target = run_dir.parent / m.name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data[: len(data) // 2])
                    break
                tar.extract(m, run_dir.parent, filter="data")

    run_dir, held, warnings = _damaged(interrupted, tmp_path, half)
    assert held and len(warnings) == 1 and "the run folder was moved whole to runs/stock-s0.damaged-1" in warnings[0]
    assert tree(run_dir.with_name("stock-s0.damaged-1")) == held  # every byte that arrived is kept
    rows = len(interrupted["rows"])
    if "starting over" in warnings[0]:
        assert tree(run_dir) == {".mhsa-ablate": (run_dir / ".mhsa-ablate").read_bytes()}
    else:
        n = int(warnings[0].rsplit(" ", 1)[-1])
        assert 1 <= n <= rows
        _resumed_at(run_dir, interrupted, n)


# ------------------------------------------------------------------------------------------------------ the batch


def _oom_env(site: Path) -> dict[str, str]:
    env = helpers.checkout_env(site, offline=False)
    return dict(env, PYTHONPATH=os.pathsep.join([env["PYTHONPATH"], str(OOM)]), MHSA_TEST_OOM="1")


def test_a_batch_that_ultralytics_halves_fails_the_run_and_fail_fast_stops_the_grid(site, tmp_path):
    """ultralytics 8.4 halves the batch after an out-of-memory error in the first epoch (its own path, reached through
    a CUDA out-of-memory error raised in the model's first forward pass: tests/oom/sitecustomize.py). The run fails at
    once with the message that says what to do, and with --fail-fast no other run starts (without it the others go on:
    see the SIGKILL test)."""
    args = ["ablate", "--target", str(site), "--project", str(tmp_path), "--name", "o", "--data", "synthetic:4",
            "--epochs", "2", "--imgsz", "64", "--batch", "4", "--variant", "stock", "--seeds", "2", "--device", "cpu",
            *EXTRA]  # fmt: skip
    log = tmp_path / "o" / "logs" / "stock-s0.log"
    r = helpers.run_tool(*args[:-len(EXTRA)], "--fail-fast", *EXTRA, env=_oom_env(site), timeout=900)
    helpers.assert_refused(r, "ERROR ❌ stock-s0 did not fit batch 4 on cpu; give every variant a smaller --batch "
                              f"(log: {log})")  # fmt: skip
    assert "1 not started (--fail-fast)" in r.stdout and "stock-s1: started" not in r.stdout
    assert "out of memory with batch=4. Reducing to batch=2" in log.read_text()  # ultralytics' own recovery ran
    rows = {x["run"]: x for x in map(json.loads, (tmp_path / "o" / "runs.jsonl").read_text().splitlines())}
    assert rows["stock-s0"]["state"] == "failed" and rows["stock-s0"]["reason"].startswith("stock-s0 did not fit batch 4")
    assert rows["stock-s1"]["state"] == "pending"
    assert not list((tmp_path / "o" / "runs").glob("*/ablate.json"))


# ----------------------------------------------------------------------------------------------------- pretrained


def test_pretrained_start_ports_the_checkpoint_into_every_variant(site, tmp_path):
    stock_pt = trainkit.patched()["stock"]
    r = ablate(site, tmp_path, "w", *TINY, "--variant", "stock:s", "--weights", str(stock_pt))
    helpers.assert_refused(r, "--variant stock:s is scale s: it cannot start from yolov8n.pt (scale n)")
    r = trainkit.ok(ablate(site, tmp_path, "w", "--data", "synthetic:4", "--epochs", "1", "--imgsz", "64",
                           "--batch", "2", "--variant", "MHSA", "--seeds", "1", "--weights", str(stock_pt), *EXTRA))  # fmt: skip
    d = tmp_path / "w"
    assert yaml.safe_load((d / "recipe.yaml").read_text())["weights"] == str(stock_pt.resolve())
    for name, stem in (("stock-s0", "yolov8n-stock"), ("MHSA-s0", "yolov8n-MHSA")):
        assert yaml.safe_load((d / "runs" / name / "args.yaml").read_text())["model"] == str(d / "models" / f"{stem}.pt")
        log = (d / "logs" / f"{name}.log").read_text()
        assert "Transferred" in log and "from pretrained weights" in log, log[-2000:]


# ------------------------------------------------------------------------------------------------------ refusals


def test_another_recipe_in_the_same_folder_is_refused_naming_the_key(learn, site):
    project = learn["project"]
    args = list(LEARN)
    args[args.index("--epochs") + 1] = "9"
    r = ablate(site, project, "l", *args, cwd=project)
    helpers.assert_refused(r, "holds an experiment with another recipe: epochs is 8 there, 9 here", "--name")
    # a -- argument's difference is named as extra.KEY (test_ablate_options.test_the_first_differing_key_is_named)


def test_a_dataset_name_without_download_is_refused_before_any_run(site, tmp_path):
    """(images that are not there: test_a_dataset_is_accepted_exactly_when_yolo_train_accepts_it)"""
    r = ablate(site, tmp_path, "m", "--data", "coco8.yaml", "--epochs", "1")
    helpers.assert_refused(r, "coco8.yaml: no such dataset YAML (or pass --download")


def test_a_user_yaml_with_a_lint_error_is_refused_before_anything_trains(site, tmp_path):
    good = trainkit.patched()["yaml"].read_text()
    bad = tmp_path / "yolov8n-mine.yaml"
    bad.write_text(good.replace("- [-1, 1, SPPF, [1024, 5]]", "- [-12, 1, SPPF, [1024, 5]]"))
    r = ablate(site, tmp_path, "y", *TINY, "--variant", f"yaml:{bad}")
    helpers.assert_refused(r, f"--variant yaml:{bad}: yolov8n-mine.yaml does not build:", "points before layer 0")
    assert not (tmp_path / "y").exists()


def test_an_unpatched_target_and_unknown_variants_are_refused(tmp_path):
    stock = trainkit.unpatched()
    r = ablate(stock, tmp_path, "u", *TINY)
    helpers.assert_refused(r, "is not patched (status: not-applied)")
    site = trainkit.patched()["site"]
    # bad option values are usage errors (exit 2), as in every command
    helpers.assert_refused(ablate(site, tmp_path, "u", *TINY, "--variant", "MHSA2"),
                           "usage: --variant MHSA2: unknown variant", code=2)  # fmt: skip
    helpers.assert_refused(ablate(site, tmp_path, "u", *TINY, "--", "epochs=3"), "usage: -- epochs=3: epochs is not a "
                           "free training argument here: use --epochs", code=2)  # fmt: skip
    helpers.assert_refused(ablate(site, tmp_path, "u", *TINY, "--seeds", "0,0"), "usage: --seeds 0,0: each seed once",
                           code=2)  # fmt: skip
    assert not (tmp_path / "u").exists()


def test_ray_without_ray_installed_says_so_in_one_line(tmp_path):
    site = trainkit.patched()["site"]
    code = ("import sys; sys.modules['ray'] = None; sys.argv = ['mhsa-patch'] + sys.argv[1:]; "
            "from mhsa_patch.cli import main; main()")  # fmt: skip
    r = subprocess.run([sys.executable, "-c", code, "ablate", "--target", str(site), "--project", str(tmp_path),
                        "--name", "r", *TINY, "--variant", "stock", "--seeds", "1", "--ray", *EXTRA],
                       env=trainkit.env(site), capture_output=True, text=True, cwd=trainkit.ROOT, timeout=600)  # fmt: skip
    helpers.assert_refused(r, "--ray needs Ray: pip install 'mhsa-patch[ray]'")


# ---------------------------------------------------------------------------------------- SIGKILL at random points

ZYGOTE = r"""
import json, os, sys
answer = os.fdopen(os.dup(1), "w")  # the pids and exit statuses; everything else printed here goes nowhere
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
import mhsa_patch.child.offline as offline
offline.install()
import torch  # the expensive imports once; each trial's child is forked from here, already warm
from ultralytics import YOLO
import ultralytics.models.yolo.detect.train
torch.optim.SGD([torch.zeros(1, requires_grad=True)])  # a process's first optimizer imports torch's compiler (~2 s)
from mhsa_patch.child import train

for line in sys.stdin:
    argv, log = json.loads(line)
    pid = os.fork()
    if pid == 0:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        rc = 1
        try:
            rc = train.main(argv)
        finally:
            os._exit(rc)
    print(pid, file=answer, flush=True)
    _, status = os.waitpid(pid, 0)
    print(status, file=answer, flush=True)
"""


def _epoch_event(events: Path) -> bool:
    """Whether a child reported an epoch in its events file."""
    try:
        return '"epoch"' in events.read_text()
    except OSError:
        return False


def _snapshot_rows(run_dir: Path) -> dict[int, str]:
    """The rows of the epochs committed now (state.json's epochs_done), by epoch; {} when nothing is committed."""
    try:
        n = json.loads((run_dir / "weights" / ".resume" / "state.json").read_text())["epochs_done"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    lines = (run_dir / "results.csv").read_text().splitlines()[1:]
    return {k + 1: lines[k] for k in range(min(n, len(lines)))}


def _kept(runs: Path, name: str, epoch: int, row: str) -> bool:
    """Whether epoch ``epoch``'s row is in the run's folder or one the tool moved aside."""
    for folder in [runs / name, *sorted(runs.glob(f"{name}.damaged-*"))]:
        try:
            lines = (folder / "results.csv").read_text().splitlines()[1:]
        except OSError:
            continue
        if len(lines) >= epoch and lines[epoch - 1] == row:
            return True
    return False


def _kill_the_command(cli: list[str], site: Path, exp: Path, name: str, rng) -> int:
    """Start the whole command, wait until it holds the experiment and its run's child trains, SIGKILL both at a
    random point; the driver's PID."""
    before = locks.holder(exp / "locks" / f"{name}.lock")
    proc = _start(cli, site)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            driver = locks.holder(exp / "ablate.lock")
            child = locks.holder(exp / "locks" / f"{name}.lock")
            if driver and driver["pid"] == proc.pid and child and child["alive"] and child["pid"] != (before or {}).get("pid"):
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()
        time.sleep(rng.uniform(0.0, 2.0))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.pid


@pytest.mark.slow
def test_sigkill_at_random_points_never_loses_a_finished_epoch(site, tmp_path):
    """20 trials, seeded. The first and the last kill the whole command (driver and child) once its child trains;
    the 18 between kill the run's child alone (the real child code, forked from a warm process so that the trials do
    not pay 18 interpreter start-ups) at a random point of its life: setting up (reading the folder, restoring
    checkpoints), training, committing a snapshot, resuming, validating; two of them after damaging the run's files
    as a crash on a full disk would (a cut state.json, a missing snapshot). After every kill, each epoch ever
    committed is still there, in the run's folder or one moved aside. Then the same command finishes the run: each
    epoch once, and the killed driver's lock taken over with a warning."""
    import random

    epochs = 6
    cli = ["ablate", "--target", str(site), "--project", str(tmp_path), "--name", "kill", "--data", "synthetic:4",
           "--epochs", str(epochs), "--imgsz", "64", "--batch", "2", "--variant", "stock", "--seeds", "1", "--device",
           "cpu", *EXTRA]  # fmt: skip
    d = tmp_path / "kill"
    runs, name = d / "runs", "stock-s0"
    run_dir = runs / name
    rng = random.Random(19)
    seen: set[tuple[int, str]] = set()
    warnings = []

    def check() -> None:
        seen.update(_snapshot_rows(run_dir).items())
        lost = [k for k, row in sorted(seen) if not _kept(runs, name, k, row)]
        assert not lost, f"epochs {lost} were committed and are gone"

    _kill_the_command(cli, site, d, name, rng)  # trial 1: it also prepares the experiment
    check()
    model = json.loads((d / "logs" / f"{name}.args.json").read_text())["train"]["model"]
    zygote = subprocess.Popen([sys.executable, "-c", ZYGOTE], env=helpers.checkout_env(site), text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    try:
        for trial in range(2, 20):
            snap = run_dir / "weights" / ".resume"
            if trial in (7, 13) and (snap / "state.json").is_file():  # damage what the last kill left
                if trial == 7:
                    (snap / "state.json").write_bytes((snap / "state.json").read_bytes()[:30])
                else:
                    (snap / json.loads((snap / "state.json").read_text())["last"]).unlink(missing_ok=True)
            events = d / "logs" / f"events-{trial}.jsonl"
            argv = ["--model", model, "--run-dir", str(run_dir), "--args", str(d / "logs" / f"{name}.args.json"),
                    "--lock", str(d / "locks" / f"{name}.lock"), "--events", str(events)]  # fmt: skip
            zygote.stdin.write(json.dumps([argv, str(d / "logs" / "trials.log")]) + "\n")
            zygote.stdin.flush()
            pid = int(zygote.stdout.readline())
            if rng.random() < 0.25:  # while it sets up: reading the folder, restoring checkpoints, building
                time.sleep(rng.uniform(0.0, 0.6))
            else:  # once it has trained an epoch of its own, somewhere in the next one (its snapshot's commit included)
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline and not _epoch_event(events) and locks.pid_alive(pid):
                    time.sleep(0.02)
                time.sleep(rng.uniform(0.0, 0.6))
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # it finished first (trained and validated)
            zygote.stdout.readline()
            if events.is_file():
                warnings += [json.loads(ln)["warning"] for ln in events.read_text().splitlines() if '"warning"' in ln]
            check()
    finally:
        zygote.stdin.close()
        zygote.kill()
        zygote.wait()
    assert any("moved whole to runs/stock-s0.damaged-" in w for w in warnings), warnings
    assert any("took over the lock of" in w and "no longer running" in w for w in warnings), warnings

    driver = _kill_the_command(cli, site, d, name, rng)  # trial 20
    check()
    r = trainkit.ok(trainkit.cli(*cli, site=site))
    assert f"took over the lock of host {locks.host()} (PID {driver}" in r.stderr  # the killed driver's
    check()
    res = results(run_dir)
    assert [int(float(x["epoch"])) for x in res] == list(range(1, epochs + 1))  # each epoch once
    assert json.loads((run_dir / "ablate.json").read_text())["epochs"] == epochs


# ------------------------------------------------------------------------------------- a two-node Ray cluster
# tests/raycluster.py's two nodes, as docs/ablate.md's walk-through starts them: a head without CPUs or GPUs (the
# driver's side, where the experiment folders go: ``cluster.hidden``) and a worker node with 2 CPUs, which does not
# see that folder. Everything else (the patched site, the checkout, the learnable set) is at the same path on both.


@pytest.fixture(scope="module")
def cluster(site, tmp_path_factory):
    import raycluster

    root = raycluster.cluster_root(tmp_path_factory)
    env = helpers.checkout_env(site, offline=False, RAY_USAGE_STATS_ENABLED="0")
    c = raycluster.Cluster(root, hidden=root / "driver", env=env).start()
    try:
        c.add_worker(num_cpus=2)
        yield c
    finally:
        c.stop()


def _live_worker(cluster, **kw):
    """The cluster's live worker node, or a fresh one (with ``kw``, a fresh one of that kind, the others killed)."""
    alive = [w for w in cluster.workers if not w.killed and w.proc.poll() is None]
    if alive and not kw:
        return alive[0]
    for w in alive:
        cluster.kill(w)
    return cluster.add_worker(num_cpus=2, **kw)


def cluster_ablate(cluster, site: Path, name: str, *args: str) -> list[str]:
    """``ablate --ray 127.0.0.1:6379`` as the driver runs it on the head node, into ``cluster.hidden``."""
    import raycluster

    return [sys.executable, "-m", "mhsa_patch", "ablate", "--ray", raycluster.ADDRESS, "--target", str(site),
            "--project", str(cluster.hidden), "--name", name, *args]  # fmt: skip


def _no_ray_lines(r) -> None:
    """Nothing of Ray's own on the driver's output: no ``(raylet)`` lines after a lost node, no worker logs."""
    text = r.stdout + r.stderr
    assert "(raylet)" not in text and "pid=" not in text and "Traceback" not in text, text[-4000:]


@pytest.fixture(scope="module")
def storage(cluster) -> str:
    """``--storage ftp://...``: a real FTP server inside the cluster's namespace serving ``<cluster>/storage``, which
    every node reaches at 127.0.0.1 as it would a bucket (fsspec's ftp://, the standard library's ftplib)."""
    return cluster.serve_ftp(cluster.root / "storage", cluster.root / "ftp.log")


def _learn_on_ray(storage: str, *, seeds: str = "1") -> list[str]:
    """learn's command line (``-- workers=0`` given as ``--workers 0``), with ``--storage``, on the cluster."""
    cut = LEARN.index("--")
    args = [*LEARN[:cut], "--workers", "0", "--storage", storage,
            *[a for a in LEARN[cut:] if a != "workers=0"]]  # fmt: skip
    args[args.index("--seeds") + 1] = seeds
    return args


@pytest.fixture(scope="module")
def two(learn, site, cluster, storage):
    """learn's two runs (stock and MHSA, seed 0, the learnable set, patience 2) as Ray tasks on the worker node, from
    the same project folder (the dataset YAML's relative path resolves there on both nodes), with ``--storage
    ftp://...`` (a URI both nodes reach) for the epochs' snapshots."""
    _live_worker(cluster)
    cmd = cluster_ablate(cluster, site, "two", *_learn_on_ray(storage))
    r = trainkit.ok(cluster.run(cmd, cwd=learn["project"], timeout=900))
    return {"dir": cluster.hidden / "two", "proc": r}


def test_a_two_node_cluster_without_a_shared_run_folder_gives_the_local_backends_table(two, learn, cluster):
    """The table equals the local backend's in every column but the timings, with the same losses, metrics that
    moved and runs that stopped early; every run trained on the worker node, in its own folder, and came back with
    its log; the latency was measured in one task on the worker (the head has no CPU); each epoch was shown once the
    driver's side held it; --storage held the snapshots until each run was recorded."""
    d, r = two["dir"], two["proc"]
    local = read_csv(learn["dir"] / "ablation.csv")
    rows = read_csv(d / "ablation.csv")
    assert [{k: x[k] for k in DETERMINISTIC} for x in rows] == [{k: x[k] for k in DETERMINISTIC} for x in local]
    for x in rows:
        run_dir = d / x["run_dir"]
        assert losses(run_dir) == losses(learn["dir"] / x["run_dir"])
        assert float(x["map50_95"]) > 0.05 and int(x["best_epoch"]) < int(x["epochs"])  # numbers that moved
        assert (run_dir / "weights" / "best.pt").is_file() and not (run_dir / "weights" / ".resume").exists()
        args = yaml.safe_load((run_dir / "args.yaml").read_text())
        assert not args["save_dir"].startswith(str(cluster.hidden))  # trained in the task's folder on the worker
        assert f"epoch {x['epochs']}/8 " in (d / "logs" / f"{run_dir.name}.log").read_text()  # the log came back
        assert float(x["latency_ms"]) > 0
    recipe, local_recipe = (yaml.safe_load((p / "recipe.yaml").read_text()) for p in (d, learn["dir"]))
    assert recipe["extra"] == local_recipe["extra"]  # --workers 0 is -- workers=0: each task asked for 1 CPU
    assert sorted(recipe["patch"]) == ["nn/modules/__init__.py", "nn/modules/conv.py", "nn/tasks.py"]
    assert recipe["patch"] == local_recipe["patch"] and recipe["data_sha256"] == local_recipe["data_sha256"]
    measure = json.loads((d / "measure.json").read_text())
    assert measure["latency_node"] == "127.0.0.1" and measure["runs"] == 30  # one task on the worker node
    assert recipe["device"] == "Ray CPU" and recipe["device_name"] == measure["device_name"]
    assert f"device Ray CPU ({recipe['device_name']})" in (d / "summary.md").read_text()  # the caption names it
    # progress per epoch, each line once its snapshot is where the driver keeps it; "started" once a task began
    out = r.stdout
    assert "stock-s0: started (1/2)" in out and "MHSA-s0: epoch 2/8  " in out
    assert out.index("stock-s0: started") < out.index("stock-s0: epoch 1/8")
    grid = [json.loads(ln) for ln in (d / "runs.jsonl").read_text().splitlines()]
    assert [g["device"] for g in grid] == ["node 127.0.0.1"] * 2  # where each task really started
    (kept,) = (cluster.root / "storage").iterdir()  # the experiment's folder there: its name and a hash of its path
    assert kept.name.startswith("two-") and not list((kept / "runs").iterdir())  # each run's removed once recorded
    assert ftpserver.PASSWORD not in out + r.stderr
    # every epoch went through the URI store: uploaded under a temporary name, then renamed <epochs>.tar
    renamed = [c.split()[1].rsplit("/", 2)[-2:] for c in (cluster.root / "ftp.log").read_text().splitlines()
               if c.strip().startswith("RNTO ")]  # fmt: skip
    for x in rows:
        name = Path(x["run_dir"]).name
        assert [f for run, f in renamed if run == name] == [f"{e:06d}.tar" for e in range(1, int(x["epochs"]) + 1)]
    _no_ray_lines(r)


def test_a_worker_node_whose_ultralytics_is_not_patched_is_refused_naming_the_node(two, learn, site, cluster, storage):
    """The only worker node sees an unpatched ultralytics at the target's path: each run of a resume (seed 1 added;
    nothing to measure again) fails before it trains, in one line naming the node and what to do there."""
    bad = _live_worker(cluster, binds={site: trainkit.unpatched()})
    try:
        r = cluster.run(cluster_ablate(cluster, site, "two", *_learn_on_ray(storage, seeds="2")), cwd=learn["project"],
                        timeout=900)  # fmt: skip
    finally:
        cluster.kill(bad)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    pkg = site / "ultralytics"
    why = (f"node 127.0.0.1: ultralytics 8.4.190 at {pkg} is not patched (status: not-applied); run 'mhsa-patch "
           f"apply --target {pkg}' there")  # fmt: skip
    errors = sorted(ln for ln in r.stderr.splitlines() if ln.startswith("ERROR"))
    assert errors == [f"ERROR ❌ MHSA-s1 failed: {why}", f"ERROR ❌ stock-s1 failed: {why}"], r.stderr
    assert not (two["dir"] / "runs" / "stock-s1").exists() and not (two["dir"] / "runs" / "MHSA-s1").exists()
    _no_ray_lines(r)


def test_a_run_that_fails_on_a_worker_node_brings_its_log_back(site, cluster):
    """A training error on the worker node: the one line names the node and a log on the driver's side, which is
    there (sent back with the failed run)."""
    _live_worker(cluster)
    r = cluster.run(cluster_ablate(cluster, site, "fails", *TINY, "--variant", "stock", "--seeds", "1", *EXTRA,
                                   "optimizer=Bogus"), cwd=trainkit.ROOT, timeout=900)  # fmt: skip
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("ERROR")]
    log = cluster.hidden / "fails" / "logs" / "stock-s0.log"
    assert len(errors) == 1 and errors[0].startswith("ERROR ❌ stock-s0 failed: node 127.0.0.1: ultralytics' "
                                                     "trainer failed:"), r.stderr  # fmt: skip
    assert errors[0].endswith(f"(log: {log})") and "Bogus" in log.read_text()
    _no_ray_lines(r)


def test_a_lost_worker_node_costs_one_epoch_at_most_and_a_fresh_node_finishes_the_run(site, cluster):
    """docs/ablate.md's walk-through, as written: the worker node's processes are killed once the driver holds two
    epochs of a 5-epoch run (no --storage: the snapshots come back to the driver's folder); Ray retries the task on a
    fresh worker node, which resumes from the driver's snapshot: epochs 1-5 once each in results.csv, the rows the
    driver held before the loss unchanged."""
    worker = _live_worker(cluster)
    d = cluster.hidden / "lost"
    run_dir = d / "runs" / "stock-s0"

    def held() -> int:
        return _committed(run_dir / "weights" / ".resume" / "state.json")

    cmd = cluster_ablate(cluster, site, "lost", "--data", "synthetic:4", "--epochs", "5", "--imgsz", "64", "--batch",
                         "2", "--variant", "stock", "--seeds", "1", *EXTRA)  # fmt: skip
    proc = cluster.popen(cmd, cwd=trainkit.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while held() < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before its node could be lost"
        cluster.kill(worker)
        assert not worker.pids()  # every process of that node is gone at once, as a lost machine's
        k = held()
        before = results(run_dir)
        assert 2 <= k < 5 and len(before) >= k
        cluster.add_worker(num_cpus=2)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out[-4000:] + err[-4000:]
    assert "stock-s0: attempt 2 on 127.0.0.1" in out and f"stock-s0: resuming after epoch {k} of 5" in out
    res = results(run_dir)
    assert [int(float(x["epoch"])) for x in res] == [1, 2, 3, 4, 5]  # each epoch once
    assert res[:k] == before[:k]  # what the driver held when the node was lost is kept, not trained again
    row = read_csv(d / "ablation.csv")[0]
    assert row["epochs"] == "5" and int(row["best_epoch"]) == best_epoch(run_dir)
    _no_ray_lines(subprocess.CompletedProcess(cmd, 0, out, err))
    ray_log = (d / "logs" / "ray.log").read_text()  # what Ray said of the lost node: kept, not shown
    assert "(raylet)" in ray_log and "\x1b" not in ray_log
