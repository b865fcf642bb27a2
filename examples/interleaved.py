"""The timing loop both layer benchmarks share: two implementations, passes interleaved, ratios per pair."""

from __future__ import annotations

import statistics
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
