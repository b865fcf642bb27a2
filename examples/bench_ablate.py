"""The overhead of ``mhsa-patch ablate``: 2 variants x 2 seeds against the same four trainings run by hand.

Usage::

    python examples/bench_ablate.py --target DIR                         # DIR holds a patched ultralytics/
    python examples/bench_ablate.py --target DIR --epochs 10 --imgsz 320 --images 128 --rounds 2 --device 0

By hand is what a user types without the tool: ``yolo train model=yolov8n.yaml ... seed=0`` and the same with
gen-yaml's ``yolov8n-MHSA.yaml``, seeds 0 and 1, one after another (ultralytics' own entry point against the target,
``deterministic=True`` as ablate sets it, each run validating its best.pt at the end as ultralytics does). ``ablate``
does the same four trainings plus what the tool adds: its checks, the measurement of both variants (params, true
GFLOPs, latency), a child per run, a resume snapshot per epoch, the final validation and the table. Both use the
same dataset file (the synthetic set, drawn once), the same settings, on the same machine, in the same script;
with ``--rounds 2`` they alternate (hand, ablate, hand, ablate) so that drifting load hits both. Prints each wall
time and the ratio ablate / by hand (target: at most 1.10).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mhsa_patch.child.env import target_env
from mhsa_patch.patching.target import find_target

ENTRY = "import sys; from ultralytics.cfg import entrypoint; sys.argv[0] = 'yolo'; entrypoint()"


def timed(cmd: list[str], env: dict, cwd: Path) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:]
        sys.exit(f"bench_ablate: {' '.join(cmd[:4])} ... failed:\n" + "\n".join(tail))
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", help="folder holding a patched ultralytics/ (default: the one this Python imports)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--imgsz", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--images", type=int, default=32, help="synthetic training images")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--workdir", help="keep everything here (default: a temporary folder)")
    a = ap.parse_args(argv)

    target = find_target(a.target)
    env = target_env(target, {"YOLO_OFFLINE": "1"})
    work = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="mhsa-bench-ablate-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        from mhsa_patch.child.synthetic import write_dataset

        data = work / "shapes" / "data.yaml"
        if not data.is_file():
            write_dataset(data.parent, n_train=a.images, n_val=max(2, a.images // 4), imgsz=a.imgsz)
        cfg = work / "cfg"
        cfg.mkdir(exist_ok=True)
        mhsa = cfg / "yolov8n-MHSA.yaml"
        if not mhsa.is_file():
            timed([sys.executable, "-m", "mhsa_patch", "gen-yaml", "--scale", "n", "-o", str(mhsa), "--target",
                   str(target.site)], env, work)  # fmt: skip
        common = [f"data={data}", f"epochs={a.epochs}", f"imgsz={a.imgsz}", f"batch={a.batch}", f"device={a.device}",
                  "deterministic=True", "workers=0", "plots=False", "exist_ok=True"]  # fmt: skip
        print(f"bench_ablate: ultralytics {target.version}; 2 variants x 2 seeds, {a.epochs} epochs at {a.imgsz}, "
              f"batch {a.batch}, {a.images} images, device {a.device}", flush=True)  # fmt: skip
        hand_total = ablate_total = 0.0
        for k in range(a.rounds):
            hand = 0.0
            for model in ("yolov8n.yaml", str(mhsa)):
                for seed in (0, 1):
                    name = f"{Path(model).stem}-s{seed}"
                    cmd = [sys.executable, "-c", ENTRY, "train", f"model={model}", f"seed={seed}", *common,
                           f"project={work / f'hand{k}'}", f"name={name}"]  # fmt: skip
                    hand += timed(cmd, env, work)
            print(f"  round {k + 1}: by hand (yolo train x 4)  {hand:8.1f} s", flush=True)
            cmd = [sys.executable, "-m", "mhsa_patch", "ablate", "--target", str(target.site), "--data", str(data),
                   "--variant", "stock", "--variant", "MHSA", "--seeds", "2", "--epochs", str(a.epochs), "--imgsz",
                   str(a.imgsz), "--batch", str(a.batch), "--device", a.device, "--project", str(work),
                   "--name", f"ablate{k}", "--quiet", "--", "workers=0", "plots=False"]  # fmt: skip
            abl = timed(cmd, env, work)
            print(f"  round {k + 1}: mhsa-patch ablate          {abl:8.1f} s   ratio {abl / hand:.3f}x", flush=True)
            hand_total += hand
            ablate_total += abl
        ratio = ablate_total / hand_total
        verdict = "within" if ratio <= 1.10 else "over"
        print(f"bench_ablate: ablate {ablate_total:.1f} s / by hand {hand_total:.1f} s = {ratio:.3f}x "
              f"({verdict} the 1.10x target)")  # fmt: skip
    finally:
        if not a.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
