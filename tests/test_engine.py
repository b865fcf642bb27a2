"""apply / revert / status on copies of real releases: exactness, idempotence, conflicts, drift, crashes, bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import releases
from helpers import assert_imports_neither_torch_nor_ultralytics, assert_refused, cli, unchanged
from reference_layers import TUTORIAL_SOURCE
from mhsa_patch.patching import atomic, engine, journal
from mhsa_patch.errors import PatchError
from mhsa_patch.patching.target import TARGET_FILES, find_target

# The matrix plus one release of each other layout in shared/guides/ultralytics-layouts.md.
LAYOUTS = (*releases.MATRIX, "8.0.200", "8.1.47", "8.3.253", "8.4.100")



@pytest.mark.parametrize("version", LAYOUTS)
def test_properties_on_real_release_files(tmp_path, version):
    """revert(apply(x)) == x and apply(apply(x)) == apply(x), over each layout's real files."""
    pkg = releases.copy_release(version, tmp_path)
    target = find_target(tmp_path)
    assert target.version == version and engine.status(target).state == "not-applied"

    first = engine.apply(target)
    assert [c.rel for c in first.changes] == list(TARGET_FILES)
    applied = releases.tree_bytes(pkg)
    assert engine.status(target).state == "applied"
    for rel in TARGET_FILES:  # every new text compiles
        compile((pkg / rel).read_bytes(), rel, "exec")

    assert engine.apply(target).nothing_to_do
    assert releases.tree_bytes(pkg) == applied

    engine.revert(target)
    assert unchanged(pkg, version)  # byte for byte, and no file of the tool's left behind

    # the structural path (no journal: say it was deleted) gives the same bytes
    engine.apply(target)
    (pkg / journal.JOURNAL).unlink()
    assert engine.status(target).state == "applied"
    engine.revert(target)
    assert unchanged(pkg, version)


def test_cli_apply_status_revert(latest_pkg):
    site = str(latest_pkg.parent)
    r = cli("status", "--target", site, "--json")
    assert r.exit_code == 0
    st = json.loads(r.stdout)
    assert st["state"] == "not-applied"
    assert st["ultralytics_version"] == releases.LATEST and st["path"] == str(latest_pkg)
    assert set(st["files"]) == set(TARGET_FILES)

    r = cli("apply", "--target", site)
    assert r.exit_code == 0, r.output
    assert "nn/tasks.py" in r.stdout
    st = json.loads(cli("status", "--target", site, "--json").stdout)
    assert st["state"] == "applied"
    assert all(p["state"] == "marked" for f in st["files"].values() for p in f["pieces"])

    before = releases.tree_bytes(latest_pkg)
    r = cli("apply", "--target", site)
    assert r.exit_code == 0 and "nothing to do" in r.stdout
    assert releases.tree_bytes(latest_pkg) == before

    r = cli("status", "--target", str(latest_pkg))  # the package folder itself works too
    assert r.exit_code == 0 and "applied" in r.stdout

    r = cli("revert", "--target", site)
    assert r.exit_code == 0
    assert "need the patch to load" in r.stderr
    assert unchanged(latest_pkg)
    r = cli("revert", "--target", site)
    assert r.exit_code == 0 and "nothing to do" in r.stdout


def test_dry_run_prints_a_diff_and_writes_nothing(latest_pkg):
    r = cli("apply", "--dry-run", "-t", str(latest_pkg))
    assert r.exit_code == 0
    assert "+++ b/ultralytics/nn/tasks.py" in r.stdout
    assert "+        elif m is MHSA:  # mhsa-patch" in r.stdout
    assert unchanged(latest_pkg)

    cli("apply", "-t", str(latest_pkg))
    applied = releases.tree_bytes(latest_pkg)
    r = cli("revert", "--dry-run", "-t", str(latest_pkg))
    assert r.exit_code == 0 and "-class MHSA(nn.Module):" in r.stdout
    assert releases.tree_bytes(latest_pkg) == applied


TUTORIAL_CLASS = "\n" + TUTORIAL_SOURCE  # the tutorial's class, as its readers paste it


def paste_tutorial(pkg: Path) -> None:
    """What the tutorial's readers do by hand (text edits, as they make them)."""
    conv = pkg / "nn/modules/conv.py"
    conv.write_text(conv.read_text() + TUTORIAL_CLASS)
    tasks = pkg / "nn/tasks.py"
    text = tasks.read_text()
    text = text.replace("from ultralytics.nn.modules import (\n", "from ultralytics.nn.modules import (\n    MHSA,\n", 1)
    text = text.replace(
        "        else:\n            c2 = ch[f]\n",
        "        elif m is MHSA:\n            args = [ch[f], *args]\n        else:\n            c2 = ch[f]\n",
        1,
    )
    tasks.write_text(text)


