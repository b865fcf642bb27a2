"""Each structural edit on small before/after sources: add, its inverse, the no-op and the already-applied cases."""

from __future__ import annotations

import libcst as cst
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mhsa_patch.patching.edits import EDITS, AllEntry, ClassDefEdit, ImportEntry, ParseModelBranch
from mhsa_patch.errors import PatchError
from mhsa_patch.patching.layers import layers

LAYER = layers()[0]


def run_add(edit, src: str) -> str:
    module = cst.parse_module(src)
    assert edit.find(module, LAYER) == []
    return edit.add(module, LAYER).code


def run_remove(edit, src: str) -> str:
    module = cst.parse_module(src)
    (found,) = edit.find(module, LAYER)
    assert found.marked
    return edit.remove(module, LAYER, found).code


# A comment the user left with the last name, in each place it can be: it stays with the user's name.
COMMENTED_LAST = [
    # trailing comma, comment on the same line (the tutorials' `"v10Detect", #add`)
    (
        '__all__ = (\n    "Zeta",\n    "Beta",\n    "v10Detect", #add\n)\n',
        '__all__ = (\n    "Zeta",\n    "Beta",\n    "v10Detect", #add\n    "MHSA",  # mhsa-patch\n)\n',
    ),
    # no trailing comma, comment on the same line (`"CBAM"  # 添加`)
    (
        '__all__ = [\n    "Zeta",\n    "CBAM"  # 添加\n]\n',
        '__all__ = [\n    "Zeta",\n    "CBAM",  # 添加\n    "MHSA"  # mhsa-patch\n]\n',
    ),
    # a comment on a line of its own before the closing bracket: it stays there
    (
        '__all__ = (\n    "Zeta",\n    "Conv",\n    # more to come\n)\n',
        '__all__ = (\n    "Zeta",\n    "Conv",\n    "MHSA",  # mhsa-patch\n    # more to come\n)\n',
    ),
    (
        '__all__ = (\n    "Zeta",\n    "Conv"\n    # more to come\n)\n',
        '__all__ = (\n    "Zeta",\n    "Conv",\n    "MHSA"  # mhsa-patch\n    # more to come\n)\n',
    ),
    # a wrapped sequence whose statement ends with a comment: the new name goes on a line of its own
    (
        "__all__ = ['Conv', 'LightConv',\n           'CBAM', 'Concat']  # 添加\n",
        "__all__ = ['Conv', 'LightConv',\n           'CBAM', 'Concat',  # 添加\n           'MHSA']  # mhsa-patch\n",
    ),
    (
        "__all__ = ('Conv', 'CBAM')  # note\n",
        "__all__ = ('Conv', 'CBAM',  # note\n    'MHSA')  # mhsa-patch\n",
    ),
    # comment lines between names are not copied to the new name's line
    (
        '__all__ = (\n    "Zeta",\n    # group 2\n    "Conv",  # c\n)\n',
        '__all__ = (\n    "Zeta",\n    # group 2\n    "Conv",  # c\n    "MHSA",  # mhsa-patch\n)\n',
    ),
]


@pytest.mark.parametrize("before, after", COMMENTED_LAST)
def test_all_entry_keeps_the_users_comment_with_the_users_name(before, after):
    assert run_add(AllEntry(), before) == after
    assert run_remove(AllEntry(), after) == before


def test_import_entry_keeps_a_comment_after_the_last_name():
    before = "from .conv import (\n    CBAM,\n    Conv,  # 添加\n)\n"
    after = run_add(ImportEntry(".conv"), before)
    assert after == "from .conv import (\n    CBAM,\n    Conv,  # 添加\n    MHSA,  # mhsa-patch\n)\n"
    assert run_remove(ImportEntry(".conv"), after) == before
    # without brackets the new name cannot get a line of its own: refused at the statement
    with pytest.raises(PatchError, match="without brackets") as e:
        run_add(ImportEntry(".conv"), "from .conv import CBAM, Conv  # 添加\n")
    assert isinstance(e.value.node, cst.SimpleStatementLine)


