"""What both layer benchmarks share: the interleaved timing loop, the worker subprocess, the machine's load."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time


def interleaved(step, names: tuple[str, str], warmup: int, repeats: int) -> dict:
    """Median pass time of each implementation and the median of per-pair ratios (first / second).

    ``step(name)`` runs one pass. Passes alternate (a, b, b, a, ...) after ``warmup`` untimed ones of each, so a
    change in machine load hits both alike.
    """
    a, b = names
    for _ in range(warmup):
        step(a)
        step(b)
    times: dict[str, list[float]] = {a: [], b: []}
    for i in range(repeats):
        for impl in (a, b) if i % 2 == 0 else (b, a):
            t0 = time.perf_counter()
            step(impl)
            times[impl].append(time.perf_counter() - t0)
    ratios = [x / y for x, y in zip(times[a], times[b])]
    return {f"{a}_s": statistics.median(times[a]), f"{b}_s": statistics.median(times[b]), "ratio": statistics.median(ratios)}


def run_worker(cmd: list[str], env: dict[str, str], what: str) -> dict:
    """Run a benchmark worker subprocess; its last stdout line is its JSON result (its output shown if it fails)."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"benchmark worker failed: {what}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def load_average() -> str:
    """The 1/5/15-minute load averages, for the table's footer ("n/a" where the system has none)."""
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"
