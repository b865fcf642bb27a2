"""The fast tier's strength, shown: deliberate bugs put into a copy of the tool, one at a time, each caught.

    python tests/mutants.py                  # every mutant (CI runs it after the suite)
    python tests/mutants.py --list           # the mutants, what each breaks and where
    python tests/mutants.py --only holm-dropped --only student     # some of them

Each mutant is one exact text replacement (``old`` -> ``new``) in one file of the tool. The script copies this
checkout to a temporary folder: ``mhsa_patch/``, ``patches/`` and ``tests/``, and the rest of the files git lists,
since tests read them (``pyproject.toml`` maps ``patches/`` and holds pytest's settings; the READMEs, ``docs/`` and
``.gitignore`` are checked). It checks that every mutant's ``old`` text occurs exactly once in the copy and that the
tests named to catch it are in the fast tier, then, for each mutant in turn, writes it into the copy, runs the fast
tier on the copy and puts the file back.

The run of the fast tier is ``python -m pytest -m "not slow" -x -p no:randomly -q`` in two steps: first the tests
most likely to catch the mutant (``Mutant.tests``), then, only if they all pass, every test of the tier. That is
what one run of the whole tier with those tests first would find (``-x`` stops at the first failure), without
collecting the tier's 900 tests for every mutant; pytest 9 cannot be told to run some files first anyway (``pytest
tests/test_x.py tests`` runs the folder in its own order). A mutant is killed when a test fails, and survives when
the whole tier passes. At the end the tests that killed them run once more on the unmutated copy: a kill by a test
that fails anyway proves nothing. One line per mutant, a summary line; exit 0 when every mutant is killed, else 1.

The checkout itself is never written. Bytecode goes to a cache folder inside the temporary folder
(``PYTHONPYCACHEPREFIX``), so that the copy compiles once and a mutated file is compiled again; nothing gets a
``__pycache__``, neither the copy nor the environment's packages.

A script beside the tests it measures, not a test module (pytest collects ``test_*.py`` only). A mutant that no
longer applies (its ``old`` text is gone or occurs twice: the code moved), or whose tests are gone, stops the script
before anything runs: update the mutant to the code's new text, keeping the bug it puts in. A surviving mutant asks
for a better test in the fast tier, never a weaker mutant. docs/testing.md keeps the table of mutants, the test that
kills each and its time.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # this checkout: read, never written
FALLBACK = ("mhsa_patch", "patches", "tests", "pyproject.toml", "README.md", "README.zh-CN.md", "docs", "examples",
            ".gitignore")  # what is copied where git cannot list the checkout
PYTEST = ["-m", "pytest", "-p", "no:randomly", "-q", "-p", "no:cacheprovider"]
FAST_TIER = ["-m", "not slow", "-x"]  # the fast tier, stopping at the first failure


@dataclass(frozen=True)
class Mutant:
    name: str
    what: str  # the bug, in words
    path: str  # the file, relative to the checkout
    old: str
    new: str
    tests: tuple[str, ...]  # the fast tests most likely to kill it: node ids (a test function's covers its params)


def in_file(file: str, *names: str) -> tuple[str, ...]:
    return tuple(f"tests/{file}::{name}" for name in names)


MUTANTS = (
    Mutant(
        "map50-swap", "map50 and map50_95 swapped where the child's metrics become the record",
        "mhsa_patch/child/metrics.py",
        '_KINDS = (("mAP50", "map50"), ("mAP50-95", "map50_95"),',
        '_KINDS = (("mAP50", "map50_95"), ("mAP50-95", "map50"),',
        in_file("test_ablate_grid.py", "test_each_metric_lands_in_its_own_column_and_best_epoch_is_the_peak")
        + in_file("test_ablate_report.py", "test_metric_columns_of_every_task_from_ultralytics_own_keys"),
    ),
    Mutant(
        "student", "Student's t-test in place of Welch's",
        "mhsa_patch/ablate/stats.py",
        "res = stats.ttest_ind(a, b, equal_var=False)",
        "res = stats.ttest_ind(a, b, equal_var=True)",
        in_file("test_ablate_report.py",
              "test_welch_p_interval_and_df_equal_the_hand_derivation_with_unequal_variances_and_n"),
    ),
    Mutant(
        "holm-dropped", "Holm's adjustment dropped: each comparison read at its raw p",
        "mhsa_patch/ablate/stats.py",
        "    adjusted = holm([row[4].p for row in tested])",
        "    adjusted = [row[4].p for row in tested]",
        in_file("test_ablate_report.py", "test_the_reading_comes_from_holms_p_over_every_comparison_of_the_table"),
    ),
    Mutant(
        "best-epoch", "best_epoch off by one: ultralytics' 0-based trainer.epoch committed as the best epoch",
        "mhsa_patch/child/train.py",
        "state.update(best=best, best_epoch=n)",
        "state.update(best=best, best_epoch=int(trainer.epoch))",
        in_file("test_ablate_grid.py", "test_the_child_commits_the_peak_as_best_epoch_and_an_early_stop_as_one"),
    ),
    Mutant(
        "usage-exit-1", "a usage error (ablate --imgsz 33) raised as a refusal: exit 1 instead of 2",
        "mhsa_patch/ablate/runner.py",
        'raise UsageError(f"--imgsz {imgsz}: must be a multiple of 32, at least 32")',
        'raise PatchError(f"--imgsz {imgsz}: must be a multiple of 32, at least 32")',
        in_file("test_ablate_options.py", "test_bad_option_values_are_usage_errors_exit_2"),
    ),
    Mutant(
        "fork-anchor", "the parse_model chain found only where it ends in an else (a fork's chain without one is not)",
        "mhsa_patch/patching/edits/branch.py",
        "if over >= 2 and (best is None or over > best[0]):",
        "if over >= 2 and chain[-1].orelse is not None and (best is None or over > best[0]):",
        in_file("test_edits.py", "test_branch_is_found_by_structure_whatever_the_else_does"),
    ),
    Mutant(
        "status-writes", "status recovers an interrupted apply or revert (writes the package) instead of reporting it",
        "mhsa_patch/patching/engine.py",
        "    data = Journal(target.package).read()\n    notes = _interrupted(data)\n",
        "    notes = _recover(target, Journal(target.package))\n    data = Journal(target.package).read()\n"
        "    notes += _interrupted(data)\n",
        in_file("test_untrusted.py", "test_status_reports_a_valid_interrupted_run_and_writes_nothing"),
    ),
    Mutant(
        "revert-byte", "revert leaves one byte behind: a newline after the original text",
        "mhsa_patch/patching/engine.py",
        'new = entry.original.encode("utf-8")',
        'new = entry.original.encode("utf-8") + b"\\n"',
        in_file("test_engine.py", "test_properties_on_real_release_files"),
    ),
    Mutant(
        "lint-shift", "the lint skips an index comment shifted by one row (the usual trace of one inserted row)",
        "mhsa_patch/modelyaml/lint.py",
        "if cm and int(cm.group(1)) != r.index and",
        "if cm and abs(int(cm.group(1)) - r.index) > 1 and",
        in_file("test_lint.py", "test_mhsa_inserted_before_sppf_without_renumbering"),
    ),
    Mutant(
        "loader-global", "the restricted loader accepts one more global: torch.load (plain pickle of another file)",
        "mhsa_patch/child/safe_load.py",
        '"torch": ("Size", "device"),',
        '"torch": ("Size", "device", "load"),',
        in_file("test_safe_load.py", "test_a_checkpoint_may_call_nothing_that_loads_runs_or_writes"),
    ),
    Mutant(
        "damaged-deleted", "a run folder the tool cannot read deleted instead of moved aside",
        "mhsa_patch/ablate/runstate.py",
        "    os.rename(run_dir, dest)\n",
        '    __import__("shutil").rmtree(run_dir)\n',
        in_file("test_ablate_grid.py",
              "test_a_finished_run_whose_result_cannot_be_read_is_moved_aside_and_trained_again"),
    ),
    Mutant(
        "lock-ignored", "the experiment lock ignores a live holder: a refused flock read as taken",
        "mhsa_patch/ablate/lock.py",
        "    except BlockingIOError:\n        return False\n",
        "    except BlockingIOError:\n        return True\n",
        in_file("test_ablate_grid.py",
              "test_a_held_lock_refuses_naming_host_pid_and_device_and_a_dead_holders_is_taken_over"),
    ),
    Mutant(
        "journal-layer", "a user layer's journal record not validated: its module text is trusted without its header",
        "mhsa_patch/patching/userlayers.py",
        "            if verified(self.text) != self.name:\n",
        "            if not self.text:\n",
        in_file("test_user_layers.py", "test_a_planted_journal_entry_for_a_user_layer_is_refused_and_nothing_written"),
    ),
    Mutant(
        "link-followed", "a symlinked folder followed out of the package (paths compared unresolved)",
        "mhsa_patch/patching/atomic.py",
        "    return os.path.normcase(os.path.realpath(path))",
        "    return os.path.normcase(os.path.abspath(path))",
        in_file("test_untrusted.py", "test_symlinked_folder_pointing_outside_is_refused"),
    ),
    Mutant(
        "storage-in-place", "--storage URI uploads an epoch's archive straight to its final name (a reader may see half)",
        "mhsa_patch/ablate/cluster/store.py",
        "        fs.pipe_file(tmp, blob)\n        fs.mv(tmp, final)\n",
        "        fs.pipe_file(final, blob)\n",
        in_file("test_ablate_storage.py", "test_a_uri_store_keeps_the_newest_whole_epoch_and_gives_it_back"),
    ),
)


# ----------------------------------------------------------------------------------------------------------------------


def checkout_files() -> list[str]:
    """The checkout's files as git sees them (tracked, and untracked ones it does not ignore): what a clone holds,
    plus the new files of work in progress. Without git: the tool, its tests and what they read."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, check=True).stdout.decode("utf-8", "surrogateescape")
    except (OSError, subprocess.CalledProcessError):
        return [p.relative_to(ROOT).as_posix() for name in FALLBACK for p in [ROOT / name, *(ROOT / name).rglob("*")]
                if p.is_file() and "__pycache__" not in p.parts]
    return [f for f in out.split("\0") if f]