@pytest.mark.parametrize(
    "before, after",
    [
        # one name per line, trailing comma, sorted: the new name lands at its sorted place, on its own line
        (
            '__all__ = (\n    "Conv",\n    "RepConv",\n)\n',
            '__all__ = (\n    "Conv",\n    "MHSA",  # mhsa-patch\n    "RepConv",\n)\n',
        ),
        # one per line, unsorted: appended, trailing comma kept
        (
            '__all__ = (\n    "Zeta",\n    "Conv",\n)\n',
            '__all__ = (\n    "Zeta",\n    "Conv",\n    "MHSA",  # mhsa-patch\n)\n',
        ),
        # one per line, no trailing comma: none added after the new last name
        (
            "__all__ = [\n    'Zeta',\n    'Conv'\n]\n",
            "__all__ = [\n    'Zeta',\n    'Conv',\n    'MHSA'  # mhsa-patch\n]\n",
        ),
        # wrapped list, single quotes, no trailing comma (8.0.98): appended to the last line
        (
            "__all__ = [\n    'Conv', 'LightConv',\n    'CBAM', 'Concat']\n",
            "__all__ = [\n    'Conv', 'LightConv',\n    'CBAM', 'Concat', 'MHSA']  # mhsa-patch\n",
        ),
        # wrapped tuple on two lines (8.0.200)
        (
            "__all__ = ('Conv', 'Conv2',\n           'CBAM', 'RepConv')\n",
            "__all__ = ('Conv', 'Conv2',\n           'CBAM', 'RepConv', 'MHSA')  # mhsa-patch\n",
        ),
    ],
)
def test_all_entry_add_and_inverse(before, after):
    assert run_add(AllEntry(), before) == after
    assert run_remove(AllEntry(), after) == before


def test_all_entry_wraps_past_the_line_length_like_the_host():
    names = ", ".join(f"'Name{i:02d}'" for i in range(9))
    before = f"__all__ = ('A', 'B',\n           {names})\n"
    after = run_add(AllEntry(), before)
    assert after.endswith(f"{names},\n           'MHSA')  # mhsa-patch\n")
    assert max(len(line) for line in after.splitlines()) <= 120
    assert run_remove(AllEntry(), after) == before


@pytest.mark.parametrize(
    "module_name, before, after",
    [
        (
            ".conv",
            "from .conv import (\n    CBAM,\n    Conv,\n)\n",
            "from .conv import (\n    CBAM,\n    Conv,\n    MHSA,  # mhsa-patch\n)\n",
        ),
        (
            ".conv",
            "from .conv import (CBAM, Conv,\n                   RepConv)\nfrom .head import Detect\n",
            "from .conv import (CBAM, Conv,\n                   RepConv, MHSA)  # mhsa-patch\nfrom .head import Detect\n",
        ),
        (
            "ultralytics.nn.modules",
            "import torch\nfrom ultralytics.nn.modules import (\n    SPPF,\n    AIFI,\n)\n",
            "import torch\nfrom ultralytics.nn.modules import (\n    SPPF,\n    AIFI,\n    MHSA,  # mhsa-patch\n)\n",
        ),
    ],
)
def test_import_entry_add_and_inverse(module_name, before, after):
    edit = ImportEntry(module_name)
    assert run_add(edit, before) == after
    assert run_remove(edit, after) == before


def test_import_entry_missing_anchor_names_it():
    with pytest.raises(PatchError, match=r"from \.conv import"):
        ImportEntry(".conv").check_anchor(cst.parse_module("import os\n"))


PARSE_MODEL = """\
def parse_model(d, ch):
    for i, (f, n, m, args) in enumerate(d):
        if restricted and not m:
            raise TypeError(m)
        if m in base_modules:
            c1, c2 = ch[f], args[0]
        elif m is AIFI:
            args = [ch[f], *args]
        else:
            c2 = ch[f]
"""


def test_branch_goes_before_the_final_else_of_the_right_chain():
    after = run_add(ParseModelBranch(), PARSE_MODEL)
    assert after == PARSE_MODEL.replace(
        "        else:\n",
        "        elif m is MHSA:  # mhsa-patch\n            c2 = ch[f]\n            args = [c2, *args]\n        else:\n",
    )
    assert run_remove(ParseModelBranch(), after) == PARSE_MODEL


def test_branch_body_comes_from_the_rule_in_patches():
    from mhsa_patch.patches.parse_model_rules import prepend_input_channels

    # the rule is real code: what the branch does, the function does
    assert prepend_input_channels([3, 16, 256], -1, [14, 14, 4]) == (256, [256, 14, 14, 4])
    assert prepend_input_channels([3, 64, 128, 256], 2, [14, 14, 4, True]) == (128, [128, 14, 14, 4, True])


