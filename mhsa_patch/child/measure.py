"""Child of ``mhsa-patch ablate``: what the runs need known before they start, in one process: the dataset as the
target's ultralytics reads it (:mod:`mhsa_patch.child.dataset`), the versions, the GPUs, and the parameters, true
GFLOPs and latency of every variant.

``python -m mhsa_patch.child.measure [--data-args TRAIN.json] --model NAME=M.yaml ... --imgsz 640 --nc 3
--device auto|cpu|cuda:0 --events FILE``

With ``--data-args`` (the recipe's ``YOLO.train`` arguments) the dataset is checked first and gives the class count;
one ultralytics refuses is not an error of this child but its answer (``data_error``, one line), and nothing is
measured then.

Every variant is built from its YAML with the dataset's class count (the model each run trains), counted by the
probe (:func:`mhsa_patch.child.probe.true_flops`: attention's matmuls included) and timed at batch 1, ``imgsz`` x
``imgsz``, on one device, the variants' runs interleaved so that load on the machine hits them alike: the latency
ratios are comparable. Also reports the versions and the device name the recipe records, and how many GPUs torch
sees here (``gpus``): ``--device auto`` measures on the first one, or on the CPU where there is none (the runs' default
device is ultralytics' own: every visible GPU). With no ``--model``, only those.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

from mhsa_patch.child.compat import build, require_patched, route_checkpoint_loading, ultralytics_info
from mhsa_patch.child.protocol import ChildError, one_line, run_main


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return name


def latency_ms(models: dict, imgsz: int, device: str, runs: int, warmup: int = 3) -> dict[str, float]:
    """Median batch-1 forward time per model, in ms, the models' runs interleaved."""
    import torch

    x = torch.zeros(1, 3, imgsz, imgsz, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.no_grad():
        for _ in range(warmup):
            for m in models.values():
                m(x)
        for _ in range(runs):
            for k, m in models.items():
                sync()
                t = time.perf_counter()
                m(x)
                sync()
                times[k].append(time.perf_counter() - t)
    return {k: round(statistics.median(v) * 1000, 3) for k, v in times.items()}


def measure(events, a) -> dict:
    import torch

    version, _ = ultralytics_info()
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if a.device == "auto":
        a.device = "cuda:0" if gpus else "cpu"
    about = {"ultralytics": version, "torch": torch.__version__, "device": a.device,
             "device_name": device_name(a.device), "gpus": gpus}  # fmt: skip
    data = None
    if a.data_args:
        from mhsa_patch.child.dataset import check

        try:
            data = check(events, json.loads(Path(a.data_args).read_text(encoding="utf-8")))
        except ChildError as e:
            return {**about, "data_error": str(e), "models": {}}
        if data.get("split_error"):  # --eval-split test on a YAML without that split: nothing measured for nothing
            return {**about, "data": data, "models": {}}
        a.nc = data["nc"]
    require_patched()
    route_checkpoint_loading()  # before anything loads a checkpoint: old releases on today's torch
    from mhsa_patch.child.probe import true_flops

    models, out = {}, {}
    for item in a.model:
        name, _, path = item.partition("=")
        events.step("build", f"Building {name}")
        model = build(path, nc=a.nc)[0]
        try:
            gflops = true_flops(model, a.imgsz)["gflops"]
        except Exception as e:  # noqa: BLE001
            raise ChildError(f"counting {name}'s FLOPs failed: {one_line(e)}") from None
        out[name] = {"params": int(sum(p.numel() for p in model.parameters())), "gflops": round(gflops, 4)}
        models[name] = model.float().to(a.device).eval()
    lat = {}
    if a.runs > 0:
        events.step("latency", f"Timing {len(models)} models at batch 1, {a.imgsz}x{a.imgsz}, on {a.device}")
        lat = latency_ms(models, a.imgsz, a.device, a.runs)
    for name in out:
        out[name]["latency_ms"] = lat.get(name)
    return {**about, "threads": torch.get_num_threads(), "runs": a.runs, "models": out, "data": data}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mhsa_patch.child.measure")
    ap.add_argument("--data-args", help="the recipe's train arguments (JSON): check the dataset first")
    ap.add_argument("--model", action="append", default=[], help="NAME=PATH, repeated")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--nc", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--events")
    a = ap.parse_args(argv)
    return run_main(lambda ev: measure(ev, a), a.events)


if __name__ == "__main__":
    raise SystemExit(main())
