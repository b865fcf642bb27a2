"""Start-up cost of the command line on two typer releases: ``mhsa-patch --version`` and ``mhsa-patch status``.

Typer 0.29 checks option values with pydantic (a hard dependency from that release on); the tool no longer pins typer
below it. This measures what that costs a user on each call, against the release before it, in one run:

    python examples/bench_typer.py [--old 0.28.0] [--new NEWEST] [--repeats 9] [--target DIR]

Each typer (with its own dependencies: pydantic and friends for 0.29) is installed once with ``pip install --target``
into ``~/.cache/mhsa-patch-bench/typer-X`` and put first on ``PYTHONPATH`` of a fresh ``python -m mhsa_patch`` (this
checkout's tool, next on the path); nothing is installed into the environment. The two typers run alternately, in
the same loop, on the same copy of a release (``status`` reads it and writes nothing); the table gives the medians of
each child's CPU time (user + system: far steadier than wall time on a shared machine) and the ratio new/old.
Without ``--new``, the newest typer pip finds.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("MHSA_PATCH_BENCH_CACHE", Path.home() / ".cache" / "mhsa-patch-bench"))


def typer_folder(version: str | None) -> tuple[str, Path]:
    """``(version, folder)``: a folder holding typer ``version`` (None: the newest pip finds) and its dependencies,
    installed with pip once per version."""
    if version is not None and (CACHE / f"typer-{version}" / "typer").is_dir():
        return version, CACHE / f"typer-{version}"
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=CACHE, prefix=".typer-"))
    try:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(tmp),
                        f"typer=={version}" if version else "typer"], check=True)
        version = version or typer_version(str(tmp))
        dest = CACHE / f"typer-{version}"
        if not (dest / "typer").is_dir():
            shutil.rmtree(dest, ignore_errors=True)
            tmp.rename(dest)
        return version, dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def typer_version(folder: str) -> str:
    """The version of the typer imported with ``folder`` first on the path."""
    code = "import sys; sys.path.insert(0, sys.argv[1]); import typer; print(typer.__version__)"
    return subprocess.run([sys.executable, "-c", code, folder], check=True, capture_output=True, text=True).stdout.strip()


def cpu_seconds(cmd: list[str], env: dict[str, str]) -> float:
    """CPU seconds (user + system) of one child run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default="0.28.0", help="the baseline typer (default: 0.28.0, the last before pydantic)")
    parser.add_argument("--new", help="the typer measured against it (default: the newest pip finds)")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--target", help="folder holding ultralytics/ for status (default: a copy of the installed one)")
    args = parser.parse_args()

    from mhsa_patch.patching.discover import resolve

    envs = {}
    for wanted in (args.old, args.new):
        version, folder = typer_folder(wanted)
        assert typer_version(str(folder)) == version, f"{folder} does not hold typer {version}"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(folder), str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
        envs[version] = env
    new = version

    with tempfile.TemporaryDirectory() as tmp:
        source = resolve(args.target).target
        site = Path(tmp)
        shutil.copytree(source.package, site / "ultralytics", ignore=shutil.ignore_patterns("__pycache__"))
        py = [sys.executable, "-m", "mhsa_patch"]
        commands = {"--version": [*py, "--version"], "status": [*py, "status", "-t", str(site)]}
        times: dict[tuple[str, str], list[float]] = {(c, v): [] for c in commands for v in envs}
        for version, env in envs.items():  # one warm-up each: the bytecode caches are written once, not timed
            for cmd in commands.values():
                cpu_seconds(cmd, env)
        for _ in range(args.repeats):
            for name, cmd in commands.items():
                for version, env in envs.items():
                    times[name, version].append(cpu_seconds(cmd, env))

    med = statistics.median
    print(f"CPU seconds (user + system) per call, medians of {args.repeats}, Python {sys.version.split()[0]}, "
          f"ultralytics {source.version}")
    print(f"| mhsa-patch ... | typer {args.old} | typer {new} | ratio |")
    print("|---|---:|---:|---:|")
    for name in commands:
        old_t, new_t = med(times[name, args.old]), med(times[name, new])
        print(f"| `{name}` | {old_t:.3f} | {new_t:.3f} | {new_t / old_t:.2f} |")


if __name__ == "__main__":
    main()