def copy_checkout(dest: Path) -> None:
    for rel in checkout_files():
        src = ROOT / rel
        if src.is_file() or src.is_symlink():  # not a file deleted from the work tree, nor a submodule's folder
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel, follow_symlinks=False)


def not_applying(copy: Path, mutants) -> list[str]:
    """Why each mutant that no longer applies does not (its ``old`` text must occur exactly once)."""
    problems = []
    for m in mutants:
        path = copy / m.path
        count = path.read_text(encoding="utf-8").count(m.old) if path.is_file() else -1
        if count != 1:
            where = f"{m.path} is gone" if count < 0 else f"its old text occurs {count} times in {m.path}"
            problems.append(f"mutant {m.name} no longer applies ({where}): the code moved; update its old/new text "
                            "in tests/mutants.py to the code's new text, keeping the bug it puts in")
    return problems


def tests_gone(copy: Path, work: Path, env: dict, mutants) -> list[str]:
    """Why each mutant whose tests are not all in the fast tier (renamed, removed, marked slow) is not ready."""
    ids = list(dict.fromkeys(t for m in mutants for t in m.tests))
    rc, out, _ = run_pytest(copy, work, env, ["--collect-only", "-m", "not slow", *ids], 600)
    collected = [ln.strip() for ln in out.splitlines() if "::" in ln and not ln.startswith(("ERROR", "FAILED"))]
    problems = []
    for m in mutants:
        for t in m.tests:
            if not any(c == t or c.startswith(t + "[") or c.startswith(t + "::") for c in collected):
                problems.append(f"mutant {m.name}: its test {t} is not in the fast tier (renamed, removed or marked "
                                "slow?); name the fast test that catches it in tests/mutants.py")
    if rc not in (0, 4, 5) and not problems:
        problems.append(f"collecting the mutants' tests failed (pytest exit {rc}):\n{tail(out)}")
    return problems


