"""``mhsa-patch ablate``, the runner side: real trainings on the synthetic set, tiny (imgsz 64, 4 images, 2 epochs).

One experiment (stock and MHSA, seeds 0 and 1) is shared by the tests that read it. mAP is 0 after runs this short,
so determinism is checked on the training losses, and the table against each run's own files (its results.csv,
its best.pt validated again, its parameters and FLOPs counted from the checkpoint).
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import trainkit

pytestmark = pytest.mark.training

TINY = ["--data", "synthetic:4", "--epochs", "2", "--imgsz", "64", "--batch", "2"]
EXTRA = ["--", "workers=0", "plots=False"]
DETERMINISTIC = ("variant", "seed", "params", "gflops", "map50", "map50_95", "precision", "recall", "best_epoch",
                 "epochs", "run_dir")  # fmt: skip  # every column but the timings (train_s, latency_ms)


def ablate(site: Path, project: Path, name: str, *args: str, timeout: float = 900):
    return trainkit.cli("ablate", "--target", str(site), "--project", str(project), "--name", name, *args,
                        site=site, timeout=timeout)  # fmt: skip


def read_csv(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def results(run_dir: Path) -> list[dict]:
    return [{k.strip(): v for k, v in row.items()} for row in read_csv(run_dir / "results.csv")]


LOSSES = ("train/box_loss", "train/cls_loss", "train/dfl_loss", "val/box_loss", "val/cls_loss", "val/dfl_loss")


def losses(run_dir: Path) -> list[tuple]:
    return [tuple(row[k] for k in LOSSES) for row in results(run_dir)]


@pytest.fixture(scope="module")
def site() -> Path:
    return trainkit.patched()["site"]


@pytest.fixture(scope="module")
def exp(site, tmp_path_factory):
    """stock and MHSA x seeds 0, 1: the experiment the read-only tests share."""
    project = tmp_path_factory.mktemp("ablate")
    proc = trainkit.ok(ablate(site, project, "a", *TINY, "--variant", "MHSA", "--seeds", "2", *EXTRA))
    return {"dir": project / "a", "project": project, "proc": proc}


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


def test_the_table_equals_a_recomputation_from_each_runs_own_files(exp, site):
    d = exp["dir"]
    rows = read_csv(d / "ablation.csv")
    assert [(r["variant"], r["seed"]) for r in rows] == [("stock", "0"), ("stock", "1"), ("MHSA", "0"), ("MHSA", "1")]
    recipe = yaml.safe_load((d / "recipe.yaml").read_text())
    val = dict(recipe["val"], device="cpu")
    proc = trainkit.run_python(RECOMPUTE, site, str(d), json.dumps([r["run_dir"] for r in rows]), json.dumps(val),
                               cwd=trainkit.ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads(proc.stdout.strip().splitlines()[-1])
    measure = json.loads((d / "measure.json").read_text())
    for r in rows:
        run_dir = d / r["run_dir"]
        got = again[r["run_dir"]]
        res = results(run_dir)
        maps = [float(x["metrics/mAP50-95(B)"]) for x in res]
        assert int(r["epochs"]) == len(res) == 2 and [int(float(x["epoch"])) for x in res] == [1, 2]
        # best.pt is the last epoch whose fitness (mAP50-95 on 8.4) equals the best so far, as save_model writes it
        assert int(r["best_epoch"]) == max(k + 1 for k, v in enumerate(maps) if v == max(maps))
        assert int(r["params"]) == got["params"] == measure["models"][r["variant"]]["params"]
        assert float(r["gflops"]) == pytest.approx(got["gflops"], abs=1e-4)
        for key in ("map50", "map50_95", "precision", "recall"):
            assert float(r[key]) == pytest.approx(got[key], abs=1e-9), key
        assert float(r["latency_ms"]) == measure["models"][r["variant"]]["latency_ms"] > 0
        assert float(r["train_s"]) == json.loads((run_dir / "ablate.json").read_text())["train_s"] > 0
    mhsa, stock = rows[2], rows[0]
    assert int(mhsa["params"]) > int(stock["params"]) and float(mhsa["gflops"]) > float(stock["gflops"])
    # every variant's YAML, stock included, is kept for readers to rebuild it
    assert sorted(p.name for p in (d / "models").iterdir()) == ["yolov8n-MHSA.yaml", "yolov8n-stock.yaml"]


def test_each_runs_args_yaml_matches_the_recipe(exp):
    d = exp["dir"]
    recipe = yaml.safe_load((d / "recipe.yaml").read_text())
    for key in ("data", "epochs", "imgsz", "batch", "weights", "ultralytics", "torch", "device", "device_name",
                "train", "extra"):  # fmt: skip
        assert key in recipe, key
    assert recipe["weights"] is None and recipe["extra"] == {"workers": 0, "plots": False}
    assert recipe["train"]["deterministic"] is True
    args = {p.parent.name: yaml.safe_load(p.read_text()) for p in sorted((d / "runs").glob("*/args.yaml"))}
    assert sorted(args) == ["MHSA-s0", "MHSA-s1", "stock-s0", "stock-s1"]
    for name, a in args.items():
        for k, v in recipe["train"].items():
            assert a[k] == v, (name, k)
        assert a["seed"] == int(name[-1]) and a["name"] == name and Path(a["save_dir"]) == d / "runs" / name
    varying = {"model", "seed", "name", "save_dir"}
    first = {k: v for k, v in args["stock-s0"].items() if k not in varying}
    for a in args.values():
        assert {k: v for k, v in a.items() if k not in varying} == first
    assert args["MHSA-s0"]["model"].endswith("models/yolov8n-MHSA.yaml")


def test_plain_progress_when_stdout_is_not_a_terminal(exp):
    text = exp["proc"].stdout
    assert "\x1b[" not in text and "\r" not in text
    assert "MHSA-s1: epoch 2/2  mAP50-95 0.000" in text and "stock-s0: done (1/4)" in text


def test_same_seed_same_losses_other_seed_other_losses_and_a_rerun_skips(exp, site):
    d, project = exp["dir"], exp["project"]
    before = (d / "ablation.csv").read_text()
    again = trainkit.ok(ablate(site, project, "a", *TINY, "--variant", "MHSA", "--seeds", "2", *EXTRA))
    assert "0 runs trained, 4 already finished" in again.stdout
    assert (d / "ablation.csv").read_text() == before
    # a second experiment, stock only, seeds 0 and 1 again
    trainkit.ok(ablate(site, project, "b", *TINY, "--variant", "stock", "--seeds", "0,1", *EXTRA))
    b = project / "b"
    assert losses(b / "runs/stock-s0") == losses(d / "runs/stock-s0")
    assert losses(b / "runs/stock-s1") == losses(d / "runs/stock-s1")
    assert losses(d / "runs/stock-s0") != losses(d / "runs/stock-s1")
    rows_a = {(r["variant"], r["seed"]): r for r in read_csv(d / "ablation.csv")}
    for r in read_csv(b / "ablation.csv"):
        a = rows_a[(r["variant"], r["seed"])]
        assert {k: r[k] for k in DETERMINISTIC} == {k: a[k] for k in DETERMINISTIC}


# -------------------------------------------------------------------------------------------------------- resume


def _interrupt_during_epoch(args: list[str], site: Path, state: Path, epoch: int, sig: int):
    """Start the command, wait until ``epoch - 1`` epochs are committed and this session committed one at least (an
    earlier interrupted session may have left ``epoch - 1`` already), send ``sig`` to it and its child."""

    def done() -> int:
        try:
            return int(json.loads(state.read_text())["epochs_done"])
        except (OSError, ValueError, KeyError):
            return 0

    wanted = max(epoch - 1, done() + 1)
    proc = subprocess.Popen([sys.executable, "-m", "mhsa_patch", *args], env=trainkit.env(site), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            if done() >= wanted:
                break
            time.sleep(0.02)
        time.sleep(0.3)  # somewhere in the next epoch
        assert proc.poll() is None, "the run ended before it could be interrupted"
        os.killpg(proc.pid, sig)  # the whole group: Ctrl-C in a terminal, or a crash / `kill -9` of everything
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, out, err


def test_ctrl_c_then_sigkill_mid_run_then_the_same_command_resumes(site, tmp_path):
    args = ["ablate", "--target", str(site), "--project", str(tmp_path), "--name", "k", "--data", "synthetic:4",
            "--epochs", "5", "--imgsz", "64", "--batch", "2", "--variant", "stock", "--seeds", "1", *EXTRA]  # fmt: skip
    run_dir = tmp_path / "k" / "runs" / "stock-s0"
    state = run_dir / "weights" / ".resume" / "state.json"
    code, out, err = _interrupt_during_epoch(args, site, state, 2, signal.SIGINT)
    assert code == 130, out + err
    assert err.strip().splitlines()[-1] == (
        "ERROR ❌ interrupted: finished epochs are saved; run the same command again to resume"
    )
    first = results(run_dir)[0]
    code, out, err = _interrupt_during_epoch(args, site, state, 3, signal.SIGKILL)
    assert code == -signal.SIGKILL and "stock-s0: resuming after epoch" in out
    assert not (run_dir / "ablate.json").exists()
    r = trainkit.ok(trainkit.cli(*args, site=site))
    assert "stock-s0: resuming after epoch" in r.stdout
    res = results(run_dir)
    assert [int(float(x["epoch"])) for x in res] == [1, 2, 3, 4, 5]  # each epoch once, the full count
    assert res[0] == first  # the epoch done before the interruptions is kept, not re-run
    row = read_csv(tmp_path / "k" / "ablation.csv")[0]
    assert row["epochs"] == "5" and 1 <= int(row["best_epoch"]) <= 5
    assert float(row["train_s"]) > 0 and not (run_dir / "weights" / ".resume").exists()


def test_pretrained_start_ports_the_checkpoint_into_every_variant(site, tmp_path):
    from helpers import assert_refused

    stock_pt = trainkit.patched()["stock"]
    r = ablate(site, tmp_path, "w", *TINY, "--variant", "stock:s", "--weights", str(stock_pt))
    assert_refused(r, "--variant stock:s is scale s: it cannot start from yolov8n.pt (scale n)")
    r = trainkit.ok(ablate(site, tmp_path, "w", "--data", "synthetic:4", "--epochs", "1", "--imgsz", "64",
                           "--batch", "2", "--variant", "MHSA", "--seeds", "1", "--weights", str(stock_pt), *EXTRA))  # fmt: skip
    d = tmp_path / "w"
    assert yaml.safe_load((d / "recipe.yaml").read_text())["weights"] == str(stock_pt.resolve())
    for name, stem in (("stock-s0", "yolov8n-stock"), ("MHSA-s0", "yolov8n-MHSA")):
        assert yaml.safe_load((d / "runs" / name / "args.yaml").read_text())["model"] == str(d / "models" / f"{stem}.pt")
        log = (d / "logs" / f"{name}.log").read_text()
        assert "Transferred" in log and "from pretrained weights" in log, log[-2000:]


# ------------------------------------------------------------------------------------------------------ refusals


def test_another_recipe_in_the_same_folder_is_refused_naming_the_key(exp, site):
    from helpers import assert_refused

    base = [*TINY, "--variant", "MHSA", "--seeds", "2"]
    r = ablate(site, exp["project"], "a", *[("3" if a == "2" and base[k - 1] == "--epochs" else a)
                                            for k, a in enumerate(base)], *EXTRA)  # fmt: skip
    assert_refused(r, "holds an experiment with another recipe: epochs is 2 there, 3 here", "--name")
    r = ablate(site, exp["project"], "a", *base, *EXTRA, "lr0=0.02")
    assert_refused(r, "extra.lr0 is <unset> there, 0.02 here")


def test_missing_images_are_refused_before_any_run(site, tmp_path):
    from helpers import assert_refused

    data = tmp_path / "mine.yaml"
    data.write_text(f"path: {tmp_path / 'gone'}\ntrain: images/train\nval: images/val\nnames: {{0: a}}\n")
    r = ablate(site, tmp_path, "m", "--data", str(data), "--epochs", "1", "--imgsz", "64")
    assert_refused(r, f"mine.yaml: the images are not on this machine ({tmp_path / 'gone' / 'images' / 'train'} is "
                      "missing) and the runs never download")  # fmt: skip
    assert not (tmp_path / "m").exists()
    r = ablate(site, tmp_path, "m", "--data", "coco8.yaml", "--epochs", "1")
    assert_refused(r, "coco8.yaml: no such dataset YAML (or pass --download")


def test_a_user_yaml_with_a_lint_error_is_refused_before_anything_trains(site, tmp_path):
    from helpers import assert_refused

    good = trainkit.patched()["yaml"].read_text()
    bad = tmp_path / "yolov8n-mine.yaml"
    bad.write_text(good.replace("- [-1, 1, SPPF, [1024, 5]]", "- [-12, 1, SPPF, [1024, 5]]"))
    r = ablate(site, tmp_path, "y", *TINY, "--variant", f"yaml:{bad}")
    assert_refused(r, f"--variant yaml:{bad}: yolov8n-mine.yaml does not build:", "points before layer 0")
    assert not (tmp_path / "y").exists()


def test_an_unpatched_target_and_unknown_variants_are_refused(tmp_path):
    from helpers import assert_refused

    stock = trainkit.unpatched()
    r = ablate(stock, tmp_path, "u", *TINY)
    assert_refused(r, "is not patched (status: not-applied)")
    site = trainkit.patched()["site"]
    # bad option values are usage errors (exit 2), as in every command
    assert_refused(ablate(site, tmp_path, "u", *TINY, "--variant", "MHSA2"), "usage: --variant MHSA2: unknown variant",
                   code=2)  # fmt: skip
    assert_refused(ablate(site, tmp_path, "u", *TINY, "--", "epochs=3"), "usage: -- epochs=3: epochs is not a free "
                   "training argument here: use --epochs", code=2)  # fmt: skip
    assert_refused(ablate(site, tmp_path, "u", *TINY, "--seeds", "0,0"), "usage: --seeds 0,0: each seed once", code=2)
    assert not (tmp_path / "u").exists()


def test_ray_without_ray_installed_says_so_in_one_line(tmp_path):
    from helpers import assert_refused

    site = trainkit.patched()["site"]
    code = ("import sys; sys.modules['ray'] = None; sys.argv = ['mhsa-patch'] + sys.argv[1:]; "
            "from mhsa_patch.cli import main; main()")  # fmt: skip
    r = subprocess.run([sys.executable, "-c", code, "ablate", "--target", str(site), "--project", str(tmp_path),
                        "--name", "r", *TINY, "--variant", "stock", "--seeds", "1", "--ray", *EXTRA],
                       env=trainkit.env(site), capture_output=True, text=True, cwd=trainkit.ROOT, timeout=600)  # fmt: skip
    assert_refused(r, "--ray needs Ray: pip install 'mhsa-patch[ray]'")


# ----------------------------------------------------------------------------------------------------------- Ray


def test_ray_backend_gives_the_local_backends_table(exp, site, tmp_path_factory):
    """stock and MHSA (seed 0) as Ray tasks on a local Ray started by the command (``--ray local``), inside a network
    namespace of its own (only 127.0.0.1 exists there), shut down when the command ends. The run folders come back as
    archives (MHSA_PATCH_RAY_SHIP=1: what a cluster without a shared filesystem does). Its ablation.csv equals the
    local backend's in every column but the timings (train_s, latency_ms). Ray's token (``~/.ray/auth_token``) and
    session files go to a HOME and a temporary folder of the test's own (issue 22 A.13)."""
    import shlex
    import shutil

    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.fail("the Ray test needs unshare and ip (util-linux, iproute2) for a private network namespace")
    project = exp["project"]
    home, ray_tmp = tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("rt")  # short: Ray's socket paths
    cmd = [sys.executable, "-m", "mhsa_patch", "ablate", "--target", str(site), "--project", str(project), "--name",
           "ray", *TINY, "--variant", "MHSA", "--seeds", "1", "--ray", "local", *EXTRA]  # fmt: skip
    env = dict(trainkit.env(site), MHSA_PATCH_RAY_SHIP="1", RAY_USAGE_STATS_ENABLED="0", HOME=str(home),
               RAY_TMPDIR=str(ray_tmp))  # fmt: skip
    r = subprocess.run(["unshare", "-rn", "sh", "-c", "ip link set lo up && exec " + shlex.join(cmd)], env=env,
                       capture_output=True, text=True, timeout=900, cwd=trainkit.ROOT)  # fmt: skip
    trainkit.ok(r)
    local = [x for x in read_csv(exp["dir"] / "ablation.csv") if x["seed"] == "0"]  # 2 runs prove what 4 would
    ray_rows = read_csv(project / "ray" / "ablation.csv")
    assert [{k: x[k] for k in DETERMINISTIC} for x in ray_rows] == [{k: x[k] for k in DETERMINISTIC} for x in local]
    for x in ray_rows:
        assert losses(project / "ray" / x["run_dir"]) == losses(exp["dir"] / x["run_dir"])
        assert (project / "ray" / x["run_dir"] / "weights" / "best.pt").is_file()
        args = yaml.safe_load((project / "ray" / x["run_dir"] / "args.yaml").read_text())
        assert not args["save_dir"].startswith(str(project))  # trained in the task's own folder, sent back
    assert (home / ".ray" / "auth_token").is_file() and any((ray_tmp / "ray").glob("session_*"))  # where they went


