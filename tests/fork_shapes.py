"""Every fork shape the suite takes over, by name: how it is built on a real release copy, what apply needs there,
and the models that must keep building (tests/forks.py builds them; no third-party fork code, every line written
for these tests).

One session fixture (``fork_trees`` in conftest.py, :class:`forks.ForkTrees`) builds the shapes that the collected
tests name in their ``shape`` parameter, once: test_forks.py, test_fork_anchors.py and the field's shapes of issue 22
D share them. The shapes:

* issue 8 B (test_forks.py): a branch shared with another module, a star import, the class in its own module
  imported by ``nn/modules/__init__``, a second ``if`` chain, the tutorial pasted in conv.py with BoT3 and a commented-
  out copy, ``args[0:]`` and "scaled channels" branches, MHSA in a set or in ``base_modules``, BoT3 in
  ``base_modules``, a different class named MHSA;
* issue 14 A (test_fork_anchors.py): names registered with comments after the last one, a rewritten fallback
  ``else``, a foreign MHSA whose export lines carry comments, one branch for three modules;
* issue 22 D, the field round 4 (both files): four-value scale rows, a list branch shared with 17 attentions and a
  tuple branch spelled another way, CRLF sources with committed ``__pycache__``, commented-out branches and imports,
  the class in a new folder under ``nn/modules/``, a blank line before the fork's import, ``__all__`` lines that end
  with the fork's comment;
* the stock releases gen-yaml's rows are compared with (patched as they ship).
"""

from __future__ import annotations

import ast
from pathlib import Path

import forks
import releases
from forks import Shape
from reference_layers import REFERENCE_BOT3_SOURCE, TUTORIAL_SOURCE

# Rows (repeats, module, args) of forks.MODEL's custom layer, as each reading builds them on the 64-channel input
# (256 at width 0.25):
MHSA_ROW = "1, MHSA, [14, 14, 4]"  # tutorial: MHSA(64, 14, 14, 4)
SHUFFLE_ROW = "1, ShuffleAttention, [4]"
ECA_ROW = "1, ECA, []"
CONV_ROW = "1, Conv, [256, 1, 1]"
SCALED_ROW = "1, MHSA, [256, 14, 14, 4]"  # scaled-channels: c2 = 64 = c1, MHSA(64, 14, 14, 4)
BASE_ROW = "1, MHSA, [256, 14, 4]"  # base_modules: c2 = 64 = c1, MHSA(64, 64, 14, 4)
BOT3_ROW = "3, BoT3, [256]"  # base_modules (no repeat set): BoT3(64, 64) three times in a row


def module_of(row: str) -> str:
    """``"1, MHSA, [14, 14, 4]"`` -> ``"MHSA"`` (a YAML path: '')."""
    parts = row.split(",")
    return parts[1].strip() if len(parts) > 2 else ""


# -- test_forks.py's shapes (issue 8 B) ---------------------------------------------------------------------------------

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
BOT3_YOLOV8N = "cfg/models/v8/yolov8n-BoT3.yaml"  # the fork's yolov8n with BoT3 in place of the backbone's last C2f


def bot3_base_modules(root: Path) -> Path:  # 8.3.135: BoT3 in base_modules, not in repeat_modules; its yolov8n-BoT3
    site = forks.build_fork(
        "8.3.135", root,
        {"nn/modules/bot3.py": BOT3_MODULE},
        ["from ultralytics.nn.modules.bot3 import BoT3"],
        edits={"nn/tasks.py": [("            A2C2f,\n        }\n    )\n    repeat_modules", "            A2C2f,\n            BoT3,\n        }\n    )\n    repeat_modules")]},
    )
    cfg = site / "ultralytics/cfg/models/v8"
    text = (cfg / "yolov8.yaml").read_text()
    assert text.count("  - [-1, 3, C2f, [1024, True]]\n") == 1
    (cfg / "yolov8n-BoT3.yaml").write_text(text.replace("  - [-1, 3, C2f, [1024, True]]\n", "  - [-1, 3, BoT3, [1024]]\n"))
    return site


FORK_YAML = "cfg/models/v8/fork-MHSA.yaml"  # the scaled-channel fork's own model config, in its package