@pytest.mark.parametrize(
    "src, anchor",
    [
        ("def other():\n    pass\n", "parse_model not found"),
        ("def parse_model(d, ch):\n    for x in d:\n        if x:\n            pass\n", "chain over m"),
        # one branch over m is a fork's own chain, not the module chain
        ("def parse_model(d, ch):\n    for m in d:\n        if m is X:\n            pass\n", "chain over m"),
    ],
)
def test_branch_missing_anchor(src, anchor):
    with pytest.raises(PatchError, match=anchor) as e:
        ParseModelBranch().check_anchor(cst.parse_module(src))
    if "chain" in anchor:  # the refusal carries parse_model, whose line the file's model names
        assert isinstance(e.value.node, cst.FunctionDef) and e.value.node.name.value == "parse_model"


# A fork's fallback (8.4.2): the chain is the same chain, whatever its ``else`` does.
CHANGED_ELSE = PARSE_MODEL.replace(
    "        else:\n            c2 = ch[f]\n",
    "        else:\n            c2 = args[0] if args else ch[f]\n            if c2 is None:\n                raise ValueError(m)\n",
)
NO_ELSE = PARSE_MODEL.replace("        else:\n            c2 = ch[f]\n", "")


@pytest.mark.parametrize("src", [CHANGED_ELSE, NO_ELSE], ids=["changed-else", "no-else"])
def test_branch_is_found_by_structure_whatever_the_else_does(src):
    after = run_add(ParseModelBranch(), src)
    branch = "        elif m is MHSA:  # mhsa-patch\n            c2 = ch[f]\n            args = [c2, *args]\n"
    if src is NO_ELSE:
        assert after == src + branch  # appended after the last elif
    else:
        assert after == src.replace("        else:\n", branch + "        else:\n")
    assert run_remove(ParseModelBranch(), after) == src


def test_class_is_appended_with_marker_and_removed_exactly():
    before = "import torch\nimport torch.nn as nn\n\n\nclass Conv(nn.Module):\n    pass\n"
    after = run_add(ClassDefEdit(), before)
    assert after.startswith(before + "\n\n# mhsa-patch: MHSA")
    assert "\nclass MHSA(nn.Module):\n" in after
    compile(after, "conv.py", "exec")
    assert run_remove(ClassDefEdit(), after) == before


def test_class_follows_host_line_endings():
    before = "import torch\r\nfrom torch import nn\r\n\r\n\r\nclass Conv(nn.Module):\r\n    pass\r\n"
    after = run_add(ClassDefEdit(), before)
    assert "\n" not in after.replace("\r\n", "")
    assert run_remove(ClassDefEdit(), after) == before


@pytest.mark.parametrize(
    "edit, src",
    [
        (AllEntry(), '__all__ = (\n    "Conv",\n    "MHSA",\n)\n'),
        (ImportEntry(".conv"), "from .conv import (Conv, MHSA)\n"),
        (ImportEntry("ultralytics.nn.modules"), "from ultralytics.nn.modules.conv import MHSA\n"),
        (ClassDefEdit(), "class MHSA(nn.Module):\n    pass\n"),
        (ParseModelBranch(), PARSE_MODEL.replace("        else:", "        elif m is MHSA:\n            args = [ch[f], *args]\n        else:")),
        (ParseModelBranch(), PARSE_MODEL.replace("m in base_modules", "m in {Conv, MHSA}")),
    ],
)
def test_hand_pasted_pieces_are_found_unmarked_and_removable(edit, src):
    module = cst.parse_module(src)
    (found,) = edit.find(module, LAYER)
    assert not found.marked
    removed = edit.remove(module, LAYER, found)
    assert edit.find(removed, LAYER) == []


