"""Issue 14 A and F: anchors as forgiving as the code they read, on fork shapes built from real releases.

Each shape is written on a real release copy (tests/fork_shapes.py, no third-party code) and built once for the
session (the ``fork_trees`` fixture, shared with test_forks.py): names registered with a comment after the last one
(``"v10Detect", #add``, ``"ShuffleAttention"  # 添加``, a comment line before the closing bracket), a
``parse_model`` whose fallback ``else`` was rewritten (8.4.2's fork: ``c2 = args[0] ...`` then a ``raise``), a foreign
MHSA whose export lines carry comments, and a branch shared by three modules. For each: ``status`` exits 0 and names
every piece with its line; plain ``apply`` either patches or refuses naming every problem at once; ``apply`` with the
flags it needs leaves every config that built before building the same model (parameter count, state_dict keys and
shapes, built in a child against the copy) and every MHSA row building the tool's MHSA; the dry-run diff shows only
real changes; ``revert`` gives the fork back byte for byte.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import releases
from fork_shapes import CHANGED_ELSE, module_of
from helpers import assert_refused, cli

pytestmark = pytest.mark.releases

# shape: the hand-written pieces status must list, as (file, edit, layer)
PIECES = {
    "commented-last-names": set(),
    "changed-else": {("nn/tasks.py", "import", "MHSA"), ("nn/tasks.py", "branch", "MHSA")},
    "foreign-commented-export": {
        ("nn/modules/conv.py", "class", "MHSA"), ("nn/modules/conv.py", "__all__", "MHSA"),
        ("nn/modules/__init__.py", "import", "MHSA"), ("nn/modules/__init__.py", "__all__", "MHSA"),
        ("nn/tasks.py", "import", "MHSA"), ("nn/tasks.py", "branch", "MHSA")},
    "shared-branch-three": {("nn/tasks.py", "import", "MHSA"), ("nn/tasks.py", "branch", "MHSA")},
}


def status_names_every_piece(pkg: Path, expected: set) -> dict:
    """status exits 0, in text and JSON; every hand-written piece with the line that holds it; nothing unsupported."""
    text = cli("status", "-t", str(pkg))
    assert text.exit_code == 0, text.output
    assert "nothing was changed" not in text.stdout + text.stderr
    r = cli("status", "-t", str(pkg), "--json")
    assert r.exit_code == 0, r.output
    st = json.loads(r.stdout)
    assert st["unsupported"] == [], st["unsupported"]
    pieces = [{"file": rel, **p} for rel, f in st["files"].items() for p in f["pieces"]]
    hand = [p for p in pieces if p["state"] == "unmarked"]
    assert {(p["file"], p["edit"], p["layer"]) for p in hand} == expected, hand
    for p in hand:
        line = (pkg / p["file"]).read_text().splitlines()[p["line"] - 1]
        assert p["layer"] in line, (p, line)
    assert all(p["state"] in ("missing", "unmarked") for p in pieces), pieces
    return st


def diff_is_only_the_real_change(pkg: Path, flags) -> None:
    """The dry-run diff removes no line that it adds back: no ``-)``/``+)`` pair."""
    r = cli("apply", *flags, "--dry-run", "-t", str(pkg))
    assert r.exit_code == 0, r.output
    hunks = re.split(r"^@@.*@@\n", r.stdout, flags=re.M)[1:]
    assert hunks, r.stdout
    for hunk in hunks:
        lines = hunk.splitlines()
        removed = {ln[1:] for ln in lines if ln.startswith("-")}
        added = {ln[1:] for ln in lines if ln.startswith("+")}
        brackets = {ln for ln in removed & added if ln.strip() in (")", "]", "}", "})", "])")}
        assert not brackets, hunk


@pytest.mark.parametrize("shape", list(PIECES))
def test_fork_shape_status_apply_builds_the_same_revert_exact(fork_trees, shape, tmp_path):
    t = fork_trees[shape]
    pkg, flags = t.pkg, t.shape.flags
    before = t.built("before")  # every shape builds at least one config before

    status_names_every_piece(pkg, PIECES[shape])
    if flags:  # plain apply refuses, naming every hand-written piece with its line, in one line
        line = assert_refused(cli("apply", "-t", str(pkg)), *flags)
        st = json.loads(cli("status", "-t", str(pkg), "--json").stdout)
        for rel, f in st["files"].items():
            for p in f["pieces"]:
                if p["state"] == "unmarked" and p["edit"] != "class":
                    assert f"{pkg / rel}:{p['line']}:" in line, (p, line)

    diff_is_only_the_real_change(pkg, flags)
    assert releases.tree_bytes(pkg) == t.fork  # neither status, the refusal nor the dry run wrote anything
    r = t.applied_by  # apply with its flags, on a copy of the fork
    assert r.exit_code == 0, r.output
    assert json.loads(cli("status", "-t", str(t.applied_pkg), "--json").stdout)["state"] == "applied"

    after = t.built("after")
    for b, a in zip(before, after):
        assert a["params"] == b["params"] and a["state"] == b["state"]  # the same model: its checkpoints load
    rows = list(t.shape.rows + t.shape.new_rows)
    mhsa = [a for a, row in zip(after, rows) if module_of(row) == "MHSA"]
    assert mhsa, rows  # every shape builds an MHSA row after apply (after --replace-foreign too)
    for a in mhsa:  # the tool's class, with its fused attention
        assert a["mhsa"] and all(m == ["ultralytics.nn.modules.conv", True] for m in a["mhsa"]), a

    pkg = t.applied_copy(tmp_path / "revert")
    r = cli("revert", "-t", str(pkg))
    assert r.exit_code == 0, r.output
    assert releases.tree_bytes(pkg) == t.fork  # the fork as it was, hand-written pieces included
    assert releases.tree_bytes(t.applied_pkg) == t.applied  # the shared tree as apply left it


@pytest.mark.parametrize("shape", ["commented-last-names"])
def test_comments_stay_with_the_users_names(fork_trees, shape):
    t = fork_trees[shape]
    assert t.applied_by.exit_code == 0, t.applied_by.output
    init = t.applied["nn/modules/__init__.py"].decode()
    assert '    "v10Detect", #add\n    "ShuffleAttention",  # 添加\n    "MHSA",  # mhsa-patch\n' in init
    conv = t.applied["nn/modules/conv.py"].decode()
    # sorted (8.4): each name at its place; the comment line still right before the closing bracket
    assert '    "LightConv",\n    "MHSA",  # mhsa-patch\n    "RepConv",\n    "SpatialAttention",\n    # more to come\n)' in conv
    tasks = t.applied["nn/tasks.py"].decode()
    assert "    MHSA,  # mhsa-patch\n    BoT3,  # mhsa-patch\n    # 添加: the fork's own modules below\n)" in tasks


@pytest.mark.parametrize("shape", ["changed-else"])
def test_changed_else_gets_the_branches_before_it(fork_trees, shape):
    t = fork_trees[shape]
    assert t.applied_by.exit_code == 0, t.applied_by.output
    tasks = t.applied["nn/tasks.py"].decode()
    fallback = CHANGED_ELSE[CHANGED_ELSE.index("        else:\n"):]
    assert "            n = 1\n" + fallback in tasks  # BoT3's branch (the last inserted) right before the fork's else
    assert "        elif m is MHSA:  # mhsa-patch\n" in tasks and "        elif m is MHSA:\n" not in tasks


@pytest.mark.parametrize("shape", ["foreign-commented-export"])
def test_foreign_and_hand_pasted_refusals_said_at_once(fork_trees, shape):
    """Without flags, apply names the foreign class (--replace-foreign) and every hand-written piece (--force) in one
    line, each with FILE:LINE; --force alone still refuses the foreign class."""
    t = fork_trees[shape]
    pkg = t.pkg
    conv = pkg / "nn/modules/conv.py"
    class_line = conv.read_text().splitlines().index("class MHSA(nn.Module):") + 1
    line = assert_refused(cli("apply", "-t", str(pkg)), f"{conv}:{class_line}: class MHSA is not the tutorial's",
                          "--replace-foreign", "--force", f"{pkg / 'nn/tasks.py'}:")
    assert line.count("--replace-foreign") == 1 and " problems: (1) " in line, line
    assert_refused(cli("apply", "--force", "-t", str(pkg)), f"{conv}:{class_line}", "--replace-foreign")
    assert releases.tree_bytes(pkg) == t.fork