def scaled_channels(root: Path) -> Path:  # 8.2.103: MHSA in its own file, a scaled-channel branch, the fork's YAML
    site = forks.build_fork(
        "8.2.103", root,
        {"nn/modules/MHSA.py": forks.TUTORIAL_MODULE},
        ["from ultralytics.nn.modules.MHSA import MHSA"],
        {"MHSA": SCALED},
    )
    (site / "ultralytics" / FORK_YAML).write_text(forks.MODEL.replace("LAYER", SCALED_ROW))
    return site


# -- test_fork_anchors.py's shapes (issue 14 A and F) -------------------------------------------------------------------

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


# -- the field, round 4 (issue 22 D) -----------------------------------------------------------------------------------

# Seventeen attention blocks of the kind a fork collects (the names forks give them; each one here is a plain channel
# gate written for the tests), in a file of their own next to MHSA's, in a new folder under nn/modules/.
ATTENTIONS = (
    "SEAttention", "ECAAttention", "GAMAttention", "SimAM", "CoordAtt", "TripletAttention", "SKAttention",
    "ParNetAttention", "S2Attention", "EMAttention", "BiLevelRouting", "LSKBlock", "MLCA", "CPCA", "DAttention",
    "GCTAttention", "SGEAttention",
)  # fmt: skip
GATES_MODULE = "import torch\nimport torch.nn as nn\n" + "".join(
    f'''

class {name}(nn.Module):
    """A channel gate standing in for the fork's {name}."""

    def __init__(self, channel, *args):
        super().__init__()
        self.gate = nn.Conv2d(channel, channel, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.gate(x))
'''
    for name in ATTENTIONS
)
SIMAM_ROW = "1, SimAM, []"
LIST_BRANCH_BODY = "c1 = ch[f]\nargs = [c1, *args[0:]]"  # the field's spelling of the tutorial's call
# A branch and an import the fork commented out when it moved MHSA into its folder: they stay as they are.
COMMENTED_BRANCH = "        # elif m is MHSA:\n        #     args = [ch[f], *args]\n"
COMMENTED_IMPORT = "# from ultralytics.nn.modules.MHSA import MHSA"


def _list_test(names) -> str:
    """``m in [\\n A, B, C, D,\\n ...]`` four names a line, as forks wrap a long list."""
    lines = [", ".join(names[k : k + 4]) + "," for k in range(0, len(names), 4)]
    return "m in [\n" + "".join(f"            {ln}\n" for ln in lines) + "        ]"


def field_list(root: Path) -> Path:
    """8.2.103: MHSA in ``nn/modules/attention/mhsa.py`` beside 17 attentions, imported with them in one statement,
    read by a branch whose list holds all 18, under a commented-out branch of an earlier MHSA."""
    names = [*ATTENTIONS, "MHSA"]
    site = forks.build_fork(
        "8.2.103", root,
        {"nn/modules/attention/__init__.py": "from .gates import *\nfrom .mhsa import MHSA\n",
         "nn/modules/attention/gates.py": GATES_MODULE,
         "nn/modules/attention/mhsa.py": forks.TUTORIAL_MODULE},
        [COMMENTED_IMPORT, "from ultralytics.nn.modules.attention import (",
         *(f"    {n}," for n in names), ")"],
        {_list_test(names): LIST_BRANCH_BODY},
    )
    tasks = site / "ultralytics/nn/tasks.py"
    text = tasks.read_text()
    assert text.count("        elif m in [\n") == 1
    tasks.write_text(text.replace("        elif m in [\n", COMMENTED_BRANCH + "        elif m in [\n"))
    return site


TUPLE_BRANCH_BODY = "c1 = ch[f]\nargs = [c1] + args[0:]"


