"""The whole path: from a stock ultralytics to a training run of YOLOv8n-MHSA that starts from pretrained weights.

Each step is the command a user types; this script runs them in order and prints them as it goes::

    mhsa-patch apply                                            # patch ultralytics' source (DDP workers re-import it)
    mhsa-patch gen-yaml --scale n                               # -> yolov8n-MHSA.yaml
    mhsa-patch port-weights yolov8n.pt yolov8n-MHSA.yaml -o yolov8n-MHSA.pt   # every layer to the index it moved to
    mhsa-patch check yolov8n-MHSA.pt                            # builds, runs, learns (optional, --check)
    yolo train model=yolov8n-MHSA.pt data=YOUR_DATA.yaml        # ultralytics' own trainer, from the ported weights

Usage::

    python examples/full_path.py --target /tmp/copy/site-packages            # tiny settings, a minute on a CPU
    python examples/full_path.py --target DIR --weights yolov8n.pt --data coco8.yaml --imgsz 640 --epochs 10

``--target`` is the folder holding ``ultralytics/`` (or the package itself); without it, the ultralytics this
Python imports is patched. Without ``--weights``, a stand-in ``yolov8n.pt`` with random weights is built from
``yolov8n.yaml`` so that the example runs offline (a real run passes the ``yolov8n.pt`` ultralytics publishes).
Without ``--data``, a small synthetic dataset is drawn (coloured shapes; nothing is downloaded).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from mhsa_patch.child.env import target_env
from mhsa_patch.patching.discover import resolve

STAND_IN = r"""
import sys
from datetime import datetime
import torch, ultralytics
from ultralytics.nn.tasks import DetectionModel

cfg, out = sys.argv[1], sys.argv[2]
model = DetectionModel(cfg, verbose=False)
model.names = {i: f"class{i}" for i in range(model.model[-1].nc)}
model.half()
torch.save({"date": datetime.now().isoformat(), "version": ultralytics.__version__, "epoch": -1, "model": model,
            "ema": None, "optimizer": None, "train_args": {"model": cfg, "task": "detect", "imgsz": 640}}, out)
"""

YOLO_CLI = (  # what the `yolo` command runs (ultralytics.yolo.cfg before 8.0.1xx)
    "try:\n    from ultralytics.cfg import entrypoint\nexcept ImportError:\n    from ultralytics.yolo.cfg import entrypoint\n"
    "entrypoint()"
)


def run(shown: str, argv: list[str], env: dict, cwd: Path) -> None:
    """Print the command as a user would type it, then run it; stop at the first failure."""
    print(f"\n$ {shown}", flush=True)
    proc = subprocess.run(argv, env=env, cwd=cwd)
    if proc.returncode != 0:
        sys.exit(f"full_path: step failed (exit {proc.returncode}): {shown}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", help="folder holding ultralytics/ (default: the ultralytics this Python imports)")
    ap.add_argument("--weights", help="stock checkpoint to start from (default: a random-weight stand-in)")
    ap.add_argument("--data", help="dataset YAML (default: a synthetic dataset drawn here)")
    ap.add_argument("--workdir", help="where to write the YAML, weights and runs (default: a temporary folder)")
    ap.add_argument("--scale", default="n")
    ap.add_argument("--imgsz", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--device", default="cpu", help="ultralytics' device: cpu, 0, 0,1 (several GPUs: DDP)")
    ap.add_argument("--check", action="store_true", help="also run 'mhsa-patch check' on the ported weights")
    a = ap.parse_args(argv)

    target = resolve(a.target).target
    work = Path(a.workdir or tempfile.mkdtemp(prefix="mhsa-full-path-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = target_env(target, {"YOLO_OFFLINE": os.environ.get("YOLO_OFFLINE", "1")})
    tool = [sys.executable, "-m", "mhsa_patch"]
    t = ["--target", str(target.site)]
    shown_t = f"--target {shlex.quote(str(target.site))}"
    print(f"full_path: ultralytics {target.version} at {target.package}; working in {work}")

    # 1. the source-level patch (idempotent: 'nothing to do' when it is already applied)
    run(f"mhsa-patch apply {shown_t}", [*tool, "apply", *t], env, work)

    # 2. the model YAML
    model_yaml = work / f"yolov8{a.scale}-MHSA.yaml"
    run(
        f"mhsa-patch gen-yaml --scale {a.scale} -o {model_yaml.name} --force {shown_t}",
        [*tool, "gen-yaml", "--scale", a.scale, "-o", str(model_yaml), "--force", *t],
        env,
        work,
    )

    # 3. pretrained weights, moved to where each layer now lives
    if a.weights:
        weights = Path(a.weights).resolve()
    else:
        weights = work / f"yolov8{a.scale}.pt"
        print(f"\nfull_path: no --weights: building a random-weight stand-in {weights.name} (a real run passes the "
              f"yolov8{a.scale}.pt ultralytics publishes)", flush=True)
        subprocess.run([sys.executable, "-c", STAND_IN, f"yolov8{a.scale}.yaml", str(weights)], env=env, cwd=work,
                       check=True)
    ported = work / f"yolov8{a.scale}-MHSA.pt"
    run(
        f"mhsa-patch port-weights {weights.name} {model_yaml.name} -o {ported.name} --force {shown_t}",
        [*tool, "port-weights", str(weights), str(model_yaml), "-o", str(ported), "--force", *t],
        env,
        work,
    )
    if a.check:
        run(f"mhsa-patch check {ported.name} {shown_t}", [*tool, "check", str(ported), "--runs", "3", *t], env, work)

    # 4. data
    if a.data:
        data = a.data
    else:
        from mhsa_patch.child.synthetic import write_dataset

        root = work / "shapes"
        if not (root / "data.yaml").is_file():
            write_dataset(root, n_train=8, n_val=2, imgsz=max(a.imgsz, 32))
        data = str(root / "data.yaml")
        print(f"\nfull_path: synthetic dataset at {data}")

    # 5. ultralytics' own trainer, starting from the ported weights
    args = [f"model={ported}", f"data={data}", f"epochs={a.epochs}", f"imgsz={a.imgsz}", f"batch={a.batch}",
            "workers=0", f"device={a.device}", "plots=False", f"project={work / 'runs'}", "name=full_path", "exist_ok=True"]
    run(f"yolo train {' '.join(args)}", [sys.executable, "-c", YOLO_CLI, "train", *args], env, work)
    best = work / "runs" / "full_path" / "weights" / "best.pt"
    if not best.is_file():
        sys.exit(f"full_path: the training run saved no {best}")
    print(f"\nfull_path: done ✅ trained weights: {best}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