def forget_bytecode(cache: Path, path: Path) -> None:
    """Drop ``path``'s compiled copies from the bytecode cache, so that its new text is what runs."""
    folder = cache / path.parent.resolve().relative_to(path.anchor)
    for pyc in folder.glob(f"{path.stem}.*.pyc"):
        pyc.unlink()


def run_pytest(copy: Path, work: Path, env: dict, args: list[str], timeout: float):
    """pytest in the copy: (exit code, None on a timeout; its output; seconds)."""
    t0 = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, *PYTEST, f"--basetemp={work / 'basetemp'}", *args], cwd=copy, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
        return proc.returncode, proc.stdout, time.monotonic() - t0
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        return None, out, time.monotonic() - t0


def failures(output: str) -> list[str]:
    """The node ids pytest's short summary names as failed or in error (for a collection error, the file)."""
    out = []
    for line in output.splitlines():
        m = re.match(r"(FAILED|ERROR) (.+)", line)
        if m:
            out.append(m.group(2).split(" - ", 1)[0].strip())
    return out


def tail(output: str, n: int = 15) -> str:
    return "\n".join("    " + ln for ln in output.rstrip().splitlines()[-n:])


def against_fast_tier(copy: Path, work: Path, env: dict, m: Mutant, timeout: float):
    """The fast tier on the mutated copy, its likely tests first: (exit code, output, seconds)."""
    rc, out, secs = run_pytest(copy, work, env, [*FAST_TIER, *m.tests], timeout)
    if rc != 0:
        return rc, out, secs
    rc, out, more = run_pytest(copy, work, env, [*FAST_TIER, "tests"], timeout)
    return rc, out, secs + more


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python tests/mutants.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", metavar="NAME", help="run this mutant only (repeatable)")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--timeout", type=float, default=900.0, metavar="S",
                    help="seconds one run of pytest may take (default 900)")
    a = ap.parse_args(argv)

    if a.list:
        for m in MUTANTS:
            print(f"{m.name:16} {m.path:38} {m.what}")
        return 0
    chosen = list(MUTANTS)
    if a.only:
        unknown = sorted(set(a.only) - {m.name for m in MUTANTS})
        if unknown:
            print(f"ERROR ❌ usage: unknown mutant {', '.join(unknown)} (see --list)", file=sys.stderr)
            return 2
        chosen = [m for m in MUTANTS if m.name in a.only]

    t_start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="mhsa-patch-mutants-"))
    try:
        copy, cache = work / "checkout", work / "pycache"
        copy.mkdir()
        copy_checkout(copy)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(cache)
        problems = not_applying(copy, chosen) or tests_gone(copy, work, env, chosen)
        if problems:
            for p in problems:
                print(f"ERROR ❌ {p}", file=sys.stderr)
            return 1
        print(f"{len(chosen)} mutants, each against the fast tier (-m 'not slow' -x) on a copy in {work}", flush=True)

        killed: dict[str, tuple[str, float]] = {}
        bad: list[str] = []
        for m in chosen:
            path = copy / m.path
            original, st = path.read_bytes(), path.stat()
            path.write_bytes(original.replace(m.old.encode("utf-8"), m.new.encode("utf-8"), 1))
            forget_bytecode(cache, path)
            try:
                rc, out, secs = against_fast_tier(copy, work, env, m, a.timeout)
            finally:
                path.write_bytes(original)
                os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
                forget_bytecode(cache, path)
            failed = failures(out)
            if rc in (1, 2) and failed:
                killed[m.name] = (failed[0], secs)
                print(f"killed    {m.name:16} by {failed[0]}  ({secs:.1f} s)", flush=True)
            elif rc == 0:
                bad.append(m.name)
                print(f"SURVIVED  {m.name:16} the whole fast tier passed with {m.what} ({m.path}): add a fast test "
                      f"that catches it  ({secs:.1f} s)", flush=True)
            else:
                bad.append(m.name)
                why = f"timed out after {secs:.0f} s" if rc is None else f"pytest exited {rc} naming no failed test"
                print(f"UNDECIDED {m.name:16} {why}:\n{tail(out)}", flush=True)

        # A kill means something only if that test passes on the tool as it is.
        if killed:
            ids = list(dict.fromkeys(test for test, _ in killed.values()))
            rc, out, secs = run_pytest(copy, work, env, ids, a.timeout)
            if rc == 0:
                print(f"control   the {len(ids)} killing tests pass on the unmutated copy  ({secs:.1f} s)", flush=True)
            else:
                broken = set(failures(out)) or set(ids)
                for name, (test, _) in killed.items():
                    if test in broken:
                        bad.append(name)
                        print(f"UNDECIDED {name:16} {test} fails on the unmutated copy too: its kill proves nothing",
                              flush=True)
                print(tail(out), flush=True)

        n_killed = len([n for n in killed if n not in bad])
        summary = f"{len(chosen)} mutants: {n_killed} killed, {len(chosen) - n_killed} not"
        if bad:
            summary += f" ({', '.join(dict.fromkeys(bad))})"
        print(f"{summary}; {time.monotonic() - t_start:.0f} s in all", flush=True)
        return 0 if not bad else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
