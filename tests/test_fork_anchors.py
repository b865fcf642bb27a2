"""Issue 14 A and F: anchors as forgiving as the code they read, on fork shapes built from real releases.

Each shape is written here on a real release copy (tests/forks.py, no third-party code): names registered with a
comment after the last one (``"v10Detect", #add``, ``"ShuffleAttention"  # 添加``, a comment line before the
closing bracket), a ``parse_model`` whose fallback ``else`` was rewritten (8.4.2's fork: ``c2 = args[0] ...`` then a
``raise``), a foreign MHSA whose export lines carry comments, and a branch shared by three modules. For each:
``status`` exits 0 and names every piece with its line; plain ``apply`` either patches or refuses naming every
problem at once; ``apply`` with the flags it needs leaves every config that built before building the same model
(parameter count, state_dict keys and shapes, built in a child against the copy); the dry-run diff shows only real
changes; ``revert`` gives the fork back byte for byte.
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

pytestmark = pytest.mark.releases

# Rows (repeats, module, args) for forks.MODEL's custom layer.
MHSA_ROW = "1, MHSA, [14, 14, 4]"
SHUFFLE_ROW = "1, ShuffleAttention, [4]"
ECA_ROW = "1, ECA, []"
CONV_ROW = "1, Conv, [256, 1, 1]"

# A third channel-preserving block (efficient channel attention, written here for the tests).
ECA_MODULE = '''import torch
import torch.nn as nn


class ECA(nn.Module):
    def __init__(self, channel, k=3):
        super().__init__()
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)

    def forward(self, x):
        w = x.mean((2, 3)).unsqueeze(1)
        return x * torch.sigmoid(self.conv(w)).transpose(1, 2).unsqueeze(-1)
'''

FOREIGN_CLASS = forks.MULTIHEAD_MODULE.split("\n\n\n", 1)[1]


def before_closing(text: str, match, line: str) -> tuple[str, str]:
    """The ``(old, new)`` edit that puts ``line`` just before the closing bracket of the first top-level statement
    ``match`` accepts (read with ``ast``: the edit holds whatever the release's layout is)."""
    node = next(n for n in ast.parse(text).body if match(n))
    src = text.splitlines(keepends=True)
    old = "".join(src[node.end_lineno - 2 : node.end_lineno])
    assert old.endswith(")\n") and src[node.end_lineno - 1].strip() == ")", old
    return old, old[: -len(")\n")] + line + ")\n"


def is_all(n) -> bool:
    return isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets)


def is_from(module: str, level: int = 0):
    return lambda n: isinstance(n, ast.ImportFrom) and n.module == module and n.level == level


def pristine(version: str, rel: str) -> str:
    return (releases.pristine(version) / rel).read_text()


def commented_last_names(root: Path) -> Path:
    """8.4.2: ShuffleAttention registered the tutorials' way, with notes after the last names everywhere."""
    init = pristine("8.4.2", "nn/modules/__init__.py")
    conv = pristine("8.4.2", "nn/modules/conv.py")
    tasks = pristine("8.4.2", "nn/tasks.py")
    all_old, _ = before_closing(init, is_all, "")
    assert all_old.endswith('    "v10Detect",\n)\n')
    return forks.build_fork(
        "8.4.2", root,
        {"nn/modules/shuffle.py": forks.SHUFFLE_ATTENTION_MODULE},
        ["from ultralytics.nn.modules import ShuffleAttention"],
        {"ShuffleAttention": forks.CHANNELS_FIRST},
        edits={
            "nn/modules/__init__.py": [
                (all_old, all_old.replace('"v10Detect",\n)', '"v10Detect", #add\n    "ShuffleAttention"  # 添加\n)')),
                ("\n__all__ = (\n", "from .shuffle import ShuffleAttention\n\n__all__ = (\n"),
            ],
            "nn/modules/conv.py": [before_closing(conv, is_all, "    # more to come\n")],
            "nn/tasks.py": [
                before_closing(tasks, is_from("ultralytics.nn.modules"), "    # 添加: the fork's own modules below\n")
            ],
        },
    )


CHANGED_ELSE = (
    "        elif m is MHSA:\n"
    "            args = [ch[f], *args]\n"
    "        else:\n"
    "            c2 = args[0] if args and isinstance(args[0], int) else ch[f]\n"
    "            if c2 <= 0:\n"
    '                raise ValueError(f"{m}: no output channels")\n'
)


