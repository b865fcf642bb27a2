"""Survey: apply and revert the patch on every ultralytics release from 8.0.98 to 8.4.190.

    python examples/survey_releases.py                       # every release in the range (726; ~12 min, ~5 cached)
    python examples/survey_releases.py --every 25            # a quick run: every 25th release, and the last
    python examples/survey_releases.py --from 8.3.0 --to 8.3.50 --cache /tmp/wheels

The releases are those ``pip index versions ultralytics`` lists, kept between ``--from`` and ``--to`` (compared as
numbers; pre-releases and other non-numeric versions are left out). Each release's wheel is downloaded once into
``--cache`` (default ``~/.cache/mhsa-patch-tests/survey-wheels``; several ``pip download`` at a time), and only
``ultralytics/__init__.py`` and the three files the patch edits are extracted into a temporary folder. Nothing is
installed and no installed ultralytics is touched. On that copy, for each release:

    find_target    the copy is recognised as an ultralytics package of that version
    apply          ``engine.apply`` changes files, and ``engine.status(...).state`` is then "applied"
    compile        each patched file compiles
    re-apply       a second apply reports nothing to do and leaves every byte as it was
    revert         ``engine.revert`` restores each file byte for byte, and leaves no other file behind
                   (the journal ``.mhsa-patch-journal.json`` and any temporary file are gone)
    structural     apply, delete the journal, revert (the pieces found by their marks): byte for byte again

The engine part runs in a pool of 2 processes. A progress line is printed every 50 releases; the summary gives the
number checked, the number passed, and every failure as ``VERSION  STEP: error``. Exit code 1 if any release fails.

Standard library plus mhsa_patch only: neither torch nor ultralytics is imported.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import NamedTuple, Optional

from mhsa_patch.patching import engine
from mhsa_patch.patching.journal import JOURNAL
from mhsa_patch.patching.target import TARGET_FILES, find_target

FIRST, LAST = "8.0.98", "8.4.190"
DEFAULT_CACHE = Path("~/.cache/mhsa-patch-tests/survey-wheels")
DOWNLOAD_WORKERS = 8  # pip subprocesses at a time (network-bound)
CHECK_WORKERS = 2  # engine processes (CPU-bound: libcst parses)
PROGRESS_EVERY = 50
MEMBERS = ("__init__.py", *TARGET_FILES)  # what find_target and the engine read, relative to ultralytics/


class Outcome(NamedTuple):
    version: str
    step: Optional[str]  # None: passed
    error: str = ""


class StepFailed(Exception):
    """A check that did not hold; ``str()`` is one line."""


def numeric(version: str) -> Optional[tuple[int, ...]]:
    """``"8.0.98"`` -> ``(8, 0, 98)``; None for anything but dot-separated integers (pre-releases, local tags)."""
    return tuple(int(p) for p in version.split(".")) if re.fullmatch(r"\d+(\.\d+)*", version) else None


def one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


# ----------------------------------------------------------------------------------------------------------------------
# Releases and wheels
# ----------------------------------------------------------------------------------------------------------------------


def list_releases(first: str, last: str) -> list[str]:
    """The released versions between ``first`` and ``last`` (inclusive), oldest first, as pip lists them."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", "ultralytics"], capture_output=True, text=True
    )
    found = re.search(r"^Available versions:\s*(.+)$", proc.stdout, re.MULTILINE)
    if proc.returncode != 0 or not found:
        sys.exit(f"'pip index versions ultralytics' failed: {one_line(proc.stderr) or proc.stdout.strip()}")
    lo, hi = numeric(first), numeric(last)
    keep = [v for v in (v.strip() for v in found.group(1).split(",")) if numeric(v) and lo <= numeric(v) <= hi]
    return sorted(set(keep), key=numeric)


def cached_wheel(cache: Path, version: str) -> Optional[Path]:
    found = sorted(cache.glob(f"ultralytics-{version}-*.whl"))
    return found[0] if found else None


def download(cache: Path, version: str) -> Path:
    """The wheel of ``version`` in ``cache``, downloaded first if needed (into a private folder, then moved in,
    so that parallel or interrupted downloads never leave a partial wheel in the cache)."""
    wheel = cached_wheel(cache, version)
    if wheel is not None:
        return wheel
    staging = Path(tempfile.mkdtemp(prefix=f".download-{version}-", dir=cache))
    try:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
               "-q", "-d", str(staging), f"ultralytics=={version}"]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise StepFailed(one_line(proc.stderr) or f"pip exited with {proc.returncode}")
        wheels = list(staging.glob("ultralytics-*.whl"))
        if len(wheels) != 1:
            raise StepFailed(f"pip left {sorted(p.name for p in staging.iterdir())}, expected one ultralytics wheel")
        wheel = cache / wheels[0].name
        os.replace(wheels[0], wheel)
        return wheel
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------------------
# The engine checks (run in the worker processes)
# ----------------------------------------------------------------------------------------------------------------------


