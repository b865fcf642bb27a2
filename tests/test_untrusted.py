"""An untrusted package folder: planted journals, symbolic links out of the package, and the lock between processes.

Every refusal is one line on stderr naming the file, exit 1, and nothing changed anywhere under the test's folder
(the package, and a victim file beside it that a planted journal points at). ``status`` never writes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import releases
from mhsa_patch.patching import engine
from mhsa_patch.patching.atomic import lock_file, sha256
from mhsa_patch.patching.journal import JOURNAL, MAX_JOURNAL_BYTES, Journal
from mhsa_patch.patching.target import TARGET_FILES, find_target
from helpers import assert_refused, checkout_env, cli, unchanged

STATES = ("applying", "applied", "reverting")
COMMANDS = ("status", "apply", "revert")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def site(tmp_path) -> Path:
    """tmp_path/site/ultralytics (the latest release) and tmp_path/victim.txt, which no command may touch."""
    releases.copy_release(releases.LATEST, tmp_path / "site")
    (tmp_path / "victim.txt").write_text("the victim's own text\n")
    return tmp_path / "site"


def entry(original: str, patched: bytes = b"patched") -> dict:
    return {"original": original, "original_sha256": sha256(original.encode()), "patched_sha256": sha256(patched)}


def journal(state: str, files: dict | None = None, **fields) -> dict:
    """A journal as apply writes it (hashes right), before a test spoils one field."""
    record = {
        "tool": "mhsa-patch",
        "tool_version": "0.1.0",
        "patch_digest": "0" * 64,
        "ultralytics_version": releases.LATEST,
        "layers": ["MHSA"],
        "state": state,
        "files": {"nn/tasks.py": entry("x = 1\n")} if files is None else files,
    }
    record.update(fields)
    return record


PWN = entry("pwned\n")

# name -> (what to plant, given the state and the test's folder; a text that the error line must contain)
BAD: dict[str, tuple] = {
    "traversal": (lambda s, tmp: journal(s, {"../../victim.txt": PWN}), "'../../victim.txt' is not one of the patched"),
    "absolute": (lambda s, tmp: journal(s, {str(tmp / "victim.txt"): PWN}), "is not one of the patched files"),
    "dotdot-inside": (lambda s, tmp: journal(s, {"nn/../../x": PWN}), "'nn/../../x' is not one of"),
    "backslash": (lambda s, tmp: journal(s, {"nn\\tasks.py": PWN}), "is not one of the patched files"),
    "dot-slash": (lambda s, tmp: journal(s, {"./nn/tasks.py": PWN}), "is not one of the patched files"),
    "hash-mismatch": (
        lambda s, tmp: journal(s, {"nn/tasks.py": {**entry("x = 1\n"), "original": "import os; os.system('boom')\n"}}),
        "original does not match its original_sha256",
    ),
    "hash-not-hex": (lambda s, tmp: journal(s, {"nn/tasks.py": {**PWN, "patched_sha256": "Z" * 64}}), "not a SHA-256"),
    "hash-uppercase": (
        lambda s, tmp: journal(s, {"nn/tasks.py": {**PWN, "original_sha256": PWN["original_sha256"].upper()}}),
        "not a SHA-256",
    ),
    "original-not-str": (lambda s, tmp: journal(s, {"nn/tasks.py": {**PWN, "original": 7}}), "original is int"),
    "entry-extra-key": (lambda s, tmp: journal(s, {"nn/tasks.py": {**PWN, "path": "/etc"}}), "unknown key 'path'"),
    "entry-missing-key": (lambda s, tmp: journal(s, {"nn/tasks.py": {"original": "x"}}), "lacks original_sha256"),
    "files-list": (lambda s, tmp: journal(s, [["nn/tasks.py", PWN]]), "files is not an object"),
    "layers-str": (lambda s, tmp: journal(s, layers="MHSA"), "layers is not a list"),
    "version-int": (lambda s, tmp: journal(s, ultralytics_version=8), "ultralytics_version is int"),
    "digest-short": (lambda s, tmp: journal(s, patch_digest="abc"), "patch_digest 'abc'"),
    "tool": (lambda s, tmp: journal(s, tool="other-tool"), "tool is 'other-tool'"),
    "top-list": (lambda s, tmp: [journal(s)], "the journal is not an object"),
    "duplicate-key": (
        lambda s, tmp: json.dumps(journal(s))[:-1] + ', "files": {"../../victim.txt": ' + json.dumps(PWN) + "}}",
        "duplicate key 'files'",
    ),
    "duplicate-file": (
        lambda s, tmp: json.dumps(journal(s))[:-2] + ', "nn/tasks.py": ' + json.dumps(PWN) + "}}",
        "duplicate key 'nn/tasks.py'",
    ),
    "malformed": (lambda s, tmp: json.dumps(journal(s))[:-3], "not JSON"),
    "nan": (lambda s, tmp: json.dumps(journal(s, tool_version=float("nan"))), "NaN is not JSON"),
    "not-utf8": (lambda s, tmp: json.dumps(journal(s)).encode().replace(b"0.1.0", b"\xff\xfe"), "not UTF-8"),
    # the reading in force per layer (docs/status.md): an object from the journal's layers to names the tool knows
    "readings-list": (lambda s, tmp: journal(s, readings=[["MHSA", "tutorial"]]), "readings is not an object"),
    "readings-layer": (lambda s, tmp: journal(s, readings={"../x": "tutorial"}), "readings entry '../x' is not one of"),
    "readings-other-layer": (lambda s, tmp: journal(s, readings={"BoT3": "base_modules"}), "readings entry 'BoT3'"),
    "readings-name": (lambda s, tmp: journal(s, readings={"MHSA": "os.system"}), "'os.system' is not a reading"),
    "readings-not-str": (lambda s, tmp: journal(s, readings={"MHSA": 1}), "readings entry MHSA: 1 is not a reading"),
    "nested": (lambda s, tmp: json.dumps(journal(s))[:-1] + ', "x": ' + "[" * 200_000 + "]" * 200_000 + "}", "not JSON"),
}


def plant(pkg: Path, content) -> Path:
    path = pkg / JOURNAL
    if isinstance(content, (dict, list)):
        content = json.dumps(content)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def assert_every_command_refuses(tmp: Path, pkg: Path, *needles: str) -> None:
    """status, apply and revert: one line naming the file, exit 1, and no change under tmp (mtimes included)."""
    before = releases.tree_state(tmp)
    for command in COMMANDS:
        line = assert_refused(cli(command, "-t", str(pkg)), *needles)
        assert ("nothing was changed" in line) == (command != "status"), line  # status never writes: never says it
        assert releases.tree_state(tmp) == before, command


@pytest.mark.parametrize("name", BAD)
def test_planted_journal_is_refused_in_every_state(site, name):
    make, needle = BAD[name]
    tmp, pkg = site.parent, site / "ultralytics"
    for state in STATES:
        path = plant(pkg, make(state, tmp))
        assert_every_command_refuses(tmp, pkg, f"{path}: not a valid mhsa-patch journal", needle)
    assert (tmp / "victim.txt").read_text() == "the victim's own text\n"


def test_unknown_state_and_the_issue_reproduction(site):
    tmp, pkg = site.parent, site / "ultralytics"
    plant(pkg, journal("done"))
    assert_every_command_refuses(tmp, pkg, "state 'done' is not one of applying, applied, reverting")
    # the report: state applying, an entry ../../victim.txt whose file exists, `status --target CLONE`
    plant(pkg, journal("applying", {"../../victim.txt": PWN, "nn/tasks.py": entry("x = 1\n")}))
    assert_every_command_refuses(tmp, pkg, "'../../victim.txt' is not one of the patched files")
    assert_every_command_refuses(tmp, site, "'../../victim.txt'")  # --target the folder holding ultralytics/
    assert (tmp / "victim.txt").read_text() == "the victim's own text\n"


@pytest.mark.parametrize("state", STATES)
def test_huge_journals_are_refused_without_reading_them(site, state):
    tmp, pkg = site.parent, site / "ultralytics"
    path = plant(pkg, journal(state))
    os.truncate(path, 2 * 2**30)  # sparse: 2 GiB of zeros after the JSON
    assert_every_command_refuses(tmp, pkg, str(path), f"{2 * 2**30} bytes, over the 16 MiB limit")
    text = json.dumps(journal(state))
    path.write_text(text[:-1] + ', "pad": "' + " " * (MAX_JOURNAL_BYTES - len(text)) + '"}')  # valid JSON, 16 MiB + 10
    assert_every_command_refuses(tmp, pkg, str(path), "over the 16 MiB limit")


def test_journal_that_is_not_a_regular_file(site):
    tmp, pkg = site.parent, site / "ultralytics"
    path = pkg / JOURNAL
    (tmp / "outside.json").write_text(json.dumps(journal("applying", {"nn/tasks.py": PWN})))
    path.symlink_to(tmp / "outside.json")
    assert_every_command_refuses(tmp, pkg, str(path), "a symbolic link to")
    path.unlink()
    os.mkfifo(path)  # an open without O_NONBLOCK would hang here
    assert_every_command_refuses(tmp, pkg, str(path), "not a regular file")
    path.unlink()
    path.mkdir()
    assert_every_command_refuses(tmp, pkg, str(path), "not a regular file")


def test_symlinked_target_file_pointing_outside_is_refused(site):
    tmp, pkg = site.parent, site / "ultralytics"
    tasks = pkg / "nn/tasks.py"
    shutil.copyfile(tasks, tmp / "tasks_outside.py")
    tasks.unlink()
    tasks.symlink_to(tmp / "tasks_outside.py")  # `nn/tasks.py -> /somewhere/else`
    assert_every_command_refuses(tmp, pkg, f"{tasks}: a symbolic link to {tmp / 'tasks_outside.py'}")
    tasks.unlink()
    tasks.symlink_to(tmp / "victim.txt")
    plant(pkg, journal("applying", {"nn/tasks.py": entry("x = 1\n", b"the victim's own text\n")}))
    assert_every_command_refuses(tmp, pkg, f"{tasks}: a symbolic link")
    (pkg / JOURNAL).unlink()
    tasks.unlink()
    tasks.symlink_to("../__init__.py")  # a link that stays inside is no regular file either
    assert_every_command_refuses(tmp, pkg, f"{tasks}: a symbolic link to ../__init__.py")


def test_symlinked_folder_pointing_outside_is_refused(site):
    """``nn/`` -> a folder outside: no read, no write, no stale temporary removed there."""
    tmp, pkg = site.parent, site / "ultralytics"
    shutil.move(str(pkg / "nn"), str(tmp / "nn_outside"))
    (pkg / "nn").symlink_to(tmp / "nn_outside", target_is_directory=True)
    (tmp / "nn_outside" / ".mhsa-patch-tasks.py.x.tmp").write_text("not ours to delete\n")
    needle = f"{pkg / 'nn/modules/conv.py'}: its folder resolves to {tmp / 'nn_outside' / 'modules'}, outside the package"
    assert_every_command_refuses(tmp, pkg, needle)
    # a valid interrupted journal whose hash matches the outside file: recovery would write the original there
    tasks = (tmp / "nn_outside" / "tasks.py").read_bytes()
    plant(pkg, journal("applying", {"nn/tasks.py": entry("x = 1\n", tasks)}))
    assert_every_command_refuses(tmp, pkg, "outside the package")


def test_target_given_through_a_symlink_is_resolved_once(site):
    """A --target reached through a link is fine: it is resolved once, and every write stays inside the real folder."""
    tmp, pkg = site.parent, site / "ultralytics"
    (tmp / "link").symlink_to(pkg, target_is_directory=True)
    r = cli("apply", "-t", str(tmp / "link"))
    assert r.exit_code == 0, r.output
    assert json.loads(cli("status", "-t", str(tmp / "link"), "--json").stdout)["path"] == str(pkg)
    assert cli("revert", "-t", str(tmp / "link")).exit_code == 0
    assert unchanged(pkg)


def test_huge_target_file_is_refused(site):
    tmp, pkg = site.parent, site / "ultralytics"
    os.truncate(pkg / "nn/tasks.py", 2 * 2**30)
    assert_every_command_refuses(tmp, pkg, f"{pkg / 'nn/tasks.py'}: {2 * 2**30} bytes, over the 4 MiB limit")


@pytest.mark.parametrize("state", ["applying", "reverting"])
def test_status_reports_a_valid_interrupted_run_and_writes_nothing(site, state):
    """A real interrupted run (half the files patched, journal applying or reverting): status only reports it."""
    tmp, pkg = site.parent, site / "ultralytics"
    target = find_target(pkg)
    engine.apply(target)
    journal_file = Journal(pkg)
    journal_file.write(journal_file.read().with_state(state))
    shutil.copyfile(releases.pristine(releases.LATEST) / TARGET_FILES[0], pkg / TARGET_FILES[0])  # half done
    before = releases.tree_state(tmp)
    for as_json in (False, True):
        r = cli("status", "-t", str(pkg), *(["--json"] if as_json else []))
        assert r.exit_code == 0, r.output
        assert releases.tree_state(tmp) == before  # status never writes, not even to recover
    assert json.loads(r.stdout)["journal"]["state"] == state
    verb, other = ("apply", "revert") if state == "applying" else ("revert", "apply")
    note = f"an interrupted {verb} was found (journal state '{state}'): run 'mhsa-patch {verb}' to finish it"
    assert any(n.startswith(note) and f"'mhsa-patch {other}'" in n for n in json.loads(r.stdout)["notes"])
    # only apply and revert recover
    r = cli(verb, "-t", str(pkg))
    assert r.exit_code == 0, r.output
    assert f"recovered from an interrupted {'apply' if state == 'applying' else 'revert'}" in r.stderr
    assert engine.status(target).state == ("applied" if verb == "apply" else "not-applied")
    cli("revert", "-t", str(pkg))
    assert unchanged(pkg)


# -- the lock: real processes ------------------------------------------------------------------------------------------

HOLD = (
    "import sys\n"
    "from pathlib import Path\n"
    "from mhsa_patch.patching.atomic import locked\n"
    "with locked(Path(sys.argv[1])):\n"
    "    print('held', flush=True)\n"
    "    sys.stdin.read()\n"  # until the test closes stdin
)


def hold_lock(pkg: Path) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(pkg)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=checkout_env(), text=True
    )
    assert holder.stdout.readline() == "held\n"
    return holder


def test_a_second_process_waits_for_the_lock_then_times_out_with_one_line(latest_pkg):
    stock = releases.tree_state(latest_pkg)
    holder = hold_lock(latest_pkg)
    try:
        cmd = [sys.executable, "-m", "mhsa_patch", "apply", "-t", str(latest_pkg)]
        started = time.monotonic()
        r = subprocess.run(cmd, env=checkout_env(MHSA_PATCH_LOCK_TIMEOUT="1"), capture_output=True, text=True, timeout=120)
        assert time.monotonic() - started >= 1
        assert r.returncode == 1 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
        assert f"another mhsa-patch is working on {latest_pkg} (lock held, waited 1 s" in r.stderr
        assert releases.tree_state(latest_pkg) == stock

        # status takes no lock: it answers while another run holds it
        r = subprocess.run([sys.executable, "-m", "mhsa_patch", "status", "-t", str(latest_pkg)], env=checkout_env(),
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr

        # with the default timeout the second run waits, and goes on once the first is done
        waiter = subprocess.Popen(cmd, env=checkout_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(3)
        assert waiter.poll() is None and releases.tree_state(latest_pkg) == stock
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0
    assert waiter.wait(timeout=120) == 0, waiter.stderr.read()
    assert engine.status(find_target(latest_pkg)).state == "applied"


def test_lock_file_lives_outside_the_package(latest_pkg):
    path = lock_file(latest_pkg)
    assert latest_pkg not in path.parents and path.name.endswith(".lock")
    assert lock_file(latest_pkg.parent / "." / "ultralytics") == path  # keyed by the resolved path
    engine.apply(find_target(latest_pkg))
    engine.revert(find_target(latest_pkg))
    assert unchanged(latest_pkg)  # no lock file (nor anything else) left in the package
    assert not path.exists()  # nor in the lock folder: the run removed its lock file


def test_stale_lock_files_are_pruned_and_held_ones_kept(latest_pkg, tmp_path):
    """Lock files left by killed runs (or by older versions, which kept them) go at the next run; one that another
    run holds stays."""
    other = releases.copy_release(releases.LATEST, tmp_path / "other")
    holder = hold_lock(other)  # holds its own lock file meanwhile
    try:
        folder = lock_file(latest_pkg).parent
        stale = [folder / f"{n:032x}.lock" for n in range(3)]
        for p in stale:
            p.touch()
        (folder / "notes.txt").touch()  # not a lock file of the tool: never touched
        engine.apply(find_target(latest_pkg))
        assert not any(p.exists() for p in stale)
        assert lock_file(other).exists() and (folder / "notes.txt").exists()
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0
    assert not lock_file(other).exists() and not lock_file(latest_pkg).exists()


def test_a_waiter_on_a_removed_lock_file_takes_the_new_one(latest_pkg):
    """The race of removing a flock file: B opens the lock file and waits; A removes it (holding the lock) and lets
    go; B gets the lock on a file without a name. B must notice and lock the file the path names, so that C, which
    creates a fresh file meanwhile, still waits for B."""
    a = hold_lock(latest_pkg)
    b = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(latest_pkg)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=checkout_env(), text=True
    )
    try:
        time.sleep(2)  # B has opened the file and is waiting on it
        a.stdin.close()
        assert a.wait(timeout=60) == 0
        assert b.stdout.readline() == "held\n"
        assert lock_file(latest_pkg).exists()  # B holds a file that the path names
        cmd = [sys.executable, "-m", "mhsa_patch", "apply", "-t", str(latest_pkg)]
        r = subprocess.run(cmd, env=checkout_env(MHSA_PATCH_LOCK_TIMEOUT="1"), capture_output=True, text=True, timeout=120)
        assert r.returncode == 1 and "lock held, waited 1 s" in r.stderr, r.stdout + r.stderr
    finally:
        b.stdin.close()
        assert b.wait(timeout=60) == 0
    assert not lock_file(latest_pkg).exists()