def field_crlf(root: Path) -> Path:
    """8.1.47 checked out on Windows: every source with CRLF line endings and the fork's ``__pycache__`` committed
    (valid bytecode of the sources as they are); the fork's import after a blank line of its own; MHSA in a tuple
    branch with ShuffleAttention, spelled ``args = [c1] + args[0:]``; the fork's names on one ``__all__`` line with
    a note."""
    site = forks.build_fork(
        "8.1.47", root,
        {"nn/modules/MHSA.py": forks.TUTORIAL_MODULE, "nn/modules/shuffle.py": forks.SHUFFLE_ATTENTION_MODULE,
         "nn/modules/bifpn.py": forks.BIFPN_MODULE},
        ["", "from ultralytics.nn.modules.MHSA import MHSA",
         "from ultralytics.nn.modules.shuffle import ShuffleAttention"],
        {"m in (ShuffleAttention, MHSA)": TUPLE_BRANCH_BODY},
        edits={"nn/modules/__init__.py": [
            ("\n__all__ = (\n", "from .bifpn import BiFPN\nfrom .shuffle import ShuffleAttention\n\n__all__ = (\n"),
            ('    "Silence",\n)\n', '    "Silence",\n    "ShuffleAttention", "BiFPN",  # 添加\n)\n'),
        ]},
    )
    pkg = site / "ultralytics"
    forks.to_crlf(pkg)
    forks.commit_pycache(pkg, ["nn/tasks.py", "nn/modules/__init__.py", "nn/modules/conv.py", "nn/modules/MHSA.py",
                               "nn/modules/shuffle.py"])
    return site


# forks.MODEL with a fourth value in its scale row, for a parse_model that unpacks four.
MODEL4 = forks.MODEL.replace("  n: [1.0, 0.25, 1024]\n", "  n: [1.0, 0.25, 1024, 0.5]\n")
FOUR_YAML = "cfg/models/v8/fork4-MHSA.yaml"  # the four-value fork's own MHSA model, in its package
THREE_YAML = "cfg/models/v8/fork3-MHSA.yaml"  # ... and a stale one, with the stock three values, that it cannot build
# Built by the after-child (see forks.BUILD_SITES): the error the fork's parse_model gives on THREE_YAML.
BUILD_THREE = (
    "import pathlib, ultralytics\n"
    f"cfg = pathlib.Path(ultralytics.__file__).parent / {THREE_YAML!r}\n"
    "try:\n    DetectionModel(str(cfg), nc=3, verbose=False)\n    out.append('built')\n"
    "except ValueError as e:\n    out.append(str(e))"
)
ECA_PASTED = ECA_MODULE.split("\n\n\n", 1)[1]


def four_value_scales(root: Path) -> Path:
    """8.0.200: ``depth, width, max_channels, threshold = scales[scale]``, every scale row of its yolov8.yaml with a
    fourth value, its own MHSA model; ShuffleAttention and ECA pasted in conv.py and registered on ``__all__`` lines
    of their own that end with the fork's note (conv.py: trailing comma, bracket below; ``__init__``: no comma)."""
    conv = pristine("8.0.200", "nn/modules/conv.py") + "\n\n" + SHUFFLE_CLASS + "\n\n" + ECA_PASTED
    site = forks.build_fork(
        "8.0.200", root,
        {"nn/modules/MHSA.py": forks.TUTORIAL_MODULE, "nn/modules/conv.py": conv},
        ["from ultralytics.nn.modules.MHSA import MHSA"],
        {"MHSA": "args = [ch[f], *args]"},
        edits={
            "nn/tasks.py": [("        depth, width, max_channels = scales[scale]\n",
                             "        depth, width, max_channels, threshold = scales[scale]\n")],
            "nn/modules/conv.py": [("'Concat', 'RepConv')",
                                    "'Concat', 'RepConv',\n           'ShuffleAttention', 'ECA',  # 添加\n           )")],
            "nn/modules/__init__.py": [
                ("                   GhostConv, LightConv, RepConv, SpatialAttention)",
                 "                   GhostConv, LightConv, RepConv, SpatialAttention, ShuffleAttention, ECA)"),
                ("'MSDeformAttn', 'MLP')", "'MSDeformAttn', 'MLP',\n           'ShuffleAttention', 'ECA'  # 添加\n)"),
            ],
        },
    )
    cfg = site / "ultralytics/cfg/models/v8"
    text = (cfg / "yolov8.yaml").read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith(("  n: [", "  s: [", "  m: [", "  l: [", "  x: ["))]
    assert len(rows) == 5, rows
    for ln in rows:
        text = text.replace(ln, ln.replace("]", ", 0.5]", 1))
    (cfg / "yolov8.yaml").write_text(text)
    (site / "ultralytics" / FOUR_YAML).write_text(MODEL4.replace("LAYER", MHSA_ROW))
    (site / "ultralytics" / THREE_YAML).write_text(forks.MODEL.replace("LAYER", MHSA_ROW))
    return site