def test_hand_pasted_tutorial_is_a_conflict_and_force_replaces_it(latest_pkg):
    paste_tutorial(latest_pkg)
    pasted = releases.tree_bytes(latest_pkg)
    st = json.loads(cli("status", "-t", str(latest_pkg), "--json").stdout)
    assert st["state"] == "conflict"

    r = cli("apply", "-t", str(latest_pkg))
    assert r.exit_code == 1
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.output
    assert "nn/modules/conv.py:" in r.stderr and "--force" in r.stderr
    assert releases.tree_bytes(latest_pkg) == pasted

    r = cli("apply", "--force", "-t", str(latest_pkg))
    assert r.exit_code == 0, r.output
    assert engine.status(find_target(latest_pkg)).state == "applied"
    assert (latest_pkg / "nn/tasks.py").read_text().count("MHSA") == 2  # the marked import and `elif m is MHSA`, nothing else

    cli("revert", "-t", str(latest_pkg))
    assert releases.tree_bytes(latest_pkg) == pasted  # an exact undo: the hand-pasted pieces come back


def test_hand_pasted_bot3_is_a_conflict_and_force_replaces_it(latest_pkg):
    """BoT3 pasted by hand (its two classes, unmarked, in conv.py; registered in tasks.py) is handled as MHSA is."""
    import ast

    source = (Path(__file__).resolve().parent.parent / "patches" / "bot3.py").read_text()
    classes = [n for n in ast.parse(source).body if isinstance(n, ast.ClassDef)]
    pasted_classes = "".join("\n\n" + ast.get_source_segment(source, c) + "\n" for c in classes)
    conv = latest_pkg / "nn/modules/conv.py"
    conv.write_text(conv.read_text() + pasted_classes)
    tasks = latest_pkg / "nn/tasks.py"
    text = tasks.read_text().replace("from ultralytics.nn.modules import (\n", "from ultralytics.nn.modules import (\n    BoT3,\n", 1)
    tasks.write_text(text.replace("        elif m is AIFI:", "        elif m is BoT3:\n            args = [ch[f], *args]\n        elif m is AIFI:", 1))
    pasted = releases.tree_bytes(latest_pkg)

    st = json.loads(cli("status", "-t", str(latest_pkg), "--json").stdout)
    unmarked = {(rel, p["layer"], p["edit"]) for rel, f in st["files"].items() for p in f["pieces"] if p["state"] == "unmarked"}
    assert st["state"] == "conflict"
    assert {("nn/modules/conv.py", "BoT3", "class"), ("nn/tasks.py", "BoT3", "import"), ("nn/tasks.py", "BoT3", "branch")} <= unmarked
    r = cli("apply", "-t", str(latest_pkg))
    assert_refused(r, "BoT3", "--force")
    assert releases.tree_bytes(latest_pkg) == pasted

    assert cli("apply", "--force", "-t", str(latest_pkg)).exit_code == 0
    assert engine.status(find_target(latest_pkg)).state == "applied"
    assert (latest_pkg / "nn/tasks.py").read_text().count("BoT3") == 2  # the marked import and `elif m is BoT3`
    cli("revert", "-t", str(latest_pkg))
    assert releases.tree_bytes(latest_pkg) == pasted  # the hand-pasted BoT3 comes back


def test_revert_keeps_user_edits_made_after_apply(latest_pkg):
    engine.apply(find_target(latest_pkg))
    tasks = latest_pkg / "nn/tasks.py"
    tasks.write_text(tasks.read_text() + "\n# my own note\n")
    st = engine.status(find_target(latest_pkg))
    assert st.state == "applied" and any("edited since apply" in n for n in st.notes)
    engine.revert(find_target(latest_pkg))
    stock = (releases.pristine(releases.LATEST) / "nn/tasks.py").read_text()
    assert tasks.read_text() == stock + "\n# my own note\n"
    assert not (latest_pkg / journal.JOURNAL).exists()


def test_user_edits_survive_a_second_apply_then_revert(latest_pkg):
    target = find_target(latest_pkg)
    engine.apply(target)
    tasks = latest_pkg / "nn/tasks.py"
    tasks.write_text(tasks.read_text() + "\n# my own note\n")
    assert engine.apply(target).nothing_to_do
    engine.revert(target)
    stock = (releases.pristine(releases.LATEST) / "nn/tasks.py").read_text()
    assert tasks.read_text() == stock + "\n# my own note\n"
    assert engine.status(target).state == "not-applied"