def test_runs_on_several_devices_at_once_give_the_same_table(exp, site):
    """``--device 0,1`` runs one child per GPU at once; the same scheduling with two CPU slots (no GPU here)."""
    from mhsa_patch.ablate import runner
    from mhsa_patch.patching.target import find_target

    e = runner.prepare(find_target(site), data="synthetic:4", variants=["stock"], seeds="2", epochs=2, imgsz=64,
                       batch=2, project=str(exp["project"]), name="par", extra=["workers=0", "plots=False"])  # fmt: skip
    e.slots = ["cpu", "cpu"]  # what parse_device("0,1") gives as ["0", "1"], each run then seeing its one GPU
    seen = []
    out = runner.run(e, on_event=lambda kind, run, data: seen.append((kind, run.name)))
    assert len(out.finished) == 2
    kinds = [k for k, _ in seen if k != "event"]
    assert kinds == ["start", "start", "done", "done"]  # both runs going at once before the first one finished
    local = read_csv(exp["dir"] / "ablation.csv")[:2]  # stock, seeds 0 and 1
    par = read_csv(e.dir / "ablation.csv")
    assert [{k: x[k] for k in DETERMINISTIC} for x in par] == [{k: x[k] for k in DETERMINISTIC} for x in local]


# ------------------------------------------------------------------------------------- a two-node Ray cluster