# Issue 22 D.4: an edit touches only its own lines. Each case: a fork's file, the layers added one after the other
# (MHSA, then BoT3, as apply adds them), the text the user had on their lines unchanged, the marker only on lines
# that hold the tool's names, and each removal the exact inverse.
FORK_LINES = [
    # a wrapped __all__ (8.0.x) whose last line is the fork's, with a trailing comma and a note: a line of its own
    (
        "__all__ = ('Conv', 'Conv2',\n           'RepConv',\n           'ShuffleAttention', 'ECA',  # 添加\n)\n",
        "__all__ = ('Conv', 'Conv2',\n           'RepConv',\n           'ShuffleAttention', 'ECA',  # 添加\n"
        "           'MHSA', 'BoT3',  # mhsa-patch\n)\n",
    ),
    # the same without a trailing comma, the closing bracket on a line of its own
    (
        "__all__ = ('Conv', 'Conv2',\n           'ShuffleAttention', 'ECA'  # 添加\n           )\n",
        "__all__ = ('Conv', 'Conv2',\n           'ShuffleAttention', 'ECA',  # 添加\n"
        "           'MHSA', 'BoT3'  # mhsa-patch\n           )\n",
    ),
    # one name per line (8.1+) but the fork's line holds two names: no longer one per line, still not the fork's line
    (
        '__all__ = (\n    "Conv",\n    "RepConv",\n    "ShuffleAttention", "ECA",  # 添加\n)\n',
        '__all__ = (\n    "Conv",\n    "RepConv",\n    "ShuffleAttention", "ECA",  # 添加\n    "MHSA",  # mhsa-patch\n'
        '    "BoT3",  # mhsa-patch\n)\n',
    ),
]


def _both_layers(edit, src: str) -> str:
    module = cst.parse_module(src)
    for layer in layers():
        assert edit.find(module, layer) == []
        module = edit.add(module, layer)
    return module.code


def _remove_both(edit, src: str) -> str:
    module = cst.parse_module(src)
    for layer in reversed(layers()):  # the last inserted first, as revert does
        (found,) = edit.find(module, layer)
        assert found.marked and found.current, (layer.name, src)
        module = edit.remove(module, layer, found)
    return module.code


@pytest.mark.parametrize("before, after", FORK_LINES, ids=["wrapped-trailing-comma", "wrapped-closing-line", "two-names"])
def test_the_marker_never_lands_on_a_forks_line_that_ends_with_a_comment(before, after):
    applied = _both_layers(AllEntry(), before)
    assert applied == after
    for line in applied.splitlines():
        if "# mhsa-patch" in line:  # the marker's line holds the tool's names alone
            assert "添加" not in line and not {"Conv", "RepConv", "ShuffleAttention", "ECA"} & set(
                w.strip(" '\"()") for w in line.split("#")[0].split(",")
            ), line
    assert _remove_both(AllEntry(), applied) == before


# The same in an import (there the comma after the last name holds the end of its line): a wrapped import whose last
# line ends with the fork's note, and one whose names share lines without a note (appended to the last line).
FORK_IMPORT_LINES = [
    (
        "from .conv import (CBAM, Conv,\n                   RepConv, ShuffleAttention,  # 添加\n                   )\n",
        "from .conv import (CBAM, Conv,\n                   RepConv, ShuffleAttention,  # 添加\n"
        "                   MHSA, BoT3,  # mhsa-patch\n                   )\n",
    ),
    (
        "from .conv import (\n    CBAM, ShuffleAttention,\n    SpatialAttention,\n)\n",
        "from .conv import (\n    CBAM, ShuffleAttention,\n    SpatialAttention, MHSA, BoT3,  # mhsa-patch\n)\n",
    ),
]


@pytest.mark.parametrize("before, after", FORK_IMPORT_LINES, ids=["noted-last-line", "names-sharing-lines"])
def test_the_marker_never_lands_on_a_forks_noted_import_line(before, after):
    applied = _both_layers(ImportEntry(".conv"), before)
    assert applied == after
    assert _remove_both(ImportEntry(".conv"), applied) == before  # BoT3 out, MHSA keeps the marker, then MHSA out


def test_a_long_line_wrapped_after_the_tools_first_name_keeps_its_marker():
    """Past 120 columns BoT3 goes to a line of its own: MHSA, left on the line before, keeps a marker there (it was
    left unmarked: status called it hand-written and revert by pieces left it in)."""
    names = ", ".join(f"'Name{i:02d}'" for i in range(10))
    # the fork's first line is 146 columns: MHSA fits on the last line (no longer than the longest), BoT3 does not
    last = "'" + "Z" * 103 + "'"
    before = f"__all__ = ('A', 'B', {names}, 'ShuffleAttention',  # 添加\n           {last})\n"
    applied = _both_layers(AllEntry(), before)
    assert applied.endswith(f"\n           {last}, 'MHSA',  # mhsa-patch\n           'BoT3')  # mhsa-patch\n"), applied
    assert _remove_both(AllEntry(), applied) == before