def stock(version: str):
    def build(root: Path) -> Path:
        return releases.copy_release(version, Path(root) / "site").parent

    return build


# -- the registry -------------------------------------------------------------------------------------------------------

PASTED_IN_CONV_EXTRA = (  # fork classes in conv.py that use MHSA now get the tool's, BoT3 is the tool's
    "from ultralytics.nn.modules.conv import MHSABlock, BoT3\n"
    "b = MHSABlock(64); t = BoT3(64, 64)\n"
    "out.append([type(b.attn).__module__, hasattr(b.attn, '_attend_fused'), b(torch.rand(1, 64, 8, 8)).shape[1],"
    " any(hasattr(m, '_attend_fused') for m in t.modules())])"
)

SHAPES: dict[str, Shape] = {
    # issue 8 B
    "shared-branch": Shape(shared_branch, rows=(MHSA_ROW, SHUFFLE_ROW)),
    "star-import": Shape(star_import, rows=(MHSA_ROW,), extra=(  # the fork's own class in its own file keeps working
        "from ultralytics.nn.modules.MHSA import MHSABlock\nout.append(MHSABlock(64)(torch.rand(1, 64, 8, 8)).shape[1])")),
    "init-module-second-chain": Shape(init_module_second_chain, rows=(MHSA_ROW,)),
    "pasted-in-conv": Shape(pasted_in_conv, rows=(SCALED_ROW,), extra=PASTED_IN_CONV_EXTRA),
    "extra-modules-in-set": Shape(extra_modules_in_set, rows=(BASE_ROW,)),
    "base-modules": Shape(base_modules, rows=(BASE_ROW,)),
    # the fork's reading: three BoT3 blocks in a row (ours would build one, n=3), from the last model built
    "bot3-base-modules": Shape(bot3_base_modules, rows=(BOT3_YOLOV8N, BOT3_ROW),
                               extra="out.append(sum(type(m).__name__ == 'BoT3' for m in model.modules()))"),
    # MHSA(64, 14, 14, 4), no positional tables (ours: MHSA(64, 256, 14, 14, 4))
    "scaled-channels": Shape(scaled_channels, rows=(FORK_YAML,),
                             extra="out.append([(m.query.in_channels, m.pos) for m in mhsa])"),
    "foreign": Shape(foreign, flags=("--replace-foreign",)),
    # issue 14 A and F
    "commented-last-names": Shape(commented_last_names, flags=(), rows=(SHUFFLE_ROW,), new_rows=(MHSA_ROW,)),
    "changed-else": Shape(changed_else, rows=(MHSA_ROW,)),
    "foreign-commented-export": Shape(foreign_commented_export, flags=("--replace-foreign",), rows=(CONV_ROW,),
                                      new_rows=(MHSA_ROW,)),
    "shared-branch-three": Shape(shared_branch_three, rows=(MHSA_ROW, SHUFFLE_ROW, ECA_ROW)),
    # issue 22 D
    "field-list": Shape(field_list, rows=(MHSA_ROW, SIMAM_ROW)),
    "field-crlf": Shape(field_crlf, rows=(MHSA_ROW, SHUFFLE_ROW)),
    "four-value-scales": Shape(four_value_scales, rows=(MHSA_ROW, CONV_ROW, "cfg/models/v8/yolov8.yaml", FOUR_YAML),
                               model=MODEL4, extra=BUILD_THREE),
    # the stock releases, patched as they ship (gen-yaml's reference rows)
    "stock-8.3.135": Shape(stock("8.3.135"), flags=()),
    "stock-8.2.103": Shape(stock("8.2.103"), flags=()),
}


def session_trees(root: Path) -> forks.ForkTrees:
    """The session's trees of these shapes, none built yet: ``fork_trees`` in conftest.py builds those a module's
    tests ask for."""
    return forks.ForkTrees(root, SHAPES)