@pytest.fixture(scope="module")
def cluster(site, tmp_path_factory):
    """tests/raycluster.py's two nodes: a head without CPUs (the driver's side) and one worker node with 2 CPUs,
    which does not see the driver's folder (``cluster.hidden``, where the experiments go)."""
    import helpers
    import raycluster

    root = raycluster.cluster_root(tmp_path_factory)
    env = helpers.checkout_env(site, offline=False, RAY_USAGE_STATS_ENABLED="0")
    c = raycluster.Cluster(root, hidden=root / "driver", env=env).start()
    try:
        c.add_worker(num_cpus=2)
        yield c
    finally:
        c.stop()


def _live_worker(cluster):
    alive = [w for w in cluster.workers if not w.killed and w.proc.poll() is None]
    return alive[0] if alive else cluster.add_worker(num_cpus=2)


def cluster_ablate(cluster, site: Path, name: str, *args: str):
    """``ablate --ray 127.0.0.1:6379`` as the driver on the head node, into ``cluster.hidden``."""
    import raycluster

    cmd = [sys.executable, "-m", "mhsa_patch", "ablate", "--ray", raycluster.ADDRESS, "--target", str(site),
           "--project", str(cluster.hidden), "--name", name, *args]  # fmt: skip
    return cmd


def test_a_two_node_cluster_without_a_shared_folder_gives_the_local_backends_table(exp, site, cluster):
    """stock and MHSA (seed 0) as Ray tasks on the worker node, which cannot see the experiment folder, with
    ``--storage`` (a folder both nodes reach) for the epochs' snapshots: the finished run folders and the logs come
    back to the driver's folder, and the table is the local backend's in every column but the timings. (Without
    ``--storage``, the snapshots go to the driver's folder: the next test.)"""
    _live_worker(cluster)
    storage = cluster.root / "storage"
    r = cluster.run(cluster_ablate(cluster, site, "two", *TINY, "--variant", "MHSA", "--seeds", "1", "--workers", "0",
                                   "--storage", str(storage), "--", "plots=False"), cwd=trainkit.ROOT,
                    timeout=900)  # fmt: skip
    trainkit.ok(r)
    d = cluster.hidden / "two"
    (kept,) = storage.iterdir()  # the experiment's folder there: its name and a hash of its path
    assert kept.name.startswith("two-") and not list((kept / "runs").iterdir())  # each run's removed once recorded
    local = {(x["variant"], x["seed"]): x for x in read_csv(exp["dir"] / "ablation.csv")}
    rows = read_csv(d / "ablation.csv")
    assert [(x["variant"], x["seed"]) for x in rows] == [("stock", "0"), ("MHSA", "0")]
    for x in rows:
        assert {k: x[k] for k in DETERMINISTIC} == {k: local[(x["variant"], x["seed"])][k] for k in DETERMINISTIC}
        run_dir = d / x["run_dir"]
        assert losses(run_dir) == losses(exp["dir"] / x["run_dir"])
        assert (run_dir / "weights" / "best.pt").is_file() and not (run_dir / "weights" / ".resume").exists()
        args = yaml.safe_load((run_dir / "args.yaml").read_text())
        assert not args["save_dir"].startswith(str(cluster.hidden))  # trained in the task's folder on the worker
        assert "Ultralytics" in (d / "logs" / f"{run_dir.name}.log").read_text()  # the log came back
    recipe = yaml.safe_load((d / "recipe.yaml").read_text())
    assert recipe["extra"] == {"plots": False, "workers": 0}  # --workers 0: each task asked for 1 CPU
    assert sorted(recipe["patch"]) == ["nn/modules/__init__.py", "nn/modules/conv.py", "nn/tasks.py"]
    assert len(recipe["data_sha256"]) == 64
    # progress per epoch, each line once its snapshot is in the driver's folder
    assert "stock-s0: started (1/2)" in r.stdout and "MHSA-s0: epoch 2/2  mAP50-95" in r.stdout