def read_files(root: Path) -> dict[str, bytes]:
    """Every file under ``root``, by relative path: the four extracted, plus anything the engine leaves."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def expect_same(root: Path, before: dict[str, bytes], when: str) -> None:
    after = read_files(root)
    extra = sorted(set(after) - set(before))
    if extra:
        raise StepFailed(f"{when}: files left behind: {', '.join(extra)}")
    missing = sorted(set(before) - set(after))
    if missing:
        raise StepFailed(f"{when}: files gone: {', '.join(missing)}")
    changed = [rel for rel in before if after[rel] != before[rel]]
    if changed:
        raise StepFailed(f"{when}: not byte-identical to the original: {', '.join(changed)}")


def check_release(version: str, wheel: str) -> Outcome:
    """All the checks of the module docstring on one release; the first one that fails is reported."""
    step = "extract"
    tmp = Path(tempfile.mkdtemp(prefix=f"mhsa-survey-{version}-"))
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = set(zf.namelist())
            for rel in MEMBERS:
                member = f"ultralytics/{rel}"
                if member not in names:
                    raise StepFailed(f"{member} not in {Path(wheel).name}")
                dest = tmp / member
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(zf.read(member))

        step = "find_target"
        target = find_target(tmp)
        if target.version != version:
            raise StepFailed(f"find_target read version {target.version!r}")
        original = read_files(tmp)
        package = Path(target.package)

        def patched() -> dict[str, bytes]:
            return {rel: target.file(rel).read_bytes() for rel in TARGET_FILES}

        step = "apply"
        if engine.apply(target).nothing_to_do:
            raise StepFailed("the first apply changed nothing")
        state = engine.status(target).state
        if state != "applied":
            raise StepFailed(f"status after apply is {state!r}, not 'applied'")

        step = "compile"
        after_apply = patched()
        for rel, data in after_apply.items():
            compile(data, f"ultralytics/{rel}", "exec")

        step = "re-apply"
        if not engine.apply(target).nothing_to_do:
            raise StepFailed("the second apply reported changes")
        if patched() != after_apply:
            raise StepFailed("the second apply changed bytes")

        step = "revert"
        engine.revert(target)
        expect_same(tmp, original, "after revert")

        step = "structural"
        engine.apply(target)
        journal = package / JOURNAL
        if not journal.is_file():
            raise StepFailed(f"no {JOURNAL} after apply")
        journal.unlink()
        engine.revert(target)
        expect_same(tmp, original, "after apply, journal deleted, revert")
        return Outcome(version, None)
    except Exception as e:  # PatchError, StepFailed, SyntaxError from compile, or anything unexpected
        message = one_line(str(e)) or type(e).__name__
        if not isinstance(e, StepFailed):
            message = f"{type(e).__name__}: {message}"
        return Outcome(version, step, message)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------------------------


class Progress:
    """Collects outcomes from the download threads and the pool's callback thread; prints every PROGRESS_EVERY."""

    def __init__(self, total: int, started: float):
        self.total, self.started = total, started
        self.outcomes: list[Outcome] = []
        self.lock = threading.Lock()

    def add(self, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)
            done = len(self.outcomes)
            if done % PROGRESS_EVERY == 0 or done == self.total:
                failed = sum(o.step is not None for o in self.outcomes)
                print(f"[{time.monotonic() - self.started:7.1f}s] {done}/{self.total} checked, {failed} failed",
                      flush=True)  # fmt: skip


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="first", default=FIRST, help=f"oldest release to check (default {FIRST})")
    parser.add_argument("--to", dest="last", default=LAST, help=f"newest release to check (default {LAST})")
    parser.add_argument("--every", type=int, default=1, metavar="N", help="check every N-th release, and the last")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"wheel folder (default {DEFAULT_CACHE})")
    args = parser.parse_args(argv)
    for v in (args.first, args.last):
        if numeric(v) is None:
            parser.error(f"{v!r} is not a version like 8.0.98")
    if args.every < 1:
        parser.error("--every must be 1 or more")

    started = time.monotonic()
    releases = list_releases(args.first, args.last)
    if not releases:
        sys.exit(f"no ultralytics release between {args.first} and {args.last}")
    chosen = releases[:: args.every]
    if chosen[-1] != releases[-1]:
        chosen.append(releases[-1])
    cache = args.cache.expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    print(f"{len(chosen)} of {len(releases)} releases from {releases[0]} to {releases[-1]}; wheels in {cache}",
          flush=True)  # fmt: skip

    progress = Progress(len(chosen), started)
    with multiprocessing.Pool(CHECK_WORKERS) as pool, ThreadPoolExecutor(DOWNLOAD_WORKERS) as downloads:
        pending = []
        futures = {downloads.submit(download, cache, v): v for v in chosen}
        for future in as_completed(futures):
            version = futures[future]
            try:
                wheel = future.result()
            except Exception as e:
                progress.add(Outcome(version, "download", one_line(str(e)) or type(e).__name__))
                continue
            pending.append(pool.apply_async(check_release, (version, str(wheel)), callback=progress.add))
        for result in pending:
            result.wait()
        for result in pending:
            result.get()  # re-raise what escaped a worker (check_release catches everything it can)

    outcomes = sorted(progress.outcomes, key=lambda o: numeric(o.version))
    failures = [o for o in outcomes if o.step is not None]
    print(f"\nchecked {len(outcomes)} releases ({outcomes[0].version} .. {outcomes[-1].version}), "
          f"passed {len(outcomes) - len(failures)}, failed {len(failures)}, "
          f"in {time.monotonic() - started:.0f}s")  # fmt: skip
    for o in failures:
        print(f"  {o.version:<10} {o.step}: {o.error}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
