"""Issue 14 A and 8: every refusal names FILE:LINE, all of them at once; status never fails on a layout it does not
understand; --force leaves no trace of the hand-pasted piece it removed; the dry-run diff shows only real changes.

Every case is a real release copy (``latest_pkg``) with the one change a user or fork would make, parsed by real
libcst; nothing is built, so these run in the fast part of the suite.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

import forks
import releases
from helpers import assert_refused, cli

EDITS_DIR = Path(__file__).resolve().parent.parent / "mhsa_patch" / "patching" / "edits"


def test_every_refusal_an_edit_can_raise_carries_the_node_it_refused_at():
    """Edits see trees, not files: each ``PatchError`` they raise must carry ``node=`` for the file's model to turn
    into FILE:LINE. The one exception is an anchor statement that is absent (no line exists); the file is named."""
    sites = []
    for path in sorted(EDITS_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "PatchError":
                sites.append((path.name, node.lineno, any(k.arg == "node" for k in node.keywords)))
    assert len(sites) >= 10, sites  # the scan sees the edits' refusals
    assert [s for s in sites if not s[2]] == [(f, n, False) for f, n, _ in sites if f == "anchors.py"], sites


def _replace(path: Path, old: str, new: str) -> int:
    """Replace ``old`` (exactly once) and return the 1-based line where ``new`` starts."""
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))
    return text[: text.index(old)].count("\n") + 1


def _rewrite_chain(pkg: Path) -> int:
    """A chain whose head is not a test over ``m``: parse_model's module chain cannot be found. Returns parse_model's
    line."""
    tasks = pkg / "nn/tasks.py"
    _replace(tasks, "        if m in base_modules:\n", "        if is_base(m):\n")
    return tasks.read_text().splitlines().index(next(ln for ln in tasks.read_text().splitlines()
                                                      if ln.startswith("def parse_model("))) + 1


def _computed_all(pkg: Path) -> int:
    return _replace(pkg / "nn/modules/conv.py", "\n__all__ = (\n", "\n__all__ = tuple(\n") + 1


def _unbracketed_import(pkg: Path) -> int:
    init = pkg / "nn/modules/__init__.py"
    text = init.read_text()
    node = next(n for n in ast.parse(text).body if isinstance(n, ast.ImportFrom) and n.module == "conv")
    src = text.splitlines(keepends=True)
    old = "".join(src[node.lineno - 1 : node.end_lineno])
    names = ", ".join(a.name for a in node.names)
    return _replace(init, old, f"from .conv import {names}  # 添加\n")


def _not_utf8(pkg: Path) -> int:
    conv = pkg / "nn/modules/conv.py"
    data = conv.read_bytes()
    conv.write_bytes(data + b"# caf\xe9\n")
    return data.count(b"\n") + 1


def _does_not_parse(pkg: Path) -> int:
    init = pkg / "nn/modules/__init__.py"
    text = init.read_text()
    init.write_text(text + "def broken(:\n")
    return text.count("\n") + 1


# case: (the change, the file it names, words of the refusal, whether status reports it as unsupported)
CASES = {
    "chain-not-found": (_rewrite_chain, "nn/tasks.py", "chain over m"),
    "computed-all": (_computed_all, "nn/modules/conv.py", "neither a list nor a parenthesized tuple"),
    "unbracketed-import-with-comment": (_unbracketed_import, "nn/modules/__init__.py", "without brackets"),
    "not-utf8": (_not_utf8, "nn/modules/conv.py", "not UTF-8"),
    "does-not-parse": (_does_not_parse, "nn/modules/__init__.py", "does not parse"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_refusal_names_file_and_line_and_status_still_answers(latest_pkg, case):
    change, rel, words = CASES[case]
    line = change(latest_pkg)
    before = releases.tree_bytes(latest_pkg)
    where = f"{latest_pkg / rel}:{line}:"
    assert_refused(cli("apply", "-t", str(latest_pkg)), where, words, "nothing was changed")
    assert releases.tree_bytes(latest_pkg) == before

    text = cli("status", "-t", str(latest_pkg))
    assert text.exit_code == 0, text.output
    out = text.stdout + text.stderr
    assert "unsupported here" in out and "'mhsa-patch apply' would refuse" in out and where in out, out
    assert "nothing was changed" not in out
    st = json.loads(cli("status", "-t", str(latest_pkg), "--json").stdout)
    bad = st["unsupported"]
    assert bad and all(u["file"] == rel and u["line"] == line and u["anchor"] and where in u["why"] for u in bad), bad
    assert releases.tree_bytes(latest_pkg) == before  # status never writes


def test_an_absent_anchor_names_its_file(latest_pkg):
    """No line exists for a statement that is not there: the file and the anchor are named."""
    init = latest_pkg / "nn/modules/__init__.py"
    init.write_text(init.read_text().replace("from .conv import (", "from .conv_v2 import ("))
    assert_refused(cli("apply", "-t", str(latest_pkg)), f"{init}: 'from .conv import (...)' not found")
    st = json.loads(cli("status", "-t", str(latest_pkg), "--json").stdout)
    assert {(u["file"], u["edit"], u["anchor"]) for u in st["unsupported"]} == {
        ("nn/modules/__init__.py", "import", "'from .conv import (...)'")
    }


def test_several_problems_in_one_line_and_status_lists_every_piece(latest_pkg):
    """A hand-pasted import (--force), a chain that cannot be found and an __all__ that is computed: apply names all
    three at once, each with FILE:LINE; status exits 0, lists the pasted piece with its line and each unsupported
    anchor, and says apply would refuse."""
    tasks = latest_pkg / "nn/tasks.py"
    import_line = _replace(tasks, "\n\nclass BaseModel(", "\nfrom ultralytics.nn.modules.conv import MHSA\n\n\nclass BaseModel(") + 1
    chain_line = _rewrite_chain(latest_pkg)
    all_line = _computed_all(latest_pkg)
    line = assert_refused(
        cli("apply", "-t", str(latest_pkg)),
        "3 problems: (1) ",
        f"{tasks}:{chain_line}: ",
        f"{latest_pkg / 'nn/modules/conv.py'}:{all_line}: ",
        f"{tasks}:{import_line}: MHSA (import)",
        "--force",
    )
    assert line.count("ERROR") == 1
    # --force takes the pasted import over but the layout problems remain, still together
    assert_refused(cli("apply", "--force", "-t", str(latest_pkg)), "2 problems", f"{tasks}:{chain_line}: ")

    r = cli("status", "-t", str(latest_pkg))
    assert r.exit_code == 0, r.output
    flat = " ".join(r.stdout.split())  # the table wraps its cells
    assert "unsupported here" in flat and "'mhsa-patch apply' would refuse" in r.stderr
    assert f"{tasks}:{chain_line}: " in r.stderr and f"{latest_pkg / 'nn/modules/conv.py'}:{all_line}: " in r.stderr
    assert "nothing was changed" not in r.stdout + r.stderr
    st = json.loads(cli("status", "-t", str(latest_pkg), "--json").stdout)
    assert {(u["file"], u["edit"], u["anchor"]) for u in st["unsupported"]} == {
        ("nn/tasks.py", "branch", "parse_model"), ("nn/modules/conv.py", "__all__", "__all__")}
    (pasted,) = [p for p in st["files"]["nn/tasks.py"]["pieces"] if p["state"] == "unmarked"]
    assert (pasted["edit"], pasted["line"]) == ("import", import_line)


def test_a_hand_written_use_that_cannot_be_removed_is_named_with_its_line(latest_pkg):
    tasks = latest_pkg / "nn/tasks.py"
    _replace(tasks, "\n\nclass BaseModel(", "\nfrom ultralytics.nn.modules.conv import MHSA\n\n\nclass BaseModel(")
    line = _replace(tasks, "        elif m is AIFI:\n", "        elif m is MHSA and len(args) > 2:\n            c2 = ch[f]\n        elif m is AIFI:\n")
    assert_refused(cli("apply", "--force", "-t", str(latest_pkg)), f"{tasks}:{line}: cannot remove the hand-written use")


def _set_fork(root: Path, shape: str, at: str) -> Path:
    """8.4.190 with MHSA added, under a marker-like comment, as the first or the last name of a set: ``base_modules``
    (a reading other than the tool's: --force keeps it) or a shared branch of its own that reads rows as the tutorial
    does (--force takes the name out of it)."""
    if shape == "base_modules":
        anchor, opening, closing, last = "    base_modules = frozenset(\n", "    base_modules = frozenset(\n        {\n", \
            "        }\n    )\n    repeat_modules", "            A2C2f,\n"
        old = opening if at == "first" else last + closing
        new = opening + "            #---MHSA---\n            MHSA,\n" if at == "first" else (
            "            A2C2f,  # YOLO12\n            #---MHSA---\n            MHSA,\n" + closing)
    else:  # a shared branch, the tutorial's reading: [ch[f], *args]
        anchor = "        elif m in {\n"
        names = ["            #---MHSA---\n            MHSA,\n", "            AIFI,  # YOLO12\n"]
        body = "".join(names if at == "first" else names[::-1])
        old = "        elif m is AIFI:\n"
        new = "        elif m in {\n" + body + "        }:\n            c2 = ch[f]\n            args = [c2, *args]\n" + old
    site = forks.build_fork("8.4.190", root, {"nn/modules/MHSA.py": forks.TUTORIAL_MODULE},
                            ["from ultralytics.nn.modules.MHSA import MHSA"], edits={"nn/tasks.py": [(old, new)]})
    return site, anchor


def _block(text: str, anchor: str) -> str:
    start = text.index(anchor)
    return text[start : text.index("\n    )\n" if "frozenset" in anchor else "        }:\n", start)]


@pytest.mark.parametrize("at", ["first", "last"])
@pytest.mark.parametrize("shape", ["base_modules", "shared-branch"])
def test_force_keeps_or_removes_the_pasted_name_without_a_trace_and_warns_at_status_line(tmp_path, shape, at):
    site, anchor = _set_fork(tmp_path, shape, at)
    pkg = site / "ultralytics"
    tasks = pkg / "nn/tasks.py"
    fork = releases.tree_bytes(pkg)
    before = _block(tasks.read_text(), anchor)
    st = json.loads(cli("status", "-t", str(pkg), "--json").stdout)
    (branch,) = [p for p in st["files"]["nn/tasks.py"]["pieces"] if p["edit"] == "branch" and p["state"] == "unmarked"]
    r = cli("apply", "--force", "-t", str(pkg))
    assert r.exit_code == 0, r.output
    block = _block(tasks.read_text(), anchor)
    if shape == "base_modules":
        # MHSA in base_modules reads rows as [c1, c2, *args[1:]], not as the tool's rule: the fork's reading is kept
        # (its YAMLs build what they built), and the warning names the line status names for that piece
        assert f"{tasks}:{branch['line']}: kept the fork's reading of MHSA's rows" in r.stderr, r.stderr
        assert block == before
    else:
        assert "MHSA" not in block and "#---" not in block, block
        assert not any(ln.strip() == "" for ln in block.splitlines()), block  # no line of only spaces
        assert "            AIFI,  # YOLO12\n" in block  # the other name keeps its own comment
    assert cli("revert", "-t", str(pkg)).exit_code == 0
    assert releases.tree_bytes(pkg) == fork


def test_a_kept_branch_whose_call_is_not_known_is_never_promised_one(tmp_path):
    """Issue 22 D.2: a fork's branch that mhsa-patch cannot read (it drops the row's last argument) is kept by
    --force; the warning says the call is not known and which command shows it, never that the lint shows it, and
    the lint indeed says it does not know it."""
    site = forks.build_fork("8.4.190", tmp_path, {"nn/modules/MHSA.py": forks.TUTORIAL_MODULE},
                            ["from ultralytics.nn.modules.MHSA import MHSA"], {"MHSA": "args = [ch[f], *args[:-1]]"})
    pkg = site / "ultralytics"
    r = cli("apply", "--force", "-t", str(pkg))
    assert r.exit_code == 0, r.output
    (line,) = [ln for ln in r.stderr.splitlines() if "kept the fork's reading of MHSA's rows ('unrecognised'" in ln]
    assert "mhsa-patch cannot tell which call it makes" in line and "'mhsa-patch check MODEL.yaml' builds" in line
    assert "--lint-only" not in line and "shows the call" not in line, line
    cfg = tmp_path / "fork-n.yaml"
    cfg.write_text(forks.MODEL.replace("LAYER", "1, MHSA, [14, 14, 4]"))
    r = cli("check", str(cfg), "--lint-only", "-t", str(pkg))
    assert r.exit_code == 0 and "layer 4: MHSA(...) (not known)" in r.stdout, r.output


def test_dry_run_diff_shows_only_the_real_change(latest_pkg):
    """A fork's __init__.py past 200 lines: difflib's junk heuristic showed the unchanged closing ')' of __all__ as
    removed and added back; the diff now shows the inserted names alone, as git does."""
    init = latest_pkg / "nn/modules/__init__.py"
    extra = "".join(f"from .extra{i} import Extra{i}\n" for i in range(12))
    init.write_text(init.read_text().replace("\n__all__ = (\n", "\n" + extra + "\n__all__ = (\n"))
    assert len(init.read_text().splitlines()) > 200
    r = cli("apply", "--dry-run", "-t", str(latest_pkg))
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert "-)" not in lines and "+)" not in lines, r.stdout
    init_diff = r.stdout.split("--- a/ultralytics/nn/modules/__init__.py")[1].split("--- a/ultralytics/nn/tasks.py")[0]
    tail = init_diff[init_diff.rindex("@@ -") :]
    assert re.sub(r"@@.*@@\n", "", tail) == (
        '     "YOLOESegment",\n     "YOLOESegment26",\n     "v10Detect",\n'
        '+    "MHSA",  # mhsa-patch\n+    "BoT3",  # mhsa-patch\n )\n'
    ), tail


def test_status_gives_every_found_piece_its_line_beside_an_unsupported_one(latest_pkg):
    """A file patched by the tool, then edited so that an anchor is gone: status lists the tool's pieces it still
    finds with their lines, and the unsupported one."""
    assert cli("apply", "-t", str(latest_pkg)).exit_code == 0
    chain_line = _rewrite_chain(latest_pkg)
    r = cli("status", "-t", str(latest_pkg), "--json")
    assert r.exit_code == 0, r.output
    pieces = json.loads(r.stdout)["files"]["nn/tasks.py"]["pieces"]
    lines = (latest_pkg / "nn/tasks.py").read_text().splitlines()
    marked = [p for p in pieces if p["state"] == "marked"]
    assert {p["edit"] for p in marked} >= {"import", "branch"}, pieces
    for p in marked:
        assert p["layer"] in lines[p["line"] - 1] and "# mhsa-patch" in lines[p["line"] - 1], p
    assert cli("revert", "-t", str(latest_pkg)).exit_code == 0  # the tool's pieces go; the user's edit stays
    assert "        if is_base(m):\n" in (latest_pkg / "nn/tasks.py").read_text()
    assert chain_line


def test_diff_of_a_file_without_a_final_newline_says_so_like_git():
    from mhsa_patch.patching.results import Change

    c = Change("nn/modules/__init__.py", Path("x"), b"a\nb\n)", b"a\nb\n    'MHSA'  # mhsa-patch\n)")
    assert c.diff() == (
        "--- a/ultralytics/nn/modules/__init__.py\n+++ b/ultralytics/nn/modules/__init__.py\n"
        "@@ -1,3 +1,4 @@\n a\n b\n+    'MHSA'  # mhsa-patch\n )\n\\ No newline at end of file\n"
    )
    c = Change("x.py", Path("x"), b"a\n)", b"a\n)\n")  # only the final newline added: shown, and only that
    assert c.diff().endswith("@@ -1,2 +1,2 @@\n a\n-)\n\\ No newline at end of file\n+)\n")  # as diff -u