def changed_else(root: Path) -> Path:
    """8.4.2: the chain's fallback rewritten (``c2 = args[0] ...`` then a ``raise``), the tutorial's MHSA branch."""
    return forks.build_fork(
        "8.4.2", root,
        {"nn/modules/MHSA.py": forks.TUTORIAL_MODULE},
        ["from ultralytics.nn.modules.MHSA import MHSA"],
        edits={"nn/tasks.py": [("        else:\n            c2 = ch[f]\n", CHANGED_ELSE)]},
    )


def foreign_commented_export(root: Path) -> Path:
    """8.3.52: a class named MHSA that is not the tutorial's, pasted in conv.py, each export line with a note."""
    conv = pristine("8.3.52", "nn/modules/conv.py")
    init = pristine("8.3.52", "nn/modules/__init__.py")
    return forks.build_fork(
        "8.3.52", root,
        {},
        ["from ultralytics.nn.modules import MHSA  # 添加"],
        {"MHSA": forks.CHANNELS_FIRST},
        edits={
            "nn/modules/conv.py": [
                before_closing(conv, is_all, '    "MHSA",  # 添加\n'),
                ("\n\nclass Conv(nn.Module):", "\n\n" + FOREIGN_CLASS + "\n\nclass Conv(nn.Module):"),
            ],
            "nn/modules/__init__.py": [
                before_closing(init, is_from("conv", 1), "    MHSA,  # 添加\n"),
                before_closing(init, is_all, '    "MHSA"  # 添加\n'),
            ],
        },
    )


def shared_branch_three(root: Path) -> Path:
    """8.1.47: one branch for three modules, ``elif m in (MHSA, ShuffleAttention, ECA):``, each in its own file."""
    return forks.build_fork(
        "8.1.47", root,
        {"nn/modules/MHSA.py": forks.TUTORIAL_MODULE, "nn/modules/shuffle.py": forks.SHUFFLE_ATTENTION_MODULE,
         "nn/modules/eca.py": ECA_MODULE},
        ["from ultralytics.nn.modules.MHSA import MHSA", "from ultralytics.nn.modules.shuffle import ShuffleAttention",
         "from ultralytics.nn.modules.eca import ECA"],
        {"m in (MHSA, ShuffleAttention, ECA)": forks.CHANNELS_FIRST},
    )


# shape: (builder, the hand-written pieces status must list as (file, edit, layer), the flags apply needs, the rows
# of models that build before and must build the same after, rows that build only after)
SHAPES = {
    "commented-last-names": (commented_last_names, set(), [], [SHUFFLE_ROW], [MHSA_ROW]),
    "changed-else": (changed_else, {("nn/tasks.py", "import", "MHSA"), ("nn/tasks.py", "branch", "MHSA")},
                     ["--force"], [MHSA_ROW], []),
    "foreign-commented-export": (
        foreign_commented_export,
        {("nn/modules/conv.py", "class", "MHSA"), ("nn/modules/conv.py", "__all__", "MHSA"),
         ("nn/modules/__init__.py", "import", "MHSA"), ("nn/modules/__init__.py", "__all__", "MHSA"),
         ("nn/tasks.py", "import", "MHSA"), ("nn/tasks.py", "branch", "MHSA")},
        ["--replace-foreign"], [CONV_ROW], [MHSA_ROW],
    ),
    "shared-branch-three": (
        shared_branch_three, {("nn/tasks.py", "import", "MHSA"), ("nn/tasks.py", "branch", "MHSA")},
        ["--force"], [MHSA_ROW, SHUFFLE_ROW, ECA_ROW], [],
    ),
}


def write_models(dest: Path, rows: list[str], prefix: str = "fork") -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, row in enumerate(rows):
        path = dest / f"{prefix}{k}.yaml"
        path.write_text(forks.MODEL.replace("LAYER", row))
        paths.append(path)
    return paths


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


def diff_is_only_the_real_change(pkg: Path, flags: list[str]) -> None:
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


