"""Cost of `mhsa-patch apply` followed by `mhsa-patch revert`, as a ratio to libcst's own parse + regenerate.

Baseline: one fresh interpreter that imports libcst, parses the three target files and regenerates their code.
Measured: a fresh `python -m mhsa_patch apply --target COPY`, then a fresh `... revert --target COPY`.
Both run in one loop, alternating, on the same copy of a release; the medians of their CPU times
(user + system, which a loaded machine disturbs far less than wall time) are compared.
Target (engine issue): ratio <= 1.5.

    python examples/bench_engine.py [--target DIR] [--repeats 7]

Without --target it copies the ultralytics this Python imports into a temporary folder (never patching it).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from mhsa_patch.patching.discover import resolve
from mhsa_patch.patching.target import TARGET_FILES, find_target

BASELINE = """
import sys, libcst
for path in sys.argv[1:]:
    with open(path, encoding="utf-8", newline="") as f:
        src = f.read()
    assert libcst.parse_module(src).code == src
"""


def timed(cmd: list[str]) -> float:
    """CPU seconds (user + system) of the child: steadier than wall time on a shared, loaded machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", help="folder holding ultralytics/ (default: copy the installed one)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        source = resolve(args.target).target
        site = Path(tmp)
        shutil.copytree(source.package, site / "ultralytics", ignore=shutil.ignore_patterns("__pycache__"))
        target = find_target(site)
        files = [str(target.file(rel)) for rel in TARGET_FILES]
        py = sys.executable
        base, cycle, apply_t, revert_t = [], [], [], []
        for _ in range(args.repeats):
            base.append(timed([py, "-c", BASELINE, *files]))
            a = timed([py, "-m", "mhsa_patch", "apply", "-t", str(site)])
            r = timed([py, "-m", "mhsa_patch", "revert", "-t", str(site)])
            apply_t.append(a)
            revert_t.append(r)
            cycle.append(a + r)
        med = statistics.median
        print(f"ultralytics {target.version}, {args.repeats} repeats, medians, {py}")
        print(f"{'step':<34}{'CPU s':>9}{'ratio':>8}")
        print(f"{'baseline: libcst parse+codegen':<34}{med(base):>9.3f}{1.0:>8.2f}")
        print(f"{'mhsa-patch apply':<34}{med(apply_t):>9.3f}{med(apply_t) / med(base):>8.2f}")
        print(f"{'mhsa-patch revert':<34}{med(revert_t):>9.3f}{med(revert_t) / med(base):>8.2f}")
        ratio = med(cycle) / med(base)
        print(f"{'apply + revert':<34}{med(cycle):>9.3f}{ratio:>8.2f}   (target <= 1.50: {'met' if ratio <= 1.5 else 'NOT met'})")


if __name__ == "__main__":
    main()
