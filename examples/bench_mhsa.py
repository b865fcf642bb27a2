"""Benchmark: mhsa-patch's MHSA against a straightforward implementation of the same formula, forward + backward.

The straightforward implementation builds the ``N x N`` logits explicitly (``q^T k [+ r^T q]``), applies a softmax
and multiplies by ``v``: what the tutorial's class does. Both use the same module, the same weights, the same input,
the same upstream gradient and the same thread count.

Measured in one run of this script, each case in fresh subprocesses, so no case's allocator state leaks into another:

* time: one subprocess runs both implementations, interleaved (ours, ref, ref, ours, ...), ``warmup`` untimed
  passes of each, then ``repeats`` timed ones; the table shows the median pass times and the median of the
  per-pair ratios, so a change in machine load hits both alike;
* memory: one subprocess per implementation, after one warm-up pass: the growth of the peak resident set size
  (``VmHWM``, reset through ``/proc/self/clear_refs`` before each pass) over the resident size just before the pass,
  once the module, the input and the upstream gradient exist; median of ``mem-repeats`` passes. glibc is told to
  ``mmap`` every buffer above 64 KiB, so freed buffers leave the resident set and each pass is measured afresh.
  (PyTorch's CPU allocations are invisible to ``tracemalloc``; the resident set sees them.) Where ``clear_refs`` is
  unavailable, the subprocess's ``ru_maxrss`` growth over the same baseline is used instead.

Usage::

    python examples/bench_mhsa.py               # the full table (a couple of minutes on 2 cores)
    python examples/bench_mhsa.py --quick       # a smoke run on small shapes
    python examples/bench_mhsa.py --threads 4 --repeats 9
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import sys
from pathlib import Path

from layerbench import interleaved, load_average, run_worker  # examples/ is sys.path[0] as a script

# name, C, H, W, batch, heads, pos_emb, time target, memory target (ratios; None: no target)
CASES = (
    ("P3 of 640", 128, 80, 80, 1, 4, False, 0.4, 0.15),
    ("P3 of 640, pos_emb", 128, 80, 80, 1, 4, True, 0.4, 0.15),
    ("P5 of YOLOv8n", 256, 20, 20, 8, 4, False, 1.0, None),
    ("P5 of YOLOv8n, pos_emb", 256, 20, 20, 8, 4, True, 1.0, None),
)
QUICK_CASES = (("quick, pos_emb", 32, 16, 12, 2, 4, True, None, None),)


def _load_mhsa():
    """The MHSA class from patches/mhsa.py, loaded by path so the benchmark runs from a plain checkout."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "patches" / "mhsa.py"
    spec = importlib.util.spec_from_file_location("_bench_mhsa_layer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MHSA


def naive_forward(m, x):
    """The formula, written out: explicit N x N logits, softmax over keys, weighted sum of values."""
    import torch

    b, c, h, w = x.shape
    heads, d, n = m.heads, c // m.heads, h * w
    q = torch.nn.functional.conv2d(x, m.query.weight, m.query.bias).reshape(b, heads, d, n)
    k = torch.nn.functional.conv2d(x, m.key.weight, m.key.bias).reshape(b, heads, d, n)
    v = torch.nn.functional.conv2d(x, m.value.weight, m.value.bias).reshape(b, heads, d, n)
    logits = torch.matmul(q.transpose(-1, -2), k)  # [n, m] = q_n . k_m
    if m.pos:
        r = (m.rel_h_weight + m.rel_w_weight).reshape(1, heads, d, n)  # benchmark shapes are the trained grid
        logits = logits + torch.matmul(r.transpose(-1, -2), q)  # [n, m] = r_n . q_m
    attention = torch.softmax(logits, dim=-1)
    out = torch.matmul(v, attention.transpose(-1, -2))  # [c, n] = sum_m v[c, m] attention[n, m]
    return out.reshape(b, c, h, w)


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            match = re.search(rf"^{field}:\s+(\d+)\s+kB", f.read(), re.M)
        return int(match.group(1)) if match else None
    except OSError:
        return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _maxrss_kib() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss // 1024 if sys.platform == "darwin" else rss


def _setup(args):
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    MHSA = _load_mhsa()
    m = MHSA(args.c, width=args.h, height=args.w, heads=args.heads, pos_emb=bool(args.pos))  # trained grid
    x = torch.randn(args.batch, args.c, args.h, args.w, requires_grad=True)
    grad_out = torch.randn(args.batch, args.c, args.h, args.w)
    impls = {"fused": m, "naive": lambda t: naive_forward(m, t)}

    def step(impl):
        x.grad = None
        for p in m.parameters():
            p.grad = None
        impls[impl](x).backward(grad_out)

    return torch, step


def time_worker(args) -> None:
    """Time both implementations in one process, interleaved, so that a change in machine load hits both alike."""
    torch, step = _setup(args)
    timing = interleaved(step, ("fused", "naive"), args.warmup, args.repeats)
    print(json.dumps({**timing, "threads": torch.get_num_threads(), "torch": torch.__version__}))


def mem_worker(args) -> None:
    """Peak resident-size growth of one implementation's forward + backward, in a process of its own."""
    _, step = _setup(args)
    step(args.impl)  # warm up: lazy initialisation and thread pools are not the layer's memory
    use_hwm = _reset_peak() and _status_kib("VmHWM") is not None
    base_maxrss = _maxrss_kib()
    growth = []
    for _ in range(args.mem_repeats):
        if use_hwm:
            base = _status_kib("VmRSS")
            _reset_peak()
        step(args.impl)
        if use_hwm:
            growth.append(max(_status_kib("VmHWM") - base, 0) * 1024)
    if not use_hwm:
        growth = [max(_maxrss_kib() - base_maxrss, 0) * 1024]
    print(json.dumps({"mem_bytes": statistics.median(growth), "method": "VmHWM" if use_hwm else "ru_maxrss"}))


def _run_worker(kind: str, case, args, impl: str = "fused") -> dict:
    name, c, h, w, b, heads, pos = case[:7]
    cmd = [
        sys.executable, __file__, "--worker", kind, "--impl", impl, "--c", str(c), "--h", str(h), "--w", str(w),
        "--batch", str(b), "--heads", str(heads), "--pos", str(int(pos)), "--threads", str(args.threads),
        "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--mem-repeats", str(args.mem_repeats),
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    if kind == "mem":  # every sizeable buffer is mmap'ed and returned on free, so RSS tracks what is in use
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    return run_worker(cmd, env, f"{name} / {kind} / {impl}")


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run on small shapes")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, the same for both (default 2)")
    parser.add_argument("--repeats", type=int, default=None, help="timed passes of each (default 7, quick 3)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed passes of each before timing (default 2)")
    parser.add_argument("--mem-repeats", type=int, default=None, help="measured passes for memory (default 3)")
    parser.add_argument("--worker", choices=("time", "mem"), help=argparse.SUPPRESS)
    parser.add_argument("--impl", choices=("fused", "naive"), default="fused", help=argparse.SUPPRESS)
    for name in ("c", "h", "w", "batch", "heads", "pos"):
        parser.add_argument(f"--{name}", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 7
    if args.mem_repeats is None:
        args.mem_repeats = 1 if args.quick else 3
    if args.worker == "time":
        time_worker(args)
        return 0
    if args.worker == "mem":
        mem_worker(args)
        return 0

    cases = QUICK_CASES if args.quick else CASES
    print("MHSA forward+backward: mhsa-patch (fused SDPA) vs the formula written out (explicit N x N logits)")
    print(
        f"threads={args.threads}, time: median of {args.repeats} interleaved passes (warmup {args.warmup}), "
        f"memory: median of {args.mem_repeats} passes, heads=4"
    )
    header = (
        f"| {'case':<22} | {'B x C x H x W':<13} | {'ours ms':>8} | {'ref ms':>8} | {'time ratio':>10} "
        f"| {'ours peak+ MiB':>14} | {'ref peak+ MiB':>13} | {'mem ratio':>9} | {'targets':<26} |"
    )
    print(header)
    print("|" + "|".join("-" * len(col) for col in header.split("|")[1:-1]) + "|")
    ok, method, versions = True, None, set()
    for case in cases:
        name, c, h, w, b, heads, pos, t_target, m_target = case
        timing = _run_worker("time", case, args)
        mem_ours, mem_ref = _run_worker("mem", case, args, "fused"), _run_worker("mem", case, args, "naive")
        method = mem_ours["method"]
        versions.add(f"torch {timing['torch']}, {timing['threads']} threads")
        t_ratio = timing["ratio"]
        m_ratio = mem_ours["mem_bytes"] / mem_ref["mem_bytes"] if mem_ref["mem_bytes"] > 0 else float("nan")
        targets = []
        if t_target is not None:
            targets.append(f"time<={t_target} " + ("ok" if t_ratio <= t_target else "MISSED"))
            ok &= t_ratio <= t_target
        if m_target is not None:
            targets.append(f"mem<={m_target} " + ("ok" if m_ratio <= m_target else "MISSED"))
            ok &= m_ratio <= m_target
        print(
            f"| {name:<22} | {f'{b}x{c}x{h}x{w}':<13} | {timing['fused_s'] * 1e3:>8.1f} | {timing['naive_s'] * 1e3:>8.1f} "
            f"| {t_ratio:>9.3f}x | {_mib(mem_ours['mem_bytes']):>14} | {_mib(mem_ref['mem_bytes']):>13} "
            f"| {m_ratio:>8.3f}x | {', '.join(targets) or '-':<26} |",
            flush=True,
        )
    print(f"time ratio: median over passes of ours/ref; peak+: growth of {method} over the resident size before a pass")
    print("measured with " + "; ".join(sorted(versions)) + f", {os.cpu_count()} CPUs, load average {load_average()}")
    if not args.quick:
        print("all targets met" if ok else "some targets MISSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
