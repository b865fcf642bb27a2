"""Shared, expensive setup of the training-side tests (check, port-weights, DDP, examples), built once per session.

One patched copy of the latest release (patched with the engine CLI, ``mhsa-patch apply``), its MHSA model YAML
(written by gen-yaml) and a stock checkpoint with random weights built locally from ``yolov8n.yaml`` (nothing is
downloaded). Memoised per process, in a temporary folder removed at exit, so every test module shares them.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import helpers
import releases

ROOT = Path(__file__).resolve().parent.parent


@functools.lru_cache(maxsize=None)
def workdir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="mhsa-train-tests-"))
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    return d


# The offline test environment (one OpenMP thread) and a child run in it: the release helpers' own.
env = releases.release_env
run_python = releases.run_python


def cli(*args: str, site: Path | None = None, timeout: float = 600, cwd: Path | None = None, env_extra=None):
    """``python -m mhsa_patch args...`` with the test environment (and ``site`` on PYTHONPATH when given)."""
    return helpers.run_tool(*args, env=helpers.checkout_env(site or workdir(), offline=False, **(env_extra or {})),
                            cwd=cwd, timeout=timeout)


def ok(proc) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"
    return proc


def gen_yaml(site: Path, dest_dir: Path, scale: str = "n", *extra: str, env_extra=None) -> Path:
    """The MHSA YAML for ``scale``, written into ``dest_dir`` by the ``gen-yaml`` command (always the command line: a
    broken CLI must fail the tests that use it); returns its path."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    before = set(dest_dir.glob("*.yaml"))
    proc = ok(cli("gen-yaml", "--scale", scale, *extra, "--target", str(site), cwd=dest_dir, env_extra=env_extra))
    made = sorted(set(dest_dir.glob("*.yaml")) - before)
    assert len(made) == 1, f"gen-yaml wrote {len(made)} new YAMLs into {dest_dir}:\n{proc.stdout}"
    return made[0]


STOCK_CKPT = r"""
import sys
from datetime import datetime

import torch
import ultralytics
from ultralytics.nn.tasks import DetectionModel

cfg, out = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
model = DetectionModel(cfg, verbose=False)
model.names = {i: f"class{i}" for i in range(model.model[-1].nc)}
model.args = {"task": "detect", "imgsz": 640}
model.half()
for p in model.parameters():
    p.requires_grad = False
# The layout of an optimizer-stripped release checkpoint (yolov8n.pt): random weights, nothing downloaded.
torch.save(
    {"date": datetime.now().isoformat(), "version": ultralytics.__version__, "epoch": -1, "best_fitness": None,
     "model": model, "ema": None, "updates": None, "optimizer": None,
     "train_args": {"model": cfg, "task": "detect", "imgsz": 640, "data": "coco.yaml"}},
    out,
)
"""


def stock_checkpoint(site: Path, cfg: str, dest: Path) -> Path:
    """A stock checkpoint built locally from ``cfg`` (e.g. ``yolov8n.yaml``) with random weights."""
    if not dest.exists():
        proc = run_python(STOCK_CKPT, site, cfg, str(dest), timeout=300)
        assert proc.returncode == 0, proc.stderr[-4000:]
    return dest


@functools.lru_cache(maxsize=None)
def patched() -> dict:
    """``{"site", "pkg", "yaml", "stock"}``: the latest release copied, patched by ``mhsa-patch apply``, its
    ``yolov8n-MHSA.yaml`` and a random-weight ``yolov8n.pt``."""
    root = workdir() / "latest"
    pkg = releases.copy_release(releases.LATEST, root / "site")
    site = pkg.parent
    ok(cli("apply", "--target", str(site), site=site))
    yaml = gen_yaml(site, root / "cfg")
    stock = stock_checkpoint(site, "yolov8n.yaml", root / "yolov8n.pt")
    return {"site": site, "pkg": pkg, "yaml": yaml, "stock": stock, "root": root}


@functools.lru_cache(maxsize=None)
def patched_release(version: str) -> dict:
    """``{"site", "pkg", "yaml"}``: a release copied, patched by ``mhsa-patch apply`` and its ``yolov8n-MHSA.yaml``
    written by gen-yaml, once per session (8.0.98 serves test_check and test_torchvision_ops)."""
    root = workdir() / f"release-{version}"
    pkg = releases.copy_release(version, root / "site")
    site = pkg.parent
    ok(cli("apply", "--target", str(site), site=site))
    return {"site": site, "pkg": pkg, "yaml": gen_yaml(site, root / "cfg")}


@functools.lru_cache(maxsize=None)
def old_release_check_train(version: str):
    """``check yolov8n-MHSA.yaml --train --json`` on an old release (tiny settings), run once under the network guard
    (a ``netguard.GuardedRun``): test_check.py checks its report and that it stayed offline."""
    import netguard

    r = patched_release(version)
    return netguard.run("check", str(r["yaml"]), "--train", "--json", "--imgsz", "64", "--runs", "1", "--images", "4",
                        "--batch", "2", "--train-imgsz", "64", "--target", str(r["site"]), site=r["site"])


def check_train_run() -> subprocess.CompletedProcess:
    """``mhsa-patch check yolov8n-MHSA.yaml --train`` on the patched latest release, as a user runs it in the YAML's
    folder, stderr merged into stdout as a terminal shows them. Run once: test_check.py reads its steps and checks it
    stayed offline, and compares it with the example in docs/check.md."""
    return check_train_guarded().proc


@functools.lru_cache(maxsize=None)
def check_train_guarded():
    """:func:`check_train_run` as the ``netguard.GuardedRun`` it is: run under the network guard."""
    import netguard

    p = patched()
    guard = netguard.Guard(p["site"])
    return guard.record(subprocess.run(
        [sys.executable, "-m", "mhsa_patch", "check", p["yaml"].name, "--train", "--target", str(p["site"])],
        env=helpers.checkout_env(p["site"], offline=False, **guard.env), cwd=p["yaml"].parent,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900,
    ))  # fmt: skip


@functools.lru_cache(maxsize=None)
def unpatched() -> Path:
    """A pristine copy of the latest release (its site folder), for the refusals."""
    pkg = releases.copy_release(releases.LATEST, workdir() / "stock" / "site")
    return pkg.parent


@functools.lru_cache(maxsize=None)
def ported_run() -> tuple:
    """The random-weight yolov8n.pt ported into yolov8n-MHSA by ``port-weights``, under the network guard: (OUT.pt,
    what it printed, the ``netguard.GuardedRun``)."""
    import netguard

    p = patched()
    out = p["root"] / "yolov8n-MHSA-ported.pt"
    run = netguard.run("port-weights", str(p["stock"]), str(p["yaml"]), "-o", str(out), "--target", str(p["site"]),
                       site=p["site"])  # fmt: skip
    ok(run.proc)
    return out, run.proc.stdout, run


def ported() -> Path:
    return ported_run()[0]


def json_report(proc) -> dict:
    ok(proc)
    return json.loads(proc.stdout)
