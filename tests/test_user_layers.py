"""Issue 21 (your own layer), fast part: ``apply --layer`` on a copy of the latest release, nothing built.

What a user's file becomes (the class, its helpers and imports, nothing run), how ``parse_model`` reads it (inferred
from ``__init__``, or ``--reads``), every refusal in one line with ``FILE:LINE`` and the tree left byte-identical,
edits (status says changed, apply again replaces, ``revert --layer``), ultralytics' own class registered, the
journal's new records validated as strictly as the rest, gen-yaml, the lint and ablate's variant names. Real
libcst, real release files, the gallery of ``examples/layers/``. The builds, trainings, checkpoints, forks and the
older releases are in ``test_user_layers_e2e.py``.
"""

from __future__ import annotations

import json
import re
import shutil
import textwrap
from pathlib import Path

import libcst as cst
import pytest

import releases
from helpers import assert_refused, cli
from mhsa_patch.patching.signature import Ambiguous, infer
from mhsa_patch.patching.usersource import UserFile

ROOT = Path(__file__).resolve().parent.parent
GALLERY = ROOT / "examples" / "layers"
JOURNAL = ".mhsa-patch-journal.json"


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def sig(tmp_path: Path, params: str):
    """The signature of ``class L(nn.Module): def __init__(self, <params>)``, read by the tool."""
    f = write(tmp_path / "l.py", f"from torch import nn\nclass L(nn.Module):\n    def __init__(self{params}):\n        pass\n")
    return UserFile(f).signature("L")


# -- the reading, from __init__'s signature --------------------------------------------------------------------------

@pytest.mark.parametrize(
    "params, reads",
    [
        (", c1, c2, k=3", "scaled"),
        (", inp, oup, reduction=32", "scaled"),
        (", in_channels, out_channels", "scaled"),
        (", c1, c2, n=1, shortcut=True, e=0.5", "csp"),
        (", channel, k_size=3", "input"),
        (", channels, reduction=16", "input"),
        (", c1", "input"),
        (", in_channels", "input"),
        (", inp, ratio=0.25", "input"),
        (", dim, num_heads=8", "input"),
        (", channel=512, reduction=16", "input"),  # the External-Attention style: a default changes nothing
        (", e_lambda=1e-4", "none"),  # SimAM
        ("", "none"),
    ],
)
def test_the_reading_follows_the_names_tutorials_use(tmp_path, params, reads):
    assert infer(sig(tmp_path, params)) == reads


@pytest.mark.parametrize(
    "params, choices",
    [
        (", c1, c2=None", ("input", "scaled")),  # an output that may be left to default
        (", c1, c2, shortcut=True, n=1", ("scaled", "csp")),  # the repeats elsewhere than third
        (", k_size=3, channel=64", ("none", "input")),  # channels not first
        (", *args, **kwargs", ("input", "scaled", "none", "csp")),
        (", c2, c1", ("input", "scaled", "none", "csp")),  # output channels first
    ],
)
def test_an_ambiguous_signature_names_the_choices(tmp_path, params, choices):
    with pytest.raises(Ambiguous) as e:
        infer(sig(tmp_path, params))
    assert e.value.choices == choices


# -- what the file becomes -----------------------------------------------------------------------------------------

def test_the_installed_text_is_the_class_with_the_helpers_and_imports_it_uses_and_nothing_runs(tmp_path):
    f = write(tmp_path / "gate.py", '''
        """A module docstring that does not go along."""
        import math
        import os  # unused by the class: stays behind
        import torch
        from torch import nn

        SCALE = math.sqrt(2.0)
        print("top-level code: never run, never copied")


        def helper(x):
            return x * SCALE


        class Inner(nn.Module):
            def forward(self, x):
                return helper(x)


        class Gate(nn.Module):
            def __init__(self, c1):
                super(Gate, self).__init__()
                self.inner = Inner()
                self.w = nn.Parameter(torch.ones(1, c1, 1, 1))

            def forward(self, x):
                return self.inner(x) * self.w


        if __name__ == "__main__":
            helper = print  # a test's stub of a helper the class uses: it still stays behind
            Gate(8)(torch.zeros(1, 8, 4, 4))
        ''')
    user = UserFile(f)
    assert user.select(None) == ["Gate"]  # Inner is used by Gate: a helper, not a layer
    got = user.extract("Gate", "MyGate")
    assert got.text.startswith("import math\n")
    for kept in ("SCALE = math.sqrt(2.0)", "def helper(x):", "class Inner(nn.Module):", "class MyGate(nn.Module):",
                 "super(MyGate, self).__init__()", "import torch", "from torch import nn"):
        assert kept in got.text, kept
    for gone in ("import os", "print(", "__main__", "docstring", "class Gate("):
        assert gone not in got.text, gone
    assert [i.module for i in got.imports] == ["math", "torch", "torch"]
    assert got.signature.shown("MyGate") == "MyGate(c1)"
    compile(got.text, "gate", "exec")


