"""Cost of `mhsa-patch apply --layer FILE.py` against plain `mhsa-patch apply`, as a ratio measured in one run.

Baseline: a fresh `python -m mhsa_patch apply --target COPY` on a stock copy (MHSA and BoT3), then `revert`.
Measured: a fresh `python -m mhsa_patch apply --target COPY --layer examples/layers/eca.py` on the same stock copy
(MHSA, BoT3 and the user's ECA: the file read with libcst, its reading inferred, its imports found, its collisions
checked, its module file written), then `revert`. Both run in one loop, alternating, on the same copy; the medians of
their CPU times (user + system, which a loaded machine disturbs far less than wall time) are compared.
Target (issue 21): ratio <= 1.2.

    python examples/bench_layer.py [--target DIR] [--layer FILE.py] [--repeats 7]

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
from mhsa_patch.patching.target import find_target

LAYER = Path(__file__).resolve().parent / "layers" / "eca.py"


def timed(cmd: list[str]) -> float:
    """CPU seconds (user + system) of the child: steadier than wall time on a shared, loaded machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", help="folder holding ultralytics/ (default: copy the installed one)")
    parser.add_argument("--layer", default=str(LAYER), help="the layer file (default: examples/layers/eca.py)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        source = resolve(args.target).target
        site = Path(tmp)
        shutil.copytree(source.package, site / "ultralytics", ignore=shutil.ignore_patterns("__pycache__"))
        target = find_target(site)
        py = [sys.executable, "-m", "mhsa_patch"]
        plain, layered = [], []
        for _ in range(args.repeats):
            plain.append(timed([*py, "apply", "-t", str(site)]))
            timed([*py, "revert", "-t", str(site)])
            layered.append(timed([*py, "apply", "-t", str(site), "--layer", args.layer]))
            timed([*py, "revert", "-t", str(site)])
        med = statistics.median
        ratio = med(layered) / med(plain)
        print(f"ultralytics {target.version}, {args.repeats} repeats, medians of CPU time, {sys.executable}")
        print(f"{'step':<44}{'CPU s':>9}{'ratio':>8}")
        print(f"{'baseline: mhsa-patch apply':<44}{med(plain):>9.3f}{1.0:>8.2f}")
        name = Path(args.layer).name
        print(f"{'mhsa-patch apply --layer ' + name:<44}{med(layered):>9.3f}{ratio:>8.2f}   "
              f"(target <= 1.20: {'met' if ratio <= 1.2 else 'NOT met'})")


if __name__ == "__main__":
    main()