def test_drift_after_reinstall_is_reported_and_apply_repairs_it(latest_pkg):
    target = find_target(latest_pkg)
    engine.apply(target)
    for rel in TARGET_FILES:  # `pip install --force-reinstall ultralytics` puts the stock files back
        shutil.copyfile(releases.pristine(releases.LATEST) / rel, latest_pkg / rel)
    engine.revert(target)  # nothing to restore: the stock files stay, the stale journal goes
    assert unchanged(latest_pkg)
    engine.apply(target)
    for rel in TARGET_FILES:
        shutil.copyfile(releases.pristine(releases.LATEST) / rel, latest_pkg / rel)
    st = engine.status(target)
    assert st.state == "not-applied" and any(n.startswith("drift") for n in st.notes)
    assert engine.revert(target, dry_run=True).nothing_to_do  # the old journal is never restored over new files
    engine.apply(target)
    assert engine.status(target).state == "applied"
    engine.revert(target)
    assert unchanged(latest_pkg)


def test_partial_state_is_reported_and_completed(latest_pkg):
    target = find_target(latest_pkg)
    engine.apply(target)
    shutil.copyfile(releases.pristine(releases.LATEST) / "nn/tasks.py", latest_pkg / "nn/tasks.py")
    st = engine.status(target)
    assert st.state == "partial"
    assert {f.rel: f.state for f in st.files}["nn/tasks.py"] == "not-applied"
    engine.apply(target)
    assert engine.status(target).state == "applied"
    engine.revert(target)
    assert unchanged(latest_pkg)


def test_crlf_and_utf8_are_kept(latest_pkg):
    for rel in TARGET_FILES:
        p = latest_pkg / rel
        p.write_bytes(p.read_bytes().replace(b"\n", b"\r\n"))
    stock = releases.tree_bytes(latest_pkg)
    engine.apply(find_target(latest_pkg))
    for rel in TARGET_FILES:
        data = (latest_pkg / rel).read_bytes()
        assert b"\n" not in data.replace(b"\r\n", b"")
        assert "🚀".encode() in data
    engine.revert(find_target(latest_pkg))
    assert releases.tree_bytes(latest_pkg) == stock


class Killed(BaseException):
    """Stands for the process dying: nothing after it runs (BaseException skips `except Exception`)."""


def interrupted_state_is_reported_without_writing(pkg: Path) -> bool:
    """status after a killed run: it writes nothing, and reports an interrupted run (True) or a whole state."""
    before = releases.tree_state(pkg)
    st = engine.status(find_target(pkg))
    assert releases.tree_state(pkg) == before  # status never writes, not even to recover
    interrupted = st.journal is not None and st.journal.state in ("applying", "reverting")
    if interrupted:
        verb = "apply" if st.journal.state == "applying" else "revert"
        assert any(n.startswith(f"an interrupted {verb} was found") for n in st.notes), st.notes
    else:
        assert st.state in ("applied", "not-applied"), st.state
    return interrupted


@pytest.mark.parametrize("action", ["apply", "revert"])
def test_killed_at_any_write_leaves_applied_or_not_applied(latest_pkg, monkeypatch, action):
    """Kill before each os.replace in turn (journal writes and file writes); status reports, apply or revert recover."""
    target = find_target(latest_pkg)
    real_replace = os.replace
    k = 0
    seen = set()
    while True:
        k += 1
        if action == "revert":
            engine.apply(target)
        calls = {"n": 0}

        def dying_replace(src, dst, _k=k):
            calls["n"] += 1
            if calls["n"] == _k:
                raise Killed
            real_replace(src, dst)

        monkeypatch.setattr(atomic.os, "replace", dying_replace)
        try:
            getattr(engine, action)(target)
            finished = True
        except Killed:
            finished = False
        monkeypatch.setattr(atomic.os, "replace", real_replace)
        interrupted = interrupted_state_is_reported_without_writing(latest_pkg)
        seen.add(interrupted)
        if finished:
            assert not interrupted
            assert engine.status(target).state == ("applied" if action == "apply" else "not-applied")
        if interrupted and k % 2:  # apply recovers (rolls back), then applies
            result = engine.apply(target)
            assert any(n.startswith("recovered from an interrupted") for n in result.notes)
            assert engine.status(target).state == "applied"
        result = engine.revert(target)  # recovers, or reverts what apply finished
        assert not interrupted or k % 2 or any(n.startswith("recovered from") for n in result.notes)
        assert unchanged(latest_pkg), (action, k)
        if finished:
            break
    assert k >= 4  # journal + 3 files (+ journal) were each interrupted once
    assert seen == {True, False}  # some kills left a journal applying/reverting behind, for status to report


@pytest.mark.parametrize("delay", [0.3, 0.45, 0.6, 0.75, 0.9])
def test_sigkill_during_apply(latest_pkg, delay):
    """A real SIGKILL at several instants of a real `mhsa-patch apply` process; status reports, revert recovers."""
    proc = subprocess.Popen([sys.executable, "-m", "mhsa_patch", "apply", "-t", str(latest_pkg)])
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    target = find_target(latest_pkg)
    if interrupted_state_is_reported_without_writing(latest_pkg) and delay > 0.5:
        engine.apply(target)  # finishing the interrupted apply
        assert engine.status(target).state == "applied"
    engine.revert(target)
    assert unchanged(latest_pkg)