@pytest.mark.parametrize("shape", list(SHAPES))
def test_fork_shape_status_apply_builds_the_same_revert_exact(tmp_path, shape):
    builder, expected, flags, same_rows, new_rows = SHAPES[shape]
    site = builder(tmp_path)
    pkg = site / "ultralytics"
    fork = releases.tree_bytes(pkg)
    cfgs = write_models(tmp_path / "models", same_rows)
    before = forks.build_models(site, cfgs)  # an empty list fails: every shape builds at least one config

    status_names_every_piece(pkg, expected)
    if flags:  # plain apply refuses, naming every hand-written piece with its line, in one line
        line = assert_refused(cli("apply", "-t", str(pkg)), *flags)
        st = json.loads(cli("status", "-t", str(pkg), "--json").stdout)
        for rel, f in st["files"].items():
            for p in f["pieces"]:
                if p["state"] == "unmarked" and p["edit"] != "class":
                    assert f"{pkg / rel}:{p['line']}:" in line, (p, line)
        assert releases.tree_bytes(pkg) == fork

    diff_is_only_the_real_change(pkg, flags)
    r = cli("apply", *flags, "-t", str(pkg))
    assert r.exit_code == 0, r.output
    assert json.loads(cli("status", "-t", str(pkg), "--json").stdout)["state"] == "applied"

    after = forks.build_models(site, cfgs + write_models(tmp_path / "models", new_rows, prefix="after"))
    for b, a in zip(before, after):
        assert a["params"] == b["params"] and a["state"] == b["state"]  # the same model: its checkpoints load
    for a, row in zip(after, same_rows + new_rows):
        if row.startswith("MHSA"):
            assert a["mhsa"] and {m for m, _ in a["mhsa"]} == {"ultralytics.nn.modules.conv"}, a  # the tool's class

    r = cli("revert", "-t", str(pkg))
    assert r.exit_code == 0, r.output
    assert releases.tree_bytes(pkg) == fork  # the fork as it was, hand-written pieces included


def test_comments_stay_with_the_users_names(tmp_path):
    site = commented_last_names(tmp_path)
    pkg = site / "ultralytics"
    assert cli("apply", "-t", str(pkg)).exit_code == 0
    init = (pkg / "nn/modules/__init__.py").read_text()
    assert '    "v10Detect", #add\n    "ShuffleAttention",  # 添加\n    "MHSA",  # mhsa-patch\n' in init
    conv = (pkg / "nn/modules/conv.py").read_text()
    # sorted (8.4): each name at its place; the comment line still right before the closing bracket
    assert '    "LightConv",\n    "MHSA",  # mhsa-patch\n    "RepConv",\n    "SpatialAttention",\n    # more to come\n)' in conv
    tasks = (pkg / "nn/tasks.py").read_text()
    assert "    MHSA,  # mhsa-patch\n    BoT3,  # mhsa-patch\n    # 添加: the fork's own modules below\n)" in tasks


def test_changed_else_gets_the_branches_before_it(tmp_path):
    site = changed_else(tmp_path)
    pkg = site / "ultralytics"
    assert cli("apply", "--force", "-t", str(pkg)).exit_code == 0
    tasks = (pkg / "nn/tasks.py").read_text()
    fallback = CHANGED_ELSE[CHANGED_ELSE.index("        else:\n"):]
    assert "            n = 1\n" + fallback in tasks  # BoT3's branch (the last inserted) right before the fork's else
    assert "        elif m is MHSA:  # mhsa-patch\n" in tasks and "        elif m is MHSA:\n" not in tasks


def test_foreign_and_hand_pasted_refusals_said_at_once(tmp_path):
    """Without flags, apply names the foreign class (--replace-foreign) and every hand-written piece (--force) in one
    line, each with FILE:LINE; --force alone still refuses the foreign class."""
    site = foreign_commented_export(tmp_path)
    pkg = site / "ultralytics"
    conv = pkg / "nn/modules/conv.py"
    class_line = conv.read_text().splitlines().index("class MHSA(nn.Module):") + 1
    line = assert_refused(cli("apply", "-t", str(pkg)), f"{conv}:{class_line}: class MHSA is not the tutorial's",
                          "--replace-foreign", "--force", f"{pkg / 'nn/tasks.py'}:")
    assert line.count("--replace-foreign") == 1 and " problems: (1) " in line, line
    assert_refused(cli("apply", "--force", "-t", str(pkg)), f"{conv}:{class_line}", "--replace-foreign")
