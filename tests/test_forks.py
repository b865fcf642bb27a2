"""Issue 8 B: taking over hand-patched forks, losing nothing; issue 22 D: the field's fourth round.

Each fork shape is built on a real release copy (tests/fork_shapes.py, no third-party code), once for the session
(the ``fork_trees`` fixture, shared with test_fork_anchors.py): a branch shared with another module, a star import of
the fork's module, the class in its own module imported by ``nn/modules/__init__``, a second ``if`` chain, a
commented-out copy, ``args[0:]`` and "scaled channels" branches, MHSA in a set, a star-imported package of extra
modules, fork classes using MHSA internally, a different class named MHSA; and the field's shapes: a list branch
shared with 17 attentions (MHSA in a new folder under ``nn/modules/``, commented-out branch and import), CRLF sources
with committed ``__pycache__`` and a tuple branch spelled otherwise, four-value scale rows. For each: ``status`` lists
every hand-written piece with its line, ``apply`` refuses, ``apply --force`` takes over (only MHSA's pieces go; models
that built before build after, with the same parameter count, and use the tool's class), and ``revert`` gives the fork
back byte for byte.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import forks
import releases
from fork_shapes import (
    BOT3_ROW,
    BOT3_YOLOV8N,
    COMMENTED_BRANCH,
    COMMENTED_COPY,
    COMMENTED_IMPORT,
    FOUR_YAML,
    MHSA_ROW,
    THREE_YAML,
)
from helpers import assert_refused, cli

pytestmark = pytest.mark.releases

# The hand-written pieces status must list on each shape, as (file, edit, layer).
TASKS_PIECES = {("nn/tasks.py", "import", "MHSA"), ("nn/tasks.py", "branch", "MHSA")}
PIECES = {
    "shared-branch": TASKS_PIECES,
    "star-import": {("nn/tasks.py", "star-import", "MHSA"), ("nn/tasks.py", "branch", "MHSA")},
    "init-module-second-chain": TASKS_PIECES | {("nn/modules/__init__.py", "import", "MHSA"),
                                                ("nn/modules/__init__.py", "__all__", "MHSA")},
    "pasted-in-conv": TASKS_PIECES | {
        ("nn/modules/conv.py", "class", "MHSA"), ("nn/modules/conv.py", "__all__", "MHSA"),
        ("nn/modules/conv.py", "class", "BoT3"), ("nn/modules/__init__.py", "import", "MHSA"),
        ("nn/modules/__init__.py", "__all__", "MHSA")},
    "extra-modules-in-set": {("nn/tasks.py", "star-import", "MHSA"), ("nn/tasks.py", "branch", "MHSA")},
    "base-modules": TASKS_PIECES,
    "bot3-base-modules": {("nn/tasks.py", "import", "BoT3"), ("nn/tasks.py", "branch", "BoT3")},
    "scaled-channels": TASKS_PIECES,
    "field-list": TASKS_PIECES,
    "field-crlf": TASKS_PIECES,
    "four-value-scales": TASKS_PIECES,
}

# The shapes whose branch reads a layer's rows otherwise than the tool's rule: --force keeps it (layer -> reading).
# The field's list and tuple branches compute the tutorial's call: they are not kept (issue 22 D.2).
KEPT = {
    "pasted-in-conv": {"MHSA": "scaled-channels"},
    "extra-modules-in-set": {"MHSA": "base_modules"},
    "base-modules": {"MHSA": "base_modules"},
    "bot3-base-modules": {"BoT3": "base_modules"},
    "scaled-channels": {"MHSA": "scaled-channels"},
}


def lint_calls(pkg: Path, cfg: str, hint) -> list[str]:
    """``check --lint-only``'s lines for the patch's layers' rows (each with its call and reading); ``hint``: the
    apply command it must suggest (None: none, the patch is applied)."""
    r = cli("check", cfg, "--lint-only", "-t", str(pkg))
    assert r.exit_code == 0, r.output
    assert "does not build" not in r.output, r.output
    lines = [ln.strip() for ln in r.stdout.splitlines() if ", read as " in ln]
    if not lines:  # a config without the patch's layers (the other module of a shared branch)
        return lines
    if hint:  # the command that works, with the --target the user gave (its flags after it)
        flags = hint.removeprefix("mhsa-patch apply")
        assert f"run 'mhsa-patch apply --target {pkg}{flags}' before building" in r.stdout, r.stdout
    else:
        assert "is not patched" not in r.stdout, r.stdout
    return lines


def status_json(pkg: Path) -> dict:
    r = cli("status", "-t", str(pkg), "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def unmarked(pkg: Path) -> list[dict]:
    st = status_json(pkg)
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


def reverts_to_the_fork(tree, tmp_path: Path) -> None:
    """``revert`` on a copy of the patched tree gives the fork back byte for byte (the shared tree stays patched)."""
    pkg = tree.applied_copy(tmp_path / "revert")
    r = cli("revert", "-t", str(pkg))
    assert r.exit_code == 0, r.output
    assert releases.tree_bytes(pkg) == tree.fork  # the fork as it was, hand-written pieces included


def text(tree_bytes: dict, rel: str) -> str:
    return tree_bytes[rel].decode("utf-8")


@pytest.mark.parametrize("shape", list(PIECES))
def test_force_takes_over_a_fork_and_revert_gives_it_back(fork_trees, shape, tmp_path):
    t = fork_trees[shape]
    pkg, rows = t.pkg, list(t.shape.rows)
    before = t.built("before")

    pieces = check_status_lists_each_piece(pkg, PIECES[shape])
    kept = KEPT.get(shape, {})
    lint_before = [lint_calls(pkg, cfg, "mhsa-patch apply --force") for cfg in t.cfgs]
    assert any(lint_before), lint_before  # every shape has a row of the patch's layers that the lint reads
    r = cli("apply", "-t", str(pkg))
    line = assert_refused(r, "--force")
    assert any(f"{pkg / p['file']}:{p['line']}:" in line for p in pieces), line  # names one of them
    assert releases.tree_bytes(pkg) == t.fork  # neither status, the lint nor the refusal wrote anything

    r = t.applied_by  # apply --force, on a copy of the fork
    assert r.exit_code == 0, r.output
    # a branch that reads the rows otherwise (scaled channels, base_modules without the repeat set) is kept, and said
    assert r.stderr.count("kept the fork's reading") == len(kept), r.stderr
    for layer, reading in kept.items():  # naming the fork's reading and the tool's (BoT3's is not the tutorial's)
        tool = "base_modules+repeat" if layer == "BoT3" else "tutorial"
        assert f"of {layer}'s rows ('{reading}': " in r.stderr and f"instead of the tool's ('{tool}')" in r.stderr

    # the lint reads every row as the target does, before and after apply
    def unlined(calls):  # the branch moves down by the lines apply inserts above it
        return [[re.sub(r"nn/tasks\.py:\d+", "nn/tasks.py:N", c) for c in cs] for cs in calls]

    applied = t.applied_pkg
    assert unlined([lint_calls(applied, cfg, None) for cfg in t.applied_cfgs]) == unlined(lint_before)
    st = status_json(applied)
    assert st["state"] == "applied", st
    for layer, reading in kept.items():
        assert st["readings"][layer]["reading"] == reading, st["readings"]
        kept_pieces = [p for p in st["files"]["nn/tasks.py"]["pieces"] if p["layer"] == layer and p["edit"] == "branch"]
        assert kept_pieces and all(p["state"] == "kept" and p["line"] for p in kept_pieces), kept_pieces
    for layer in set(st["layers"]) - set(kept):
        assert st["readings"][layer]["reading"] == "mhsa-patch", st["readings"]
    plain = cli("status", "-t", str(applied)).stdout
    for layer, reading in kept.items():
        line = next(ln for ln in plain.splitlines() if ln.startswith(f"parse_model reads {layer} rows:"))
        assert f"rows: {reading} (line {st['readings'][layer]['line']})" in line, line
    journal = json.loads((applied / ".mhsa-patch-journal.json").read_text())
    assert journal["readings"] == {layer: kept.get(layer, "mhsa-patch") for layer in st["layers"]}
    changed = {rel for rel in t.fork if t.fork[rel] != t.applied.get(rel)}
    assert changed <= {"nn/modules/conv.py", "nn/modules/__init__.py", "nn/tasks.py"}  # the fork's own files untouched

    after = t.built("after")
    if shape == "bot3-base-modules":
        k = rows.index(BOT3_ROW)
        assert after[-1] == 3
        assert lint_before[k][0].startswith("layer 4: BoT3(c1=64, c2=64, n=1, e=0.5, e2=1, w=20, h=20) ×3 in a row")
        assert "read as 'base_modules' (the fork's branch at nn/tasks.py:" in lint_before[k][0]
    if shape == "scaled-channels":
        assert after[-1] == [[64, False]]
        assert lint_before[0][0].startswith("layer 4: MHSA(n_dims=64, width=14, height=14, heads=4, pos_emb=False)")
    assert len(after) >= len(before) == len(t.cfgs)
    for b, a in zip(before, after):  # the same model: parameter count, state_dict keys and shapes
        assert a["params"] == b["params"]
        assert a["state"] == b["state"]
        assert all(m == ["ultralytics.nn.modules.conv", True] for m in a["mhsa"]), a
    if shape == "pasted-in-conv":
        assert after[-1] == ["ultralytics.nn.modules.conv", True, 64, True]
        assert COMMENTED_COPY.strip() in text(t.applied, "nn/modules/conv.py")  # the commented-out copy stays
    if shape == "star-import":
        assert after[-1] == 64
    built_mhsa = [a for a, row in zip(after, rows) if row == MHSA_ROW]
    assert all(a["mhsa"] for a in built_mhsa), after  # an MHSA row builds the tool's MHSA

    reverts_to_the_fork(t, tmp_path)
    assert releases.tree_bytes(applied) == t.applied  # the shared tree as apply left it


@pytest.mark.parametrize("shape", ["bot3-base-modules"])
def test_force_on_a_forks_bot3_says_what_differs(fork_trees, shape):
    """Issue 22 D.3: the tool's BoT3 keeps fc1 (unused by the forward) as buffers: the fork's YAMLs build the same
    weights with fewer trainable parameters, and the kept-reading line says how many (on a yolov8n: c·c+c for its one
    BottleneckTransformer of 128 channels), as the builds count them."""
    t = fork_trees[shape]
    (line,) = [ln for ln in t.applied_by.stderr.splitlines() if "kept the fork's reading of BoT3's rows" in ln]
    assert "same weights, 16,512 fewer trainable parameters on a yolov8n" in line, line
    assert "because fc1 is unused" in line and "the same models" not in line, line
    before, after = t.built("before"), t.built("after")
    rows = list(t.shape.rows)
    yolo, ours = rows.index(BOT3_YOLOV8N), rows.index(BOT3_ROW)
    for k in (yolo, ours):
        assert after[k]["state"] == before[k]["state"]  # the same weights: the checkpoints load
    assert before[yolo]["trainable"] - after[yolo]["trainable"] == 16_512  # the number the line gives
    assert before[ours]["trainable"] - after[ours]["trainable"] == 3 * (32 * 32 + 32)  # three blocks of 32 channels


@pytest.mark.parametrize("shape", ["field-list"])
def test_a_list_branch_shared_with_17_attentions_reads_as_the_tutorial(fork_trees, shape):
    """Issue 22 D.2 and D.4: ``elif m in [...17 attentions..., MHSA]: c1 = ch[f]; args = [c1, *args[0:]]`` computes
    the tutorial's call: status says so, --force takes MHSA out of the list and the import (nothing else: the
    commented-out branch and import above stay) and inserts its own branch; nothing is kept, nothing promised."""
    t = fork_trees[shape]
    fork = text(t.fork, "nn/tasks.py")
    st = status_json(t.pkg)
    reading = st["readings"]["MHSA"]
    assert reading["reading"] == reading["reads_as"] == "tutorial", reading
    assert fork.splitlines()[reading["line"] - 1] == "        elif m in ["
    assert "kept" not in t.applied_by.stderr and "cannot tell" not in t.applied_by.stderr, t.applied_by.stderr
    applied = text(t.applied, "nn/tasks.py")
    assert COMMENTED_BRANCH + "        elif m in [\n" in applied and COMMENTED_IMPORT + "\n" in applied
    from mhsa_patch.patching.filemodel import TargetFile
    from mhsa_patch.patching.target import find_target

    stripped = TargetFile(find_target(t.applied_site), "nn/tasks.py", t.applied["nn/tasks.py"]).without_pieces(unmarked=False)
    assert stripped == fork.replace("    SGEAttention,\n    MHSA,\n)\n", "    SGEAttention,\n)\n").replace(
        "            SGEAttention, MHSA,\n", "            SGEAttention,\n")


@pytest.mark.parametrize("shape", ["field-crlf"])
def test_a_crlf_fork_with_committed_pycache_loses_nothing(fork_trees, shape):
    """Issue 22 D.2 and D.4 on a Windows checkout: the tuple branch ``args = [c1] + args[0:]`` reads as the tutorial;
    the patched files keep CRLF everywhere and the committed bytecode is left alone (the builds after apply use the
    tool's class all the same); removing the fork's import leaves the blank line above it; the fork's ``__all__``
    line keeps its note, and the tool's marker stays on the tool's lines."""
    t = fork_trees[shape]
    assert status_json(t.pkg)["readings"]["MHSA"]["reads_as"] == "tutorial"
    assert "kept" not in t.applied_by.stderr, t.applied_by.stderr
    for rel in ("nn/tasks.py", "nn/modules/__init__.py", "nn/modules/conv.py"):
        data = t.applied[rel]
        assert data != t.fork[rel] and b"\n" not in data.replace(b"\r\n", b""), rel  # no bare LF was written
    pycache = [rel for rel in t.fork if "__pycache__" in rel]
    assert len(pycache) >= 5 and all(t.applied[rel] == t.fork[rel] for rel in pycache)
    # without the tool's marked pieces, the text is the fork's minus MHSA's own: its import line (the blank line
    # above it stays) and its name in the tuple
    from mhsa_patch.patching.filemodel import TargetFile
    from mhsa_patch.patching.target import find_target

    fork = text(t.fork, "nn/tasks.py")
    stripped = TargetFile(find_target(t.applied_site), "nn/tasks.py", t.applied["nn/tasks.py"]).without_pieces(unmarked=False)
    assert "\r\n\r\nfrom ultralytics.nn.modules.MHSA import MHSA\r\n" in fork
    assert stripped == fork.replace("from ultralytics.nn.modules.MHSA import MHSA\r\n", "").replace(
        "(ShuffleAttention, MHSA)", "(ShuffleAttention,)")
    init = text(t.applied, "nn/modules/__init__.py")
    assert '    "ShuffleAttention", "BiFPN",  # 添加\r\n' in init
    marked_lines_hold_only_the_tools_names(t)


@pytest.mark.parametrize("shape", ["four-value-scales"])
def test_four_value_scale_rows_lint_and_build(fork_trees, shape, tmp_path):
    """Issue 22 D.1: on a fork whose parse_model unpacks ``depth, width, max_channels, threshold = scales[scale]``,
    its four-value models lint and build before and after apply (the main test builds them), gen-yaml's model too; a
    three-value row, which this fork does not build, is the one the lint says does not build, and why."""
    t = fork_trees[shape]
    assert [len(r["state"]) > 0 for r in t.built("before")] == [True] * 4
    # the fork's stale three-value config, built after apply by the fixture's child: the fork does not build it
    assert "not enough values to unpack (expected 4, got 3)" in t.built("after")[-1], t.after[-1]
    three = t.applied_pkg / THREE_YAML
    r = cli("check", str(three), "--lint-only", "-t", str(t.applied_pkg))
    assert r.exit_code == 1, r.output
    (error,) = [ln for ln in r.stderr.splitlines() if ln.startswith("ERROR")]
    assert "the model does not build: " in error and "has 3 values [1.0, 0.25, 1024]" in error, error
    assert "ultralytics 8.0.200's parse_model unpacks 4 (depth, width, max_channels, threshold = scales[scale])" in error
    # gen-yaml's MHSA model from the fork's own four-value yolov8.yaml: the fourth value kept, the lint clean
    dest = tmp_path / "gen"
    dest.mkdir()
    r = cli("gen-yaml", "-s", "n", "--base", "yolov8", "-o", str(dest), "-t", str(t.applied_pkg))
    assert r.exit_code == 0, r.output
    (gen,) = dest.glob("*.yaml")
    assert "n: [0.33, 0.25, 1024, 0.5]" in gen.read_text()
    lint_calls(t.applied_pkg, str(gen), None)
    assert FOUR_YAML in t.shape.rows
    marked_lines_hold_only_the_tools_names(t)


def marked_lines_hold_only_the_tools_names(t) -> None:
    """Issue 22 D.4: after apply, the fork's ``__all__`` lines that end with its note are as they were, every line
    that carries the tool's marker holds the tool's names alone, and status marks only the tool's pieces there."""
    notes = 0
    for rel in ("nn/modules/conv.py", "nn/modules/__init__.py"):
        fork, applied = text(t.fork, rel).splitlines(), text(t.applied, rel).splitlines()
        noted = [ln for ln in fork if ln.rstrip().endswith("# 添加")]

        def names(lines):  # the names and the note (a name that gets one after it gets its comma)
            return [(ln.split("#")[0].rstrip().rstrip(","), ln.split("#", 1)[1]) for ln in lines]

        assert names([ln for ln in applied if ln.rstrip().endswith("# 添加")]) == names(noted), rel
        notes += len(noted)
        for ln in applied:  # __all__'s lines (quoted names) that carry the marker: the tool's names alone
            if ln.rstrip().endswith("# mhsa-patch") and ("'" in ln or '"' in ln) and not ln.lstrip().startswith("#"):
                names = {w.strip(" '\"()") for w in ln.split("#")[0].split(",")} - {""}
                assert names <= {"MHSA", "BoT3"}, (rel, ln)
    assert notes, "a shape with the fork's notes on its __all__ lines"
    st = status_json(t.applied_pkg)
    assert st["state"] == "applied"
    for rel in ("nn/modules/conv.py", "nn/modules/__init__.py"):
        lines = text(t.applied, rel).splitlines()
        for p in st["files"][rel]["pieces"]:
            assert p["state"] == "marked", p
            if p["line"]:
                assert "# mhsa-patch" in lines[p["line"] - 1] and "添加" not in lines[p["line"] - 1], p


@pytest.mark.parametrize("shape", ["shared-branch"])
def test_shared_branch_keeps_the_other_module_byte_identical(fork_trees, shape):
    t = fork_trees[shape]
    fork, new = text(t.fork, "nn/tasks.py"), text(t.applied, "nn/tasks.py")
    assert "from ultralytics.nn.modules.shuffle import ShuffleAttention\n" in new
    assert "        elif m in {ShuffleAttention}:\n            c2 = ch[f]\n            args = [c2, *args]\n" in new
    assert "from ultralytics.nn.modules.MHSA import MHSA\n" not in new
    # without the tool's marked pieces, the text is the fork's minus MHSA's own: the import line, the name in the set
    from mhsa_patch.patching.filemodel import TargetFile
    from mhsa_patch.patching.target import find_target

    stripped = TargetFile(find_target(t.applied_site), "nn/tasks.py", new.encode()).without_pieces(unmarked=False)
    expected = fork.replace("from ultralytics.nn.modules.MHSA import MHSA\n", "").replace(
        "{MHSA, ShuffleAttention}", "{ShuffleAttention}"
    )
    assert stripped == expected


@pytest.mark.parametrize("shape", ["star-import"])
def test_star_import_is_followed_by_the_tools_import(fork_trees, shape):
    t = fork_trees[shape]
    (p,) = [p for p in unmarked(t.pkg) if p["edit"] == "star-import"]
    assert p["origin"].startswith("nn/modules/MHSA.py:")
    assert t.applied_by.exit_code == 0, t.applied_by.output
    assert ("from ultralytics.nn.modules.MHSA import *\nfrom ultralytics.nn.modules.conv import MHSA  # mhsa-patch\n"
            in text(t.applied, "nn/tasks.py"))


@pytest.mark.parametrize("shape", ["foreign"])
def test_foreign_mhsa_is_refused_naming_file_and_line(fork_trees, shape, tmp_path):
    t = fork_trees[shape]
    pkg = t.pkg
    check_status_lists_each_piece(pkg, TASKS_PIECES)
    line = forks.MULTIHEAD_MODULE.splitlines().index("class MHSA(nn.Module):") + 1
    # the lint suggests the apply that works here, and after it warns on a row written for the foreign class
    (cfg,) = forks.write_models(tmp_path / "models", ["1, MHSA, [512, 1024, 4]"], pkg)
    r = cli("check", cfg, "--lint-only", "-t", str(pkg))
    assert r.exit_code == 0 and f"run 'mhsa-patch apply --target {pkg} --replace-foreign' before building" in r.stdout, r.output
    r = cli("apply", "--force", "-t", str(pkg))
    assert_refused(r, f"{pkg / 'nn/modules/attention_fork.py'}:{line}", "not the tutorial's", "--replace-foreign")
    assert releases.tree_bytes(pkg) == t.fork

    r = t.applied_by  # apply --replace-foreign
    assert r.exit_code == 0, r.output
    assert status_json(t.applied_pkg)["state"] == "applied"
    assert text(t.applied, "nn/modules/attention_fork.py") == forks.MULTIHEAD_MODULE
    r = cli("check", cfg, "--lint-only", "-t", str(t.applied_pkg))
    assert r.exit_code == 0 and "width=512 and height=1024 look like channel counts" in r.stderr, r.output
    assert "is not patched" not in r.stdout
    reverts_to_the_fork(t, tmp_path)


def test_foreign_class_pasted_in_conv_is_refused(tmp_path):
    pkg = releases.copy_release("8.4.190", tmp_path / "site")
    conv = pkg / "nn/modules/conv.py"
    src = conv.read_text()
    conv.write_text(src + "\n" + forks.MULTIHEAD_MODULE.split("\n\n\n", 1)[1])
    line = len(src.splitlines()) + 2
    r = cli("apply", "--force", "-t", str(pkg))
    assert_refused(r, f"{conv}:{line}", "class MHSA is not the tutorial's")


# gen-yaml on each recognised reading: (the stock release's shape and the fork's, or the stock one alone), the layer,
# the scale, and the row it writes.
GEN_YAML = {
    "tutorial": (("stock-8.3.135",), "MHSA", "n", "[-1, 1, MHSA, [14, 14, 4]]"),
    "base_modules+repeat": (("stock-8.3.135",), "BoT3", "m", "[-1, 3, BoT3, [1024]]"),
    "scaled-channels": (("stock-8.2.103", "scaled-channels"), "MHSA", "n", "[-1, 1, MHSA, [1024, 14, 14, 4]]"),
    # scale m: depth 0.67 keeps 2 of C2f's 3 repeats, which go inside the one block as the tool's rule builds it
    "base_modules": (("stock-8.3.135", "bot3-base-modules"), "BoT3", "m", "[-1, 1, BoT3, [1024, 2]]"),
}


@pytest.fixture(scope="module")
def gen_yaml_models(fork_trees, tmp_path_factory) -> dict:
    """Per reading of GEN_YAML: gen-yaml's runs on the stock release and on the fork (both patched), and the builds
    of the two YAMLs, all in one child."""
    root = tmp_path_factory.mktemp("gen-yaml")
    runs, jobs = {}, []
    for reading, (shape, layer, scale, _) in GEN_YAML.items():
        stock, tree = fork_trees[shape[0]], fork_trees[shape[-1]]
        made = []
        for side, t in (("stock", stock), ("fork", tree)):
            dest = root / reading / side
            dest.mkdir(parents=True)
            r = cli("gen-yaml", "-s", scale, "--base", "yolov8", "--layer", layer, "-o", str(dest), "-t", str(t.applied_pkg))
            made.append((r, sorted(dest.glob("*.yaml"))))
        runs[reading] = made
        if all(r.exit_code == 0 and len(paths) == 1 for r, paths in made):
            jobs += [{"site": tree.applied_site, "cfgs": made[1][1], "reading": reading},
                     {"site": stock.applied_site, "cfgs": made[0][1], "reading": reading}]
    built = forks.build_sites(jobs, root / "builds") if jobs else []
    return {reading: (runs[reading], [b for j, b in zip(jobs, built) if j["reading"] == reading]) for reading in GEN_YAML}


@pytest.mark.parametrize("reading, shape", [(k, v[0]) for k, v in GEN_YAML.items()], ids=list(GEN_YAML))
def test_gen_yaml_writes_rows_for_the_targets_reading(fork_trees, gen_yaml_models, reading, shape):
    """gen-yaml's YAML builds the tool's intended model under the target's reading, kept by --force on a fork: the
    same model as gen-yaml's YAML on the same release, patched as it ships."""
    _, layer, scale, row = GEN_YAML[reading]
    stock = fork_trees[shape[0]]
    tree = fork_trees[shape[-1]]  # the fork, patched with --force (or the stock release itself)
    ((r_want, wants), (r_got, gots)), builds = gen_yaml_models[reading]
    for r, paths in ((r_want, wants), (r_got, gots)):
        assert r.exit_code == 0 and len(paths) == 1, r.output
    (want,), (got,) = wants, gots
    st = status_json(tree.applied_pkg)
    assert st["readings"][layer]["reads_as"] == reading, st["readings"]
    rows = [ln for ln in got.read_text().splitlines() if f", {layer}, [" in ln]
    assert len(rows) == 1 and row in rows[0], rows
    if tree is not stock:  # a row of its own for the fork's reading
        assert rows != [ln for ln in want.read_text().splitlines() if f", {layer}, [" in ln]
    a, b = builds
    assert isinstance(a, list) and isinstance(b, list) and "error" not in a[0] and "error" not in b[0], (a, b)
    assert a[0]["params"] == b[0]["params"] and a[0]["state"] == b[0]["state"]
    for t in {stock.name: stock, tree.name: tree}.values():  # gen-yaml wrote nothing into the shared trees
        assert releases.tree_bytes(t.applied_pkg) == t.applied


@pytest.mark.parametrize("shape", ["base-modules"])
def test_gen_yaml_refuses_a_reading_that_cannot_give_the_model_naming_the_branch(fork_trees, shape, tmp_path):
    """MHSA in base_modules is called MHSA(c1, c2, ...): c2 lands on width, so no row gives MHSA(c, 14, 14, 4)."""
    t = fork_trees[shape]
    pkg = t.applied_pkg
    line = status_json(pkg)["readings"]["MHSA"]["line"]
    r = cli("gen-yaml", "-s", "n", "--base", "yolov8", "-o", str(tmp_path / "y"), "-t", str(pkg))
    assert_refused(r, f"{pkg / 'nn/tasks.py'}:{line}", "'base_modules'", "no row builds the intended MHSA(")