def test_removing_a_forks_import_leaves_the_lines_around_it():
    """The blank line and the comment above a hand-written import are not its lines: they stay."""
    src = ("import torch\nfrom ultralytics.nn.modules import (\n    SPPF,\n)\n\n# the fork's attention\n"
           "from ultralytics.nn.modules.MHSA import MHSA\n\n\ndef parse_model():\n    pass\n")
    edit = ImportEntry("ultralytics.nn.modules")
    module = cst.parse_module(src)
    (found,) = edit.find(module, LAYER)
    assert not found.marked
    assert edit.remove(module, LAYER, found).code == src.replace("from ultralytics.nn.modules.MHSA import MHSA\n", "")


def test_removing_a_forks_branch_leaves_the_commented_out_branch_above_it():
    commented = "        # elif m is MHSA:\n        #     args = [ch[f], *args]\n"
    live = "        elif m is MHSA:\n            c1 = ch[f]\n            args = [c1, *args[0:]]\n"
    src = PARSE_MODEL.replace("        else:\n", commented + live + "        else:\n")
    module = cst.parse_module(src)
    (found,) = ParseModelBranch().find(module, LAYER)
    assert not found.marked
    assert ParseModelBranch().remove(module, LAYER, found).code == src.replace(live, "")


def test_already_applied_is_found_current_so_apply_is_a_no_op():
    for rel, edits in EDITS.items():
        for edit in edits:
            if not edit.inserts:  # StarRebind: only after a fork's star import (tests/test_forks.py)
                continue
            if edit.mode(LAYER) != "insert":  # UserImport: a user layer's (tests/test_user_layers.py)
                continue
            src = {
                "__all__": '__all__ = (\n    "Conv",\n)\n',
                "import": f"from {edit.module_name if isinstance(edit, ImportEntry) else ''} import (\n    Conv,\n)\n",
                "class": "import torch\n",
                "branch": PARSE_MODEL,
            }[edit.key]
            once = cst.parse_module(run_add(edit, src))
            (found,) = edit.find(once, LAYER)
            assert found.marked and found.current, (rel, edit.key)


# -- properties over generated sequence layouts ------------------------------------------------------------------------

names_st = st.lists(st.from_regex(r"[A-Z][A-Za-z0-9]{0,10}", fullmatch=True), min_size=1, max_size=12, unique=True)


@settings(max_examples=150, deadline=None)
@given(
    names=names_st.filter(lambda ns: "MHSA" not in ns),
    one_per_line=st.booleans(),
    trailing=st.booleans(),
    quote=st.sampled_from(["'", '"']),
    bracket=st.sampled_from(["[]", "()"]),
    do_sort=st.booleans(),
    comment=st.sampled_from(["", "  # 添加", " #add"]),
    own_line=st.booleans(),
)
def test_all_entry_roundtrip_property(names, one_per_line, trailing, quote, bracket, do_sort, comment, own_line):
    names = sorted(names) if do_sort else names
    trailing = trailing or (bracket == "()" and len(names) == 1)  # ('A') is a string, not a tuple
    items = [f"{quote}{n}{quote}" for n in names]
    if one_per_line:  # the last name may carry a comment, and a comment line may stand before the closing bracket
        last = f"    {items[-1]}{',' if trailing else ''}{comment}\n" + ("    # the end\n" if own_line else "")
        body = "".join(f"    {it},\n" for it in items[:-1]) + last
        src = f"__all__ = {bracket[0]}\n{body}{bracket[1]}\n"
    else:
        src = f"__all__ = {bracket[0]}{', '.join(items)}{',' if trailing else ''}{bracket[1]}{comment}\n"
    applied = run_add(AllEntry(), src)
    module = cst.parse_module(applied)
    namespace: dict = {}
    exec(applied, namespace)
    assert set(namespace["__all__"]) == set(names) | {"MHSA"}
    (found,) = AllEntry().find(module, LAYER)
    assert found.marked and found.current
    if comment:  # the user's comment is still on the line of a user's name
        (line,) = [ln for ln in applied.splitlines() if ln.endswith(comment.strip())]
        assert "MHSA" not in line and any(it in line for it in items), applied
    assert run_remove(AllEntry(), applied) == src
