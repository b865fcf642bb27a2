"""Issue 8 B: taking over hand-patched forks, losing nothing.

Each fixture is a fork shape built on a real release copy (tests/forks.py, no third-party code): a branch shared with
another module, a star import of the fork's module, the class in its own module imported by ``nn/modules/__init__``,
a second ``if`` chain, a commented-out copy, ``args[0:]`` and "scaled channels" branches, MHSA in a set, a star-imported
package of extra modules, fork classes using MHSA internally, and a different class named MHSA. For each: ``status``
lists every hand-written piece with its line, ``apply`` refuses, ``apply --force`` takes over (only MHSA's pieces go;
models that built before build after, with the same parameter count, and use the tool's class), and ``revert`` gives
the fork back byte for byte.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import forks
import releases
from helpers import assert_refused, cli
from reference_layers import REFERENCE_BOT3_SOURCE, TUTORIAL_SOURCE

pytestmark = pytest.mark.releases

# Rows (repeats, module, args) as each reading builds them on the 64-channel input (256 at width 0.25):
MHSA_ROW = "1, MHSA, [14, 14, 4]"  # tutorial: MHSA(64, 14, 14, 4)
SHUFFLE_ROW = "1, ShuffleAttention, [4]"
SCALED_ROW = "1, MHSA, [256, 14, 14, 4]"  # scaled-channels: c2 = 64 = c1, MHSA(64, 14, 14, 4)
BASE_ROW = "1, MHSA, [256, 14, 4]"  # base_modules: c2 = 64 = c1, MHSA(64, 64, 14, 4)
BOT3_ROW = "3, BoT3, [256]"  # base_modules (no repeat set): BoT3(64, 64) three times in a row

# A fork class using MHSA internally, in the same file as the MHSA it uses.
USES_MHSA = '''

class MHSABlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attn = MHSA(c, 14, 14, 4)

    def forward(self, x):
        return x + self.attn(x)
'''

SHUFFLE_CLASS = forks.SHUFFLE_ATTENTION_MODULE.split("\n\n\n", 1)[1]
COMMENTED_COPY = "\n" + "".join(f"# {ln}\n" if ln else "#\n" for ln in TUTORIAL_SOURCE.strip("\n").splitlines()[:4])
SCALED = "c1, c2 = ch[f], args[0]\nc2 = make_divisible(min(c2, max_channels) * width, 8)\nargs = [c1, *args[1:]]"


def shared_branch(root: Path) -> Path:  # 8.4.190: MHSA in its own file, its branch shared with ShuffleAttention
    return forks.build_fork(
        "8.4.190", root,
        {"nn/modules/MHSA.py": forks.TUTORIAL_MODULE, "nn/modules/shuffle.py": forks.SHUFFLE_ATTENTION_MODULE},
        ["from ultralytics.nn.modules.MHSA import MHSA", "from ultralytics.nn.modules.shuffle import ShuffleAttention"],
        {"m in {MHSA, ShuffleAttention}": forks.CHANNELS_FIRST},
    )


def star_import(root: Path) -> Path:  # 8.3.52: star import after ultralytics' imports, args[0:] branch
    return forks.build_fork(
        "8.3.52", root,
        {"nn/modules/MHSA.py": forks.TUTORIAL_MODULE + USES_MHSA},
        ["from ultralytics.nn.modules.MHSA import *"],
        {"MHSA": "args = [ch[f], *args[0:]]"},
    )


def init_module_second_chain(root: Path) -> Path:  # 8.0.200: nn/modules/__init__ imports it; a second if chain
    return forks.build_fork(
        "8.0.200", root,
        {"nn/modules/MHSA.py": forks.TUTORIAL_MODULE},
        ["from ultralytics.nn.modules import MHSA"],
        edits={"nn/modules/__init__.py": [("\n__all__ = ('Conv',", "from .MHSA import MHSA\n\n__all__ = ('MHSA', 'Conv',")]},
        second_chain={"MHSA": forks.CHANNELS_FIRST},
    )


def pasted_in_conv(root: Path) -> Path:  # 8.0.207: the tutorial pasted in conv.py, BoT3 and a class using MHSA
    conv = (releases.pristine("8.0.207") / "nn/modules/conv.py").read_text()
    conv += COMMENTED_COPY + TUTORIAL_SOURCE + REFERENCE_BOT3_SOURCE + USES_MHSA
    return forks.build_fork(
        "8.0.207", root,
        {"nn/modules/conv.py": conv},
        [],
        {"MHSA": SCALED},
        edits={
            "nn/modules/conv.py": [("__all__ = ('Conv',", "__all__ = ('Conv', 'MHSA',")],
            "nn/modules/__init__.py": [
                ("from .conv import (CBAM,", "from .conv import (MHSA, CBAM,"),
                ("\n__all__ = ('Conv',", "\n__all__ = ('MHSA', 'Conv',"),
            ],
            "nn/tasks.py": [("from ultralytics.nn.modules import (AIFI,", "from ultralytics.nn.modules import (MHSA, AIFI,")],
        },
    )


def extra_modules_in_set(root: Path) -> Path:  # 8.3.52: a star-imported package defines it; MHSA in the chain's set
    return forks.build_fork(
        "8.3.52", root,
        {"nn/extra_modules/__init__.py": "from .attention import *\n",
         "nn/extra_modules/attention.py": forks.TUTORIAL_MODULE + "\n" + SHUFFLE_CLASS},
        ["from ultralytics.nn.extra_modules import *"],
        edits={"nn/tasks.py": [("\n        if m in {\n", "\n        if m in {\n            MHSA,\n")]},
    )


def base_modules(root: Path) -> Path:  # 8.4.190: MHSA added to base_modules
    return forks.build_fork(
        "8.4.190", root,
        {"nn/modules/MHSA.py": forks.TUTORIAL_MODULE},
        ["from ultralytics.nn.modules.MHSA import MHSA"],
        edits={"nn/tasks.py": [("    base_modules = frozenset(\n        {\n", "    base_modules = frozenset(\n        {\n            MHSA,\n")]},
    )


def foreign(root: Path) -> Path:  # 8.0.147: a different class named MHSA (nn.MultiheadAttention)
    return forks.build_fork(
        "8.0.147", root,
        {"nn/modules/attention_fork.py": forks.MULTIHEAD_MODULE},
        ["from ultralytics.nn.modules.attention_fork import MHSA"],
        {"MHSA": forks.CHANNELS_FIRST},
    )


BOT3_MODULE = "import torch\nimport torch.nn as nn\n\nfrom ultralytics.nn.modules.conv import Conv\n" + (
    TUTORIAL_SOURCE + REFERENCE_BOT3_SOURCE
)


def bot3_base_modules(root: Path) -> Path:  # 8.3.135: BoT3 in base_modules, not in repeat_modules
    return forks.build_fork(
        "8.3.135", root,
        {"nn/modules/bot3.py": BOT3_MODULE},
        ["from ultralytics.nn.modules.bot3 import BoT3"],
        edits={"nn/tasks.py": [("            A2C2f,\n        }\n    )\n    repeat_modules", "            A2C2f,\n            BoT3,\n        }\n    )\n    repeat_modules")]},
    )


def scaled_channels(root: Path) -> Path:  # 8.2.103: MHSA in its own file, a scaled-channel branch, the fork's YAML
    site = forks.build_fork(
        "8.2.103", root,
        {"nn/modules/MHSA.py": forks.TUTORIAL_MODULE},
        ["from ultralytics.nn.modules.MHSA import MHSA"],
        {"MHSA": SCALED},
    )
    (site / "ultralytics" / FORK_YAML).write_text(forks.MODEL.replace("LAYER", SCALED_ROW))
    return site


FORK_YAML = "cfg/models/v8/fork-MHSA.yaml"  # the scaled-channel fork's own model config, in its package


# (builder, the hand-written pieces status must list: (file, edit, layer), rows of models that must keep building)
SHAPES = {
    "shared-branch": (shared_branch, {("nn/tasks.py", "import", "MHSA"), ("nn/tasks.py", "branch", "MHSA")},
                      [MHSA_ROW, SHUFFLE_ROW]),
    "star-import": (star_import, {("nn/tasks.py", "star-import", "MHSA"), ("nn/tasks.py", "branch", "MHSA")}, [MHSA_ROW]),
    "init-module-second-chain": (
        init_module_second_chain,
        {("nn/modules/__init__.py", "import", "MHSA"), ("nn/modules/__init__.py", "__all__", "MHSA"),
         ("nn/tasks.py", "import", "MHSA"), ("nn/tasks.py", "branch", "MHSA")},
        [MHSA_ROW],
    ),
    "pasted-in-conv": (
        pasted_in_conv,
        {("nn/modules/conv.py", "class", "MHSA"), ("nn/modules/conv.py", "__all__", "MHSA"),
         ("nn/modules/conv.py", "class", "BoT3"), ("nn/modules/__init__.py", "import", "MHSA"),
         ("nn/modules/__init__.py", "__all__", "MHSA"), ("nn/tasks.py", "import", "MHSA"), ("nn/tasks.py", "branch", "MHSA")},
        [SCALED_ROW],
    ),
    "extra-modules-in-set": (extra_modules_in_set, {("nn/tasks.py", "star-import", "MHSA"), ("nn/tasks.py", "branch", "MHSA")},
                             [BASE_ROW]),
    "base-modules": (base_modules, {("nn/tasks.py", "import", "MHSA"), ("nn/tasks.py", "branch", "MHSA")}, [BASE_ROW]),
    "bot3-base-modules": (bot3_base_modules, {("nn/tasks.py", "import", "BoT3"), ("nn/tasks.py", "branch", "BoT3")},
                          [BOT3_ROW]),
    "scaled-channels": (scaled_channels, {("nn/tasks.py", "import", "MHSA"), ("nn/tasks.py", "branch", "MHSA")},
                        [FORK_YAML]),
}


# The shapes whose branch reads a layer's rows otherwise than the tool's rule: --force keeps it (layer -> reading).
KEPT = {
    "pasted-in-conv": {"MHSA": "scaled-channels"},
    "extra-modules-in-set": {"MHSA": "base_modules"},
    "base-modules": {"MHSA": "base_modules"},
    "bot3-base-modules": {"BoT3": "base_modules"},
    "scaled-channels": {"MHSA": "scaled-channels"},
}


def write_models(dest: Path, rows: list[str], pkg: Path) -> list[str]:
    """A config per row (a row that names a YAML of the fork's package is that file, built where it is)."""
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, row in enumerate(rows):
        if row.endswith(".yaml"):
            paths.append(str(pkg / row))
            continue
        path = dest / f"fork{k}.yaml"
        path.write_text(forks.MODEL.replace("LAYER", row))
        paths.append(str(path))
    return paths


def lint_calls(pkg: Path, cfg: str, hint) -> list[str]:
    """``check --lint-only``'s lines for the patch's layers' rows (each with its call and reading); ``hint``: the
    apply command it must suggest (None: none, the patch is applied)."""
    r = cli("check", cfg, "--lint-only", "-t", str(pkg))
    assert r.exit_code == 0, r.output
    lines = [ln.strip() for ln in r.stdout.splitlines() if ", read as " in ln]
    if not lines:  # a config without the patch's layers (the other module of a shared branch)
        return lines
    if hint:  # the command that works, with the --target the user gave (its flags after it)
        flags = hint.removeprefix("mhsa-patch apply")
        assert f"run 'mhsa-patch apply --target {pkg}{flags}' before building" in r.stdout, r.stdout
    else:
        assert "is not patched" not in r.stdout, r.stdout
    return lines


def unmarked(pkg: Path) -> list[dict]:
    r = cli("status", "-t", str(pkg), "--json")
    assert r.exit_code == 0, r.output
    st = json.loads(r.stdout)
    assert st["state"] == "conflict"
    return [{"file": rel, **p} for rel, f in st["files"].items() for p in f["pieces"] if p["state"] == "unmarked"]


def check_status_lists_each_piece(pkg: Path, expected: set) -> list[dict]:
    pieces = unmarked(pkg)
    assert {(p["file"], p["edit"], p["layer"]) for p in pieces} >= expected, pieces
    for p in pieces:  # each with its line, which holds the piece
        assert p["line"], p
        line = (pkg / p["file"]).read_text().splitlines()[p["line"] - 1]
        assert p["layer"] in line or "import *" in line or "BottleneckTransformer" in line, (p, line)
    return pieces


@pytest.mark.parametrize("shape", list(SHAPES))
def test_force_takes_over_a_fork_and_revert_gives_it_back(tmp_path, shape):
    builder, expected, rows = SHAPES[shape]
    site = builder(tmp_path)
    pkg = site / "ultralytics"
    fork = releases.tree_bytes(pkg)
    cfgs = write_models(tmp_path / "models", rows, pkg)
    assert cfgs, f"{shape}: no model config to build before and after --force"
    before = forks.build_models(site, cfgs)

    pieces = check_status_lists_each_piece(pkg, expected)
    kept = KEPT.get(shape, {})
    lint_before = [lint_calls(pkg, cfg, "mhsa-patch apply --force") for cfg in cfgs]
    assert any(lint_before), lint_before  # every shape has a row of the patch's layers that the lint reads
    r = cli("apply", "-t", str(pkg))
    line = assert_refused(r, "--force")
    assert any(f"{pkg / p['file']}:{p['line']}:" in line for p in pieces), line  # names one of them
    assert releases.tree_bytes(pkg) == fork

    r = cli("apply", "--force", "-t", str(pkg))
    assert r.exit_code == 0, r.output
    # a branch that reads the rows otherwise (scaled channels, base_modules without the repeat set) is kept, and said
    assert r.stderr.count("kept the fork's reading") == len(kept), r.stderr
    for layer, reading in kept.items():  # naming the fork's reading and the tool's (BoT3's is not the tutorial's)
        tool = "base_modules+repeat" if layer == "BoT3" else "tutorial"
        assert f"of {layer}'s rows ('{reading}': " in r.stderr and f"instead of the tool's ('{tool}')" in r.stderr
    # the lint reads every row as the target does, before and after apply
    def unlined(calls):  # the branch moves down by the lines apply inserts above it
        return [[re.sub(r"nn/tasks\.py:\d+", "nn/tasks.py:N", c) for c in cs] for cs in calls]

    assert unlined([lint_calls(pkg, cfg, None) for cfg in cfgs]) == unlined(lint_before)
    st = json.loads(cli("status", "-t", str(pkg), "--json").stdout)
    assert st["state"] == "applied", st
    for layer, reading in kept.items():
        assert st["readings"][layer]["reading"] == reading, st["readings"]
        kept_pieces = [p for p in st["files"]["nn/tasks.py"]["pieces"] if p["layer"] == layer and p["edit"] == "branch"]
        assert kept_pieces and all(p["state"] == "kept" and p["line"] for p in kept_pieces), kept_pieces
    for layer in set(st["layers"]) - set(kept):
        assert st["readings"][layer]["reading"] == "mhsa-patch", st["readings"]
    plain = cli("status", "-t", str(pkg)).stdout
    for layer, reading in kept.items():
        line = next(ln for ln in plain.splitlines() if ln.startswith(f"parse_model reads {layer} rows:"))
        assert f"rows: {reading} (line {st['readings'][layer]['line']})" in line, line
    journal = json.loads((pkg / ".mhsa-patch-journal.json").read_text())
    assert journal["readings"] == {layer: kept.get(layer, "mhsa-patch") for layer in st["layers"]}
    new = releases.tree_bytes(pkg)
    changed = {rel for rel in fork if fork[rel] != new.get(rel)}
    assert changed <= {"nn/modules/conv.py", "nn/modules/__init__.py", "nn/tasks.py"}  # the fork's own files untouched

    extra = ""
    if shape == "pasted-in-conv":  # fork classes in conv.py that use MHSA now get the tool's, BoT3 is the tool's
        extra = (
            "from ultralytics.nn.modules.conv import MHSABlock, BoT3\n"
            "b = MHSABlock(64); t = BoT3(64, 64)\n"
            "out.append([type(b.attn).__module__, hasattr(b.attn, '_attend_fused'), b(torch.rand(1, 64, 8, 8)).shape[1],"
            " any(hasattr(m, '_attend_fused') for m in t.modules())])"
        )
    if shape == "star-import":  # the fork's own class in its own file keeps working
        extra = "from ultralytics.nn.modules.MHSA import MHSABlock\nout.append(MHSABlock(64)(torch.rand(1, 64, 8, 8)).shape[1])"
    if shape == "bot3-base-modules":  # the fork's reading: three BoT3 blocks in a row (ours would build one, n=3)
        extra = "out.append(sum(type(m).__name__ == 'BoT3' for m in model.modules()))"
    if shape == "scaled-channels":  # MHSA(64, 14, 14, 4), no positional tables (ours: MHSA(64, 256, 14, 14, 4))
        extra = "out.append([(m.query.in_channels, m.pos) for m in mhsa])"
    after = forks.build_models(site, cfgs, extra)
    if shape == "bot3-base-modules":
        assert after[-1] == 3
        assert lint_before[0][0].startswith("layer 4: BoT3(c1=64, c2=64, n=1, e=0.5, e2=1, w=20, h=20) ×3 in a row")
        assert "read as 'base_modules' (the fork's branch at nn/tasks.py:" in lint_before[0][0]
    if shape == "scaled-channels":
        assert after[-1] == [[64, False]]
        assert lint_before[0][0].startswith("layer 4: MHSA(n_dims=64, width=14, height=14, heads=4, pos_emb=False)")
    assert len(after) >= len(before) == len(cfgs)
    for b, a in zip(before, after):  # the same model: parameter count, state_dict keys and shapes
        assert a["params"] == b["params"]
        assert a["state"] == b["state"]
        assert all(m == ["ultralytics.nn.modules.conv", True] for m in a["mhsa"]), a
    if shape == "pasted-in-conv":
        assert after[-1] == ["ultralytics.nn.modules.conv", True, 64, True]
        conv = (pkg / "nn/modules/conv.py").read_text()
        assert COMMENTED_COPY.strip() in conv  # the commented-out copy stays
    if shape == "star-import":
        assert after[-1] == 64
    if rows and MHSA_ROW in rows:
        assert after[0]["mhsa"], after

    r = cli("revert", "-t", str(pkg))
    assert r.exit_code == 0, r.output
    assert releases.tree_bytes(pkg) == fork  # the fork as it was, hand-written pieces included


def test_shared_branch_keeps_the_other_module_byte_identical(tmp_path):
    site = shared_branch(tmp_path)
    tasks = site / "ultralytics/nn/tasks.py"
    text = tasks.read_text()
    assert cli("apply", "--force", "-t", str(site)).exit_code == 0
    new = tasks.read_text()
    assert "from ultralytics.nn.modules.shuffle import ShuffleAttention\n" in new
    assert "        elif m in {ShuffleAttention}:\n            c2 = ch[f]\n            args = [c2, *args]\n" in new
    assert "from ultralytics.nn.modules.MHSA import MHSA\n" not in new
    # without the tool's marked pieces, the text is the fork's minus MHSA's own: the import line, the name in the set
    from mhsa_patch.patching.filemodel import TargetFile
    from mhsa_patch.patching.target import find_target

    stripped = TargetFile(find_target(site), "nn/tasks.py", new.encode()).without_pieces(unmarked=False)
    expected = text.replace("from ultralytics.nn.modules.MHSA import MHSA\n", "").replace(
        "{MHSA, ShuffleAttention}", "{ShuffleAttention}"
    )
    assert stripped == expected


def test_star_import_is_followed_by_the_tools_import(tmp_path):
    site = star_import(tmp_path)
    pkg = site / "ultralytics"
    (p,) = [p for p in unmarked(pkg) if p["edit"] == "star-import"]
    assert p["origin"].startswith("nn/modules/MHSA.py:")
    assert cli("apply", "--force", "-t", str(pkg)).exit_code == 0
    text = (pkg / "nn/tasks.py").read_text()
    assert "from ultralytics.nn.modules.MHSA import *\nfrom ultralytics.nn.modules.conv import MHSA  # mhsa-patch\n" in text


def test_foreign_mhsa_is_refused_naming_file_and_line(tmp_path):
    site = foreign(tmp_path)
    pkg = site / "ultralytics"
    fork = releases.tree_bytes(pkg)
    check_status_lists_each_piece(pkg, {("nn/tasks.py", "import", "MHSA"), ("nn/tasks.py", "branch", "MHSA")})
    line = forks.MULTIHEAD_MODULE.splitlines().index("class MHSA(nn.Module):") + 1
    # the lint suggests the apply that works here, and after it warns on a row written for the foreign class
    (cfg,) = write_models(tmp_path / "models", ["1, MHSA, [512, 1024, 4]"], pkg)
    r = cli("check", cfg, "--lint-only", "-t", str(pkg))
    assert r.exit_code == 0 and f"run 'mhsa-patch apply --target {pkg} --replace-foreign' before building" in r.stdout, r.output
    r = cli("apply", "--force", "-t", str(pkg))
    assert_refused(r, f"{pkg / 'nn/modules/attention_fork.py'}:{line}", "not the tutorial's", "--replace-foreign")
    assert releases.tree_bytes(pkg) == fork

    r = cli("apply", "--replace-foreign", "-t", str(pkg))
    assert r.exit_code == 0, r.output
    assert json.loads(cli("status", "-t", str(pkg), "--json").stdout)["state"] == "applied"
    assert (pkg / "nn/modules/attention_fork.py").read_text() == forks.MULTIHEAD_MODULE
    r = cli("check", cfg, "--lint-only", "-t", str(pkg))
    assert r.exit_code == 0 and "width=512 and height=1024 look like channel counts" in r.stderr, r.output
    assert "is not patched" not in r.stdout
    assert cli("revert", "-t", str(pkg)).exit_code == 0
    assert releases.tree_bytes(pkg) == fork


def test_foreign_class_pasted_in_conv_is_refused(tmp_path):
    pkg = releases.copy_release("8.4.190", tmp_path / "site")
    conv = pkg / "nn/modules/conv.py"
    src = conv.read_text()
    conv.write_text(src + "\n" + forks.MULTIHEAD_MODULE.split("\n\n\n", 1)[1])
    line = len(src.splitlines()) + 2
    r = cli("apply", "--force", "-t", str(pkg))
    assert_refused(r, f"{conv}:{line}", "class MHSA is not the tutorial's")


# gen-yaml on each recognised reading: (fork builder or None for the stock release, release, layer, scale)
# and the row it writes.
GEN_YAML = {
    "tutorial": (None, "8.3.135", "MHSA", "n", "[-1, 1, MHSA, [14, 14, 4]]"),
    "base_modules+repeat": (None, "8.3.135", "BoT3", "m", "[-1, 3, BoT3, [1024]]"),
    "scaled-channels": (scaled_channels, "8.2.103", "MHSA", "n", "[-1, 1, MHSA, [1024, 14, 14, 4]]"),
    # scale m: depth 0.67 keeps 2 of C2f's 3 repeats, which go inside the one block as the tool's rule builds it
    "base_modules": (bot3_base_modules, "8.3.135", "BoT3", "m", "[-1, 1, BoT3, [1024, 2]]"),
}


def gen_yaml(pkg: Path, layer: str, scale: str, dest: Path) -> Path:
    dest.mkdir(parents=True)
    r = cli("gen-yaml", "-s", scale, "--base", "yolov8", "--layer", layer, "-o", str(dest), "-t", str(pkg))
    assert r.exit_code == 0, r.output
    (path,) = dest.glob("*.yaml")
    return path


@pytest.mark.parametrize("reading", list(GEN_YAML))
def test_gen_yaml_writes_rows_for_the_targets_reading(tmp_path, reading):
    """gen-yaml's YAML builds the tool's intended model under the target's reading, kept by --force on a fork: the
    same model as gen-yaml's YAML on the same release, patched as it ships."""
    builder, version, layer, scale, row = GEN_YAML[reading]
    stock = releases.copy_release(version, tmp_path / "stock")
    assert cli("apply", "-t", str(stock)).exit_code == 0
    want = gen_yaml(stock, layer, scale, tmp_path / "stock-yaml")
    site = builder(tmp_path / "fork") if builder else stock.parent
    pkg = site / "ultralytics"
    if builder:
        assert cli("apply", "--force", "-t", str(pkg)).exit_code == 0
    st = json.loads(cli("status", "-t", str(pkg), "--json").stdout)
    assert st["readings"][layer]["reads_as"] == reading, st["readings"]
    got = gen_yaml(pkg, layer, scale, tmp_path / "fork-yaml")
    rows = [ln for ln in got.read_text().splitlines() if f", {layer}, [" in ln]
    assert len(rows) == 1 and row in rows[0], rows
    if builder:  # a row of its own for the fork's reading
        assert rows != [ln for ln in want.read_text().splitlines() if f", {layer}, [" in ln]
    (a,) = forks.build_models(site, [str(got)])
    (b,) = forks.build_models(stock.parent, [str(want)])
    assert a["params"] == b["params"] and a["state"] == b["state"]


def test_gen_yaml_refuses_a_reading_that_cannot_give_the_model_naming_the_branch(tmp_path):
    """MHSA in base_modules is called MHSA(c1, c2, ...): c2 lands on width, so no row gives MHSA(c, 14, 14, 4)."""
    site = base_modules(tmp_path)
    pkg = site / "ultralytics"
    assert cli("apply", "--force", "-t", str(pkg)).exit_code == 0
    line = json.loads(cli("status", "-t", str(pkg), "--json").stdout)["readings"]["MHSA"]["line"]
    r = cli("gen-yaml", "-s", "n", "--base", "yolov8", "-o", str(tmp_path / "y"), "-t", str(pkg))
    assert_refused(r, f"{pkg / 'nn/tasks.py'}:{line}", "'base_modules'", "no row builds the intended MHSA(")
