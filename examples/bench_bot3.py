"""Benchmark: mhsa-patch's BoT3 against the reference BoT3 (built on the tutorial's MHSA), forward + backward.

The reference is ``tests/reference_layers.py``: BoTNet's CSP block written from its spec on top of the tutorial's
MHSA, which builds the ``N x N`` attention matrix explicitly. Ours is ``patches/bot3.py`` on our MHSA (fused SDPA).
Both use ultralytics' ``Conv``, the same weights (ours loads the reference's state_dict strictly), the same input,
the same upstream gradient, train mode and the same thread count; the input is the trained grid (``w = H``,
``h = W``), where the reference runs.

Each case runs in a fresh subprocess that times both implementations interleaved (ours, ref, ref, ours, ...):
``warmup`` untimed passes of each, then ``repeats`` timed ones. The table shows the median pass times and the
median of the per-pair ratios, so a change in machine load hits both alike.

Usage::

    python examples/bench_bot3.py --threads 2      # the full table (a few minutes on 2 cores)
    python examples/bench_bot3.py --quick          # a smoke run on small shapes
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from layerbench import interleaved, load_average, run_worker  # examples/ is sys.path[0] as a script

ROOT = Path(__file__).resolve().parent.parent

# name, c1 (= c2), H, W, batch, n, time target (ratio ours/ref; None: no target)
CASES = (
    ("P4 of 640, YOLOv8s", 256, 40, 40, 8, 1, 0.55),
    ("P5 of 640, YOLOv8s", 512, 20, 20, 8, 1, 1.0),
)
QUICK_CASES = (("quick", 32, 12, 10, 2, 2, None),)


def _build(args):
    """The reference BoT3 and ours, with the same weights, in train mode."""
    import importlib.util

    import torch
    from ultralytics.nn.modules.conv import Conv

    spec = importlib.util.spec_from_file_location("_bench_reference_layers", ROOT / "tests" / "reference_layers.py")
    reference_layers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference_layers)
    reference_module = reference_layers.reference_module("_bench_bot3_reference", Conv)
    sys.path.insert(0, str(ROOT))
    from patches.bot3 import BoT3

    kwargs = dict(n=args.n, w=args.h, h=args.w)  # the trained grid: MHSA's width runs along H, height along W
    torch.manual_seed(0)
    ref = reference_module.BoT3(args.c, args.c, **kwargs)
    ours = BoT3(args.c, args.c, **kwargs)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return torch, {"ours": ours.train(), "ref": ref.train()}


def time_worker(args) -> None:
    """Time both implementations in one process, interleaved, so that a change in machine load hits both alike."""
    torch, models = _build(args)
    torch.set_num_threads(args.threads)
    x = torch.randn(args.batch, args.c, args.h, args.w, requires_grad=True)
    grad_out = torch.randn(args.batch, args.c, args.h, args.w)

    def step(impl):
        x.grad = None
        model = models[impl]
        for p in model.parameters():
            p.grad = None
        model(x).backward(grad_out)

    timing = interleaved(step, ("ours", "ref"), args.warmup, args.repeats)
    print(json.dumps({**timing, "threads": torch.get_num_threads(), "torch": torch.__version__}))


def _run_worker(case, args) -> dict:
    name, c, h, w, b, n = case[:6]
    cmd = [
        sys.executable, __file__, "--worker", "--c", str(c), "--h", str(h), "--w", str(w), "--batch", str(b),
        "--n", str(n), "--threads", str(args.threads), "--repeats", str(args.repeats), "--warmup", str(args.warmup),
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads), YOLO_OFFLINE="1")
    if env.get("YOLO_CONFIG_DIR"):
        return run_worker(cmd, env, name)
    with tempfile.TemporaryDirectory(prefix="bench-bot3-yolo-") as config:  # no settings file in $HOME, none left
        return run_worker(cmd, {**env, "YOLO_CONFIG_DIR": config}, name)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run on small shapes")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, the same for both (default 2)")
    parser.add_argument("--repeats", type=int, default=None, help="timed passes of each (default 7, quick 3)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed passes of each before timing (default 2)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for name in ("c", "h", "w", "batch", "n"):
        parser.add_argument(f"--{name}", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 7
    if args.worker:
        time_worker(args)
        return 0

    cases = QUICK_CASES if args.quick else CASES
    print("BoT3 forward+backward (train mode): mhsa-patch (MHSA on fused SDPA) vs the reference (tutorial MHSA)")
    print(f"threads={args.threads}, median of {args.repeats} interleaved passes (warmup {args.warmup}), heads=4, e=0.5")
    header = (
        f"| {'case':<20} | {'B x C x H x W':<14} | {'n':>2} | {'ours ms':>8} | {'ref ms':>8} | {'time ratio':>10} "
        f"| {'target':<14} |"
    )
    print(header)
    print("|" + "|".join("-" * len(col) for col in header.split("|")[1:-1]) + "|")
    ok, versions = True, set()
    for case in cases:
        name, c, h, w, b, n, target = case
        timing = _run_worker(case, args)
        versions.add(f"torch {timing['torch']}, {timing['threads']} threads")
        ratio = timing["ratio"]
        verdict = "-" if target is None else f"<={target} " + ("ok" if ratio <= target else "MISSED")
        ok &= target is None or ratio <= target
        print(
            f"| {name:<20} | {f'{b}x{c}x{h}x{w}':<14} | {n:>2} | {timing['ours_s'] * 1e3:>8.1f} "
            f"| {timing['ref_s'] * 1e3:>8.1f} | {ratio:>9.3f}x | {verdict:<14} |",
            flush=True,
        )
    print("time ratio: median over interleaved pairs of ours/ref")
    print("measured with " + "; ".join(sorted(versions)) + f", {os.cpu_count()} CPUs, load average {load_average()}")
    if not args.quick:
        print("all targets met" if ok else "some targets MISSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