def test_a_lost_worker_node_costs_one_epoch_at_most_and_a_fresh_node_finishes_the_run(site, cluster):
    """The worker node's processes are killed once the driver holds two epochs of a 5-epoch run; Ray retries the
    task on a fresh worker node, which resumes from the driver's snapshot: epochs 1-5 once each in results.csv,
    the rows the driver held before the loss unchanged."""
    worker = _live_worker(cluster)
    d = cluster.hidden / "lost"
    run_dir = d / "runs" / "stock-s0"
    state = run_dir / "weights" / ".resume" / "state.json"

    def held() -> int:
        try:
            return int(json.loads(state.read_text())["epochs_done"])
        except (OSError, ValueError, KeyError):
            return 0

    cmd = cluster_ablate(cluster, site, "lost", "--data", "synthetic:4", "--epochs", "5", "--imgsz", "64", "--batch",
                         "2", "--variant", "stock", "--seeds", "1", *EXTRA)  # fmt: skip
    proc = cluster.popen(cmd, cwd=trainkit.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while held() < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before its node could be lost"
        cluster.kill(worker)
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
    maps = [float(x["metrics/mAP50-95(B)"]) for x in res]
    assert row["epochs"] == "5" and int(row["best_epoch"]) == max(j + 1 for j, v in enumerate(maps) if v == max(maps))


def test_a_worker_node_whose_ultralytics_is_not_patched_is_refused_naming_the_node(site, cluster):
    """The only worker node sees an unpatched ultralytics at the target's path: the run fails before it trains, in
    one line naming the node and what to do there."""
    for w in cluster.workers:
        if not w.killed and w.proc.poll() is None:
            cluster.kill(w)
    bad = cluster.add_worker(num_cpus=2, binds={site: trainkit.unpatched()})
    try:
        r = cluster.run(cluster_ablate(cluster, site, "unpatched", *TINY, "--variant", "stock", "--seeds", "1",
                                       *EXTRA), cwd=trainkit.ROOT, timeout=900)  # fmt: skip
    finally:
        cluster.kill(bad)
    assert r.returncode == 1 and "Traceback" not in r.stdout + r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("ERROR")]
    assert errors == [
        f"ERROR ❌ stock-s0 (Ray task): node 127.0.0.1: ultralytics 8.4.190 at {site / 'ultralytics'} is not patched "
        f"(status: not-applied); run 'mhsa-patch apply --target {site / 'ultralytics'}' there"
    ], r.stderr
    assert not (cluster.hidden / "unpatched" / "runs" / "stock-s0" / "results.csv").exists()


