"""YOLOv8n against YOLOv8n-MHSA: parameters, true GFLOPs (attention included) and CPU latency, measured in one run.

Usage::

    python examples/compare_baseline.py --target DIR            # DIR holds a patched ultralytics/ (mhsa-patch apply)
    python examples/compare_baseline.py --target DIR --scale s --imgsz 640 --runs 20
    OMP_NUM_THREADS=4 python examples/compare_baseline.py ...   # time 4 threads (ultralytics defaults to 1 on import)

It writes the MHSA YAML with ``mhsa-patch gen-yaml`` into a temporary folder and asks ``mhsa-patch check --json``
for the numbers: that check builds both models with the target's ultralytics, counts FLOPs with
``torch.utils.flop_counter`` (ultralytics' own count misses the attention matmuls) and times both models
interleaved in the same process, so the latency ratio compares like with like.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from mhsa_patch.child.env import target_env
from mhsa_patch.patching.discover import resolve


def mhsa_patch(*args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mhsa_patch", *args], env=env, cwd=cwd, capture_output=True, text=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", help="folder holding a patched ultralytics/ (default: the one this Python imports)")
    ap.add_argument("--scale", default="n")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--runs", type=int, default=10, help="timed forward passes per model")
    ap.add_argument("--heads", type=int, default=4)
    a = ap.parse_args(argv)

    target = resolve(a.target).target
    env = target_env(target, {"YOLO_OFFLINE": "1"})
    t = ["--target", str(target.site)]
    with tempfile.TemporaryDirectory(prefix="mhsa-compare-") as tmp:
        work = Path(tmp)
        cfg = work / f"yolov8{a.scale}-MHSA.yaml"
        gen = mhsa_patch("gen-yaml", "--scale", a.scale, "--heads", str(a.heads), "-o", str(cfg), *t, env=env, cwd=work)
        if gen.returncode != 0:
            sys.exit(f"compare_baseline: gen-yaml failed: {gen.stderr.strip()}")
        print(f"compare_baseline: ultralytics {target.version} at {target.package}; measuring at {a.imgsz}x{a.imgsz} …",
              flush=True)
        chk = mhsa_patch("check", str(cfg), "--json", "--imgsz", str(a.imgsz), "--runs", str(a.runs), *t, env=env, cwd=work)
        if chk.returncode != 0:
            sys.exit(f"compare_baseline: {chk.stderr.strip().splitlines()[-1] if chk.stderr.strip() else 'check failed'}")
        r = json.loads(chk.stdout)

    s, st, lat = r["summary"], r["stock"], r["latency"]
    stock_name, name = f"YOLOv8{a.scale}", f"YOLOv8{a.scale}-MHSA"
    dp, dg = s["parameters"] - st["parameters"], s["gflops"] - st["gflops"]
    threads = f"{lat['threads']} thread{'s' * (lat['threads'] != 1)}"
    print()
    print(f"{'':<14}{'parameters':>14}{'true GFLOPs':>14}{'CPU latency':>14}")
    print(f"{stock_name:<14}{st['parameters']:>14,}{st['gflops']:>14.2f}{lat['stock_ms']:>11.1f} ms")
    print(f"{name:<14}{s['parameters']:>14,}{s['gflops']:>14.2f}{lat['model_ms']:>11.1f} ms")
    print(f"{'MHSA adds':<14}{dp:>+14,}{dg:>+14.2f}{'×' + format(lat['ratio'], '.2f'):>14}")
    print(f"{'':<14}{dp / st['parameters']:>+14.1%}{dg / st['gflops']:>+14.1%}")
    print(
        f"\n{a.imgsz}x{a.imgsz}, batch 1, {threads}, median of {lat['runs']} interleaved runs; "
        f"ultralytics' own GFLOPs count for {name}: {s.get('gflops_thop') or float('nan'):.2f} (thop: blind to the attention matmuls)"
    )
    print(json.dumps({"stock": st, "mhsa": {"parameters": s["parameters"], "gflops": s["gflops"]}, "latency": lat}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