def test_the_file_is_never_run(latest_pkg, tmp_path):
    """A file whose top level would write a file and exit: apply reads it, registers its class, and neither happens."""
    marker = tmp_path / "ran"
    f = write(tmp_path / "noisy.py", f'''
        import torch
        from torch import nn

        open({str(marker)!r}, "w").write("ran")
        raise SystemExit("run")


        class Noisy(nn.Module):
            def forward(self, x):
                return x
        ''')
    r = cli("apply", "-t", str(latest_pkg), "--layer", str(f))
    assert r.exit_code == 0, r.output
    assert "Noisy(): takes no channel count" in r.stdout
    assert not marker.exists()
    text = (latest_pkg / "nn/modules/user_Noisy.py").read_text()
    assert "SystemExit" not in text and "open(" not in text


# -- refusals: one line, FILE:LINE, nothing written ---------------------------------------------------------------

def _cbam_line(pkg: Path) -> int:
    return next(k for k, ln in enumerate((pkg / "nn/modules/conv.py").read_text().splitlines(), 1)
                if ln.startswith("class CBAM("))


REFUSALS = {
    # case: (file text or None for a gallery file, extra args, needles (with {f}, {conv}, {cbam}), exit code)
    "syntax error": ("import torch\nclass Bad(torch.nn.Module):\n    def __init__(self, c1)\n        pass\n", [],
                     ["{f}:3:", "does not parse"], 1),
    "unresolved import": ("import torch\nfrom einops import rearrange\n\nclass Mix(torch.nn.Module):\n"
                          "    def __init__(self, c1):\n        super().__init__()\n\n"
                          "    def forward(self, x):\n        return rearrange(x, 'b c h w -> b c h w')\n", [],
                          ["{f}:2:", "module 'einops' cannot be imported", "install it"], 1),
    "relative import": ("from torch import nn\nfrom .common import Conv\n\nclass Rel(nn.Module):\n"
                        "    def __init__(self, c1):\n        super().__init__()\n        self.cv = Conv(c1, c1)\n", [],
                        ["{f}:2:", "relative to your file's package"], 1),
    "ultralytics' own CBAM": (None, [], ["{conv}:{cbam}:", "has its own class CBAM", "--as NAME",
                                         "apply --layer CBAM"], 1),
    "mhsa-patch's own name": ("from torch import nn\nclass MHSA(nn.Module):\n    def __init__(self, c1):\n"
                              "        super().__init__()\n", [], ["MHSA is mhsa-patch's own layer", "--as NAME"], 1),
    "a module's name": ("from torch import nn\nclass conv(nn.Module):\n    def __init__(self, c1):\n"
                        "        super().__init__()\n", [], ["conv is the module ultralytics.nn.modules.conv"], 1),
    "ambiguous signature": ("from torch import nn\nclass Amb(nn.Module):\n    def __init__(self, c1, c2=None):\n"
                            "        super().__init__()\n", [],
                            ["{f}:2:", "Amb(c1, c2=None)", "--reads input or --reads scaled"], 1),
    "no module class": ("def f():\n    return 1\n", [], ["{f}: defines no nn.Module class"], 1),
    "unknown class": ("from torch import nn\nclass A(nn.Module):\n    pass\n", [":B"], ["no top-level class B",
                                                                                    "nn.Module classes: A"], 2),
    "--as with two classes": ("from torch import nn\nclass A(nn.Module):\n    pass\nclass B(nn.Module):\n    pass\n",
                              ["--as", "C"], ["--as C", "registers 2 classes"], 2),
    "a builtin name": ("from torch import nn\nclass A(nn.Module):\n    pass\n", ["--as", "print"],
                       ["print is a Python builtin name"], 1),
    "missing file": (False, [], ["{f}: no such file"], 1),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_each_refusal_is_one_line_naming_file_and_line_and_leaves_the_tree_byte_identical(latest_pkg, tmp_path, case):
    text, extra, needles, code = REFUSALS[case]
    if text is None:
        f = GALLERY / "cbam.py"
    else:
        f = tmp_path / "layer.py"
        if text is not False:
            f.write_text(text)
    spec = str(f) + (extra[0] if extra and extra[0].startswith(":") else "")
    args = [a for a in extra if not a.startswith(":")]
    before = releases.tree_state(latest_pkg)
    r = cli("apply", "-t", str(latest_pkg), "--layer", spec, *args)
    fill = {"f": str(f), "conv": str(latest_pkg / "nn/modules/conv.py"), "cbam": _cbam_line(latest_pkg)}
    line = assert_refused(r, *(n.format(**fill) for n in needles), code=code)
    if code == 1:
        assert "nothing was changed" in line
    assert releases.tree_state(latest_pkg) == before


def test_all_problems_of_several_layers_at_once(latest_pkg, tmp_path):
    bad1 = tmp_path / "a.py"
    bad1.write_text("import torch\nimport einops\nclass A(torch.nn.Module):\n    def __init__(self, c1):\n"
                    "        einops.rearrange\n")
    bad2 = tmp_path / "b.py"
    bad2.write_text("from torch import nn\nclass B(nn.Module):\n    def __init__(self, c1, c2=None):\n        pass\n")
    before = releases.tree_state(latest_pkg)
    line = assert_refused(cli("apply", "-t", str(latest_pkg), "--layer", str(bad1), "--layer", str(bad2)),
                          "2 problems", f"{bad1}:2:", f"{bad2}:2:")
    assert "einops" in line
    assert releases.tree_state(latest_pkg) == before


# -- applied, edited, replaced, reverted ---------------------------------------------------------------------------

def _status(pkg: Path) -> dict:
    r = cli("status", "-t", str(pkg), "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_edit_status_apply_again_replaces_one_entry_and_revert_is_exact(latest_pkg, tmp_path):
    eca = tmp_path / "eca.py"
    shutil.copy(GALLERY / "eca.py", eca)
    r = cli("apply", "-t", str(latest_pkg), "--layer", str(eca))
    assert r.exit_code == 0, r.output
    assert "ECA(channel, gamma=2, b=1): keeps its input's channels (reads input)" in r.stdout
    assert "nn/modules/user_ECA.py (new)" in r.stdout
    st = _status(latest_pkg)
    (user,) = st["user_layers"]
    assert user["source"] == str(eca.resolve()) and user["source_state"] == "unchanged"
    assert user["sha256"] == __import__("hashlib").sha256(eca.read_bytes()).hexdigest()
    assert user["module"] == "nn/modules/user_ECA.py" and user["class_path"] == "ultralytics.nn.modules.user_ECA.ECA"
    assert st["state"] == "applied" and "ECA" in st["layers"]
    assert st["readings"]["ECA"] == {"reading": "mhsa-patch", "line": st["readings"]["ECA"]["line"], "reads_as": "tutorial"}

    eca.write_text(eca.read_text().replace("gamma=2, b=1", "gamma=3, b=1"))  # the user edits the file
    st = _status(latest_pkg)
    assert st["user_layers"][0]["source_state"] == "changed"
    assert any("ECA:" in n and "changed since it was applied" in n for n in st["notes"])
    plain = cli("status", "-t", str(latest_pkg))
    assert re.search(r"user layer ECA: nn/modules/user_ECA.py from .*eca.py \(sha256 [0-9a-f]{12}, changed\)", plain.stdout)

    assert cli("apply", "-t", str(latest_pkg), "--layer", str(eca)).exit_code == 0  # replaces it
    journal = json.loads((latest_pkg / JOURNAL).read_text())
    assert [u["name"] for u in journal["user_layers"]] == ["ECA"]
    assert "gamma=3" in (latest_pkg / "nn/modules/user_ECA.py").read_text()
    assert _status(latest_pkg)["user_layers"][0]["source_state"] == "unchanged"
    assert cli("revert", "-t", str(latest_pkg)).exit_code == 0
    assert releases.tree_bytes(latest_pkg) == releases.tree_bytes(releases.pristine(releases.LATEST))


def test_revert_layer_removes_one_and_leaves_the_others(latest_pkg):
    r = cli("apply", "-t", str(latest_pkg), "--layer", str(GALLERY / "se.py"), "--layer", str(GALLERY / "simam.py"))
    assert r.exit_code == 0, r.output
    applied = releases.tree_bytes(latest_pkg)
    assert cli("apply", "-t", str(latest_pkg), "--layer", str(GALLERY / "eca.py")).exit_code == 0
    r = cli("revert", "-t", str(latest_pkg), "--layer", "ECA")
    assert r.exit_code == 0, r.output
    assert "nn/modules/user_ECA.py (removed)" in r.stdout
    # exactly the bytes before ECA came (the journal's record aside: it no longer names ECA)
    now = releases.tree_bytes(latest_pkg)
    assert {k: v for k, v in now.items() if k != JOURNAL} == {k: v for k, v in applied.items() if k != JOURNAL}
    assert [u["name"] for u in _status(latest_pkg)["user_layers"]] == ["SE", "SimAM"]
    assert_refused(cli("revert", "-t", str(latest_pkg), "--layer", "ECA"), "no user layer ECA", "SE, SimAM")
    assert_refused(cli("revert", "-t", str(latest_pkg), "--layer", "MHSA"), "mhsa-patch's own layer", code=2)
    assert cli("revert", "-t", str(latest_pkg)).exit_code == 0
    assert releases.tree_bytes(latest_pkg) == releases.tree_bytes(releases.pristine(releases.LATEST))


def test_ultralytics_own_class_is_registered_without_a_file(latest_pkg):
    r = cli("apply", "-t", str(latest_pkg), "--layer", "CBAM")
    assert r.exit_code == 0, r.output
    assert "CBAM(c1, kernel_size=7): keeps its input's channels (reads input)" in r.stdout
    assert not list((latest_pkg / "nn/modules").glob("user_*.py"))
    tasks = (latest_pkg / "nn/tasks.py").read_text()
    assert "    CBAM,  # mhsa-patch\n" in tasks and "elif m is CBAM:  # mhsa-patch" in tasks
    (user,) = _status(latest_pkg)["user_layers"]
    assert user["kind"] == "stock" and user["class_path"] == "ultralytics.nn.modules.conv.CBAM"
    assert_refused(cli("apply", "-t", str(latest_pkg), "--layer", "C2f"), "already imports C2f",
                   "parse_model reads its rows")
    assert_refused(cli("apply", "-t", str(latest_pkg), "--layer", "NoSuchBlock"), "no class NoSuchBlock", code=2)
    assert cli("revert", "-t", str(latest_pkg)).exit_code == 0
    assert releases.tree_bytes(latest_pkg) == releases.tree_bytes(releases.pristine(releases.LATEST))


@pytest.fixture(scope="module")
def se_applied(tmp_path_factory) -> Path:
    """A copy of the latest release with the gallery's SE applied (copied again by each test that changes it)."""
    pkg = releases.copy_release(releases.LATEST, tmp_path_factory.mktemp("se") / "site")
    assert cli("apply", "-t", str(pkg), "--layer", str(GALLERY / "se.py")).exit_code == 0
    return pkg


def test_a_module_file_edited_since_apply_is_moved_aside_never_deleted(se_applied, tmp_path):
    latest_pkg = Path(shutil.copytree(se_applied, tmp_path / "ultralytics"))
    module = latest_pkg / "nn/modules/user_SE.py"
    module.write_text(module.read_text() + "# my note\n")
    r = cli("revert", "-t", str(latest_pkg))
    assert r.exit_code == 0, r.output
    aside = latest_pkg / "nn/modules/user_SE.py.edited"
    assert aside.read_text().endswith("# my note\n") and not module.exists()
    assert f"moved aside to {aside}" in r.stderr


# -- the journal's user layers are untrusted input -----------------------------------------------------------------

def _planted(pkg: Path, mutate) -> None:
    data = json.loads((pkg / JOURNAL).read_text())
    mutate(data["user_layers"][0], data)
    (pkg / JOURNAL).write_text(json.dumps(data))


@pytest.mark.parametrize(
    "case, mutate, needle",
    [
        ("a name that is a path", lambda u, d: u.update(name="../../x"), "is not a Python identifier"),
        ("a text that is not its header's", lambda u, d: u.update(text=u["text"] + "import os\n"),
         "does not match its own header"),
        ("a header of another name", lambda u, d: u.update(name="SEX") or d["layers"].append("SEX"),
         "does not match its own header"),
        ("an unknown key", lambda u, d: u.update(path="/etc/passwd"), "unknown key 'path'"),
        ("an unknown reading", lambda u, d: u.update(reads="eval"), "reads 'eval'"),
        ("a stock layer with a path", lambda u, d: u.update(kind="stock", text="", source="", source_sha256="",
                                                            defined_in="../../../etc/x.py"),
         "is not nn/modules/NAME.py"),
        ("twice the same name", lambda u, d: d["user_layers"].append(dict(u)), "names SE twice"),
        ("the tool's own name", lambda u, d: u.update(name="MHSA"), "does not match its own header"),
        ("a layer the record does not list", lambda u, d: d["layers"].remove("SE"), "not one of the journal's layers"),
    ],
)
def test_a_planted_journal_entry_for_a_user_layer_is_refused_and_nothing_written(se_applied, tmp_path, case, mutate,
                                                                                  needle):
    pkg = Path(shutil.copytree(se_applied, tmp_path / "ultralytics"))
    _planted(pkg, mutate)
    before = releases.tree_state(pkg)
    for command in ("apply", "revert", "status"):
        assert_refused(cli(command, "-t", str(pkg)), "not a valid mhsa-patch journal", needle)
    assert releases.tree_state(pkg) == before


# -- gen-yaml, the lint, ablate ------------------------------------------------------------------------------------

def test_gen_yaml_lint_and_ablate_read_a_user_layer_under_its_reading(latest_pkg, workdir):
    from mhsa_patch.ablate.variants import build_variant
    from mhsa_patch.patching.target import find_target

    r = cli("apply", "-t", str(latest_pkg), *(f"--layer={GALLERY / f}" for f in ("eca.py", "coordatt.py", "c3se.py")))
    assert r.exit_code == 0, r.output
    for name, row in (("ECA", "- [-1, 1, ECA, []] # 10 (P5/32: 256 channels)"),
                      ("CoordAtt", "- [-1, 1, CoordAtt, [1024]] # 10 (P5/32: 256 channels)"),
                      ("C3SE", "- [-1, 3, C3SE, [1024]] # 8 (P5/32: 256 channels, in place of C2f [1024, True])")):
        r = cli("gen-yaml", "-t", str(latest_pkg), "--scale", "n", "--layer", name)
        assert r.exit_code == 0, r.output
        text = (workdir / f"yolov8n-{name}.yaml").read_text()
        assert row in text, text
    lint = cli("check", "-t", str(latest_pkg), "yolov8n-CoordAtt.yaml", "--lint-only")
    assert lint.exit_code == 0, lint.output
    assert ("layer 10: CoordAtt(inp=256, oup=256, reduction=32) on 20×20 (P5/32), 256 → 256 channels, read as "
            "--reads scaled ('base_modules', mhsa-patch's rule)") in lint.stdout
    lint = cli("check", "-t", str(latest_pkg), "yolov8n-C3SE.yaml", "--lint-only")
    assert "C3SE(c1=256, c2=256, n=1, shortcut=True, e=0.5)" in lint.stdout
    # the published mistake: the row pasted in after SPPF, nothing renumbered
    stock = (latest_pkg / "cfg/models/v8/yolov8.yaml").read_text()
    (workdir / "yolov8n-ECA-pasted.yaml").write_text(
        stock.replace("  - [-1, 1, SPPF, [1024, 5]] # 9\n", "  - [-1, 1, SPPF, [1024, 5]] # 9\n  - [-1, 1, ECA, []]\n"))
    lint = cli("check", "-t", str(latest_pkg), "yolov8n-ECA-pasted.yaml", "--lint-only", "--strict")
    assert lint.exit_code == 1
    assert "layer 23 Detect [15, 18, 21] reads layers that are not the last of their stage" in lint.stderr
    assert "fix: - [[16, 19, 22], 1, Detect, [nc]]" in lint.stderr
    # ablate: NAME, NAME@P4, NAME@P3+P4+P5 for any applied layer
    target = find_target(latest_pkg)
    for name, rows in (("ECA", 1), ("ECA@P4", 1), ("ECA@P3+P4+P5", 3), ("C3SE", 1)):
        v = build_variant(target, name, scale="n", base=None, task=None, imgsz=640)
        assert v.text.count(", ECA, " if "ECA" in name else ", C3SE, ") == rows, name
    assert_refused(cli("gen-yaml", "-t", str(latest_pkg), "--scale", "n", "--layer", "SE"),
                   "unknown layer 'SE'", "ECA, CoordAtt, C3SE", code=2)


# -- the class path --------------------------------------------------------------------------------------------------

def test_the_installed_module_depends_on_the_class_alone(tmp_path):
    """Two copies, the same layer file at two paths, applied in different orders with other layers: the module
    file (so the class and its pickled path, ``ultralytics.nn.modules.user_ECA.ECA``) is the same bytes."""
    a = releases.copy_release(releases.LATEST, tmp_path / "a")
    b = releases.copy_release(releases.LATEST, tmp_path / "b")
    other = tmp_path / "elsewhere" / "my_eca_copy.py"
    other.parent.mkdir()
    shutil.copy(GALLERY / "eca.py", other)
    assert cli("apply", "-t", str(a), "--layer", str(GALLERY / "eca.py")).exit_code == 0
    assert cli("apply", "-t", str(b), "--layer", str(GALLERY / "simam.py"), "--layer", str(other)).exit_code == 0
    assert (a / "nn/modules/user_ECA.py").read_bytes() == (b / "nn/modules/user_ECA.py").read_bytes()
    assert str(tmp_path) not in (b / "nn/modules/user_ECA.py").read_text()
    assert "from .user_ECA import ECA  # mhsa-patch" in (b / "nn/modules/__init__.py").read_text()


# -- the user import edit: its own exact inverse -------------------------------------------------------------------

def test_user_imports_come_and_go_in_any_order_and_leave_the_file_as_it_was():
    from mhsa_patch.patching.edits import EDITS, UserImport
    from mhsa_patch.patching.userlayers import UserLayer, file_text

    edit = next(e for e in EDITS["nn/modules/__init__.py"] if isinstance(e, UserImport))
    layers = [UserLayer(n, "file", "input", text=file_text(n, "x = 1\n")).layer() for n in ("ECA", "SE", "CoordAtt")]
    src = 'from .conv import Conv\n\n# the public names\n__all__ = ("Conv",)\n'
    module = cst.parse_module(src)
    for layer in layers:
        module = edit.add(module, layer)
    assert module.code == ('from .conv import Conv\n\n# the public names\nfrom .user_ECA import ECA  # mhsa-patch\n'
                           'from .user_SE import SE  # mhsa-patch\nfrom .user_CoordAtt import CoordAtt  # mhsa-patch\n'
                           '__all__ = ("Conv",)\n')
    for layer in (layers[1], layers[0], layers[2]):
        (found,) = edit.find(module, layer)
        assert found.marked and found.current
        module = edit.remove(module, layer, found)
    assert module.code == src