LATENCY = r"""
import json, sys
import ray
from mhsa_patch.ablate.cluster.latency import measure_on_cluster
from mhsa_patch.ablate.cluster.resources import run_resources
from mhsa_patch.patching.target import find_target

site, models, address, checkout = sys.argv[1:5]
ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": checkout}})
texts = {name: (file, open(f"{models}/{file}").read()) for name, file in
         (("stock", "yolov8n-stock.yaml"), ("MHSA", "yolov8n-MHSA.yaml"))}
out = measure_on_cluster(find_target(site), texts, 64, 3, "cpu", 5, run_resources("cpu", {"workers": 0}))
print(json.dumps(out))
"""


def test_latency_is_measured_in_one_task_on_a_worker_node(exp, site, cluster):
    """Every variant timed in one task that asks for a run's own resources: it cannot land on the head (no CPU)."""
    import raycluster

    _live_worker(cluster)
    models = cluster.root / "models"  # visible on every node
    models.mkdir(exist_ok=True)
    for f in ("yolov8n-stock.yaml", "yolov8n-MHSA.yaml"):
        (models / f).write_text((exp["dir"] / "models" / f).read_text())
    r = cluster.run([sys.executable, "-c", LATENCY, str(site), str(models), raycluster.ADDRESS, str(trainkit.ROOT)],
                    cwd=trainkit.ROOT, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-4000:]
    out = json.loads(next(ln for ln in reversed(r.stdout.splitlines()) if ln.startswith("{")))
    measured = json.loads((exp["dir"] / "measure.json").read_text())["models"]
    assert out["device"] == "cpu" and out["device_name"] and out["runs"] == 5 and out["node"] == "127.0.0.1"
    for name in ("stock", "MHSA"):
        assert out["models"][name]["params"] == measured[name]["params"] and out["models"][name]["latency_ms"] > 0


def test_a_run_that_fails_on_a_worker_node_brings_its_log_back(site, cluster):
    """A training error on the worker node: the one line names the node and a log on the driver's side, which is
    there (sent back with the failed run)."""
    _live_worker(cluster)
    r = cluster.run(cluster_ablate(cluster, site, "fails", *TINY, "--variant", "stock", "--seeds", "1", *EXTRA,
                                   "optimizer=Bogus"), cwd=trainkit.ROOT, timeout=900)  # fmt: skip
    assert r.returncode == 1 and "Traceback" not in r.stdout + r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("ERROR")]
    log = cluster.hidden / "fails" / "logs" / "stock-s0.log"
    assert len(errors) == 1 and errors[0].startswith("ERROR ❌ stock-s0 (Ray task): node 127.0.0.1: stock-s0: "
                                                     "ultralytics' trainer failed:"), r.stderr  # fmt: skip
    assert errors[0].endswith(f"(log: {log})") and "Bogus" in log.read_text()