def test_concurrent_applies_and_reverts_serialize(latest_pkg):
    cmd = [sys.executable, "-m", "mhsa_patch"]
    procs = [subprocess.Popen([*cmd, "apply", "-t", str(latest_pkg)], stdout=subprocess.DEVNULL) for _ in range(4)]
    assert all(p.wait() == 0 for p in procs)
    assert engine.status(find_target(latest_pkg)).state == "applied"
    assert (latest_pkg / "nn/modules/conv.py").read_text().count("class MHSA(") == 1
    procs = [subprocess.Popen([*cmd, "revert", "-t", str(latest_pkg)], stdout=subprocess.DEVNULL) for _ in range(3)]
    assert all(p.wait() == 0 for p in procs)
    assert unchanged(latest_pkg)


def test_engine_commands_do_not_import_torch_or_ultralytics(latest_pkg):
    code = (
        "import sys\n"
        "from mhsa_patch.cli import app\n"
        "for args in (['status', '--json'], ['apply'], ['status'], ['revert']):\n"
        "    try:\n"
        "        app(args + ['-t', sys.argv[1]])\n"
        "    except SystemExit as e:\n"
        "        assert not e.code, e.code\n"
    )
    assert_imports_neither_torch_nor_ultralytics(code, str(latest_pkg))


# -- bad input: one line on stderr, exit 1, no traceback, nothing changed ---------------------------------------------


@pytest.mark.parametrize("command", ["apply", "revert", "status"])
def test_missing_and_empty_and_foreign_paths(tmp_path, command):
    assert_refused(cli(command, "-t", str(tmp_path / "nope")), "no such file or directory")
    assert_refused(cli(command, "-t", ""), "--target is empty")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "x.py").write_text("")
    assert_refused(cli(command, "-t", str(tmp_path / "foreign")), "not an ultralytics package")


def test_release_before_nn_modules_is_refused(tmp_path):
    pkg = releases.copy_release("8.0.97", tmp_path)
    stock = releases.tree_bytes(pkg)
    assert_refused(cli("apply", "-t", str(tmp_path)), "8.0.97", "not supported")
    assert releases.tree_bytes(pkg) == stock


def test_future_release_without_the_anchor_names_it(latest_pkg):
    tasks = latest_pkg / "nn/tasks.py"
    tasks.write_text(tasks.read_text().replace("def parse_model(", "def parse_model_v2("))
    before = releases.tree_bytes(latest_pkg)
    assert_refused(cli("apply", "-t", str(latest_pkg)), "parse_model not found in nn/tasks.py")
    assert releases.tree_bytes(latest_pkg) == before


def test_source_that_does_not_parse(latest_pkg):
    init = latest_pkg / "nn/modules/__init__.py"
    init.write_text(init.read_text() + "\ndef broken(:\n")
    before = releases.tree_bytes(latest_pkg)
    assert_refused(cli("apply", "-t", str(latest_pkg)), "nn/modules/__init__.py", "does not parse")
    assert releases.tree_bytes(latest_pkg) == before


def test_apply_error_type_is_patch_error(latest_pkg):
    (latest_pkg / "nn/tasks.py").write_text("x = 1\n")
    with pytest.raises(PatchError):
        engine.apply(find_target(latest_pkg))


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare for a read-only mount")
def test_read_only_install(latest_pkg):
    """A read-only bind mount in a private mount namespace: even root cannot write there."""
    stock = releases.tree_bytes(latest_pkg)
    script = (
        f"mount --bind -o ro {latest_pkg} {latest_pkg} && "
        f"{sys.executable} -m mhsa_patch apply -t {latest_pkg}"
    )
    r = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert "read-only" in r.stderr and r.stderr.strip().count("\n") == 0
    assert releases.tree_bytes(latest_pkg) == stock


@pytest.mark.parametrize("version", LAYOUTS)
def test_statement_scoped_apply_equals_whole_module_apply(version):
    """apply's fast path (ast finds the anchor statements, libcst parses only those) writes the same bytes as
    running every edit on the whole parsed module."""
    from mhsa_patch.patching.filemodel import TargetFile

    target = find_target(releases.pristine(version))
    for rel in TARGET_FILES:
        data = target.file(rel).read_bytes()
        for newline in (b"\n", b"\r\n"):
            text = data.replace(b"\n", newline)
            fast = TargetFile(target, rel, text)._fast_applied_text()
            whole = TargetFile(target, rel, text)
            whole.check_anchors()
            module = whole.module
            for edit, layer in whole.pairs():
                module = edit.add(module, layer)
            assert fast is not None and fast == module.code, (version, rel, newline)
